"""Export a trained model to TorchScript and ONNX, and check the exports against PyTorch.

The exported graph maps ``points`` (B, N, C) float32 (and ``category`` (B,) int64 for part
segmentation) to raw ``logits`` ((B, K), or (B, N, P)). The batch axis is dynamic; the point
count N is the one the model was exported with (the checkpoint's by default), because farthest
point sampling and external attention's softmax over the points are traced for that N.
A ``<name>.json`` file beside the exports records the inputs, outputs and class names.

TorchScript needs only torch; ONNX needs the ``export`` extra (``pip install "pointea[export]"``:
``onnx`` to export, ``onnxruntime`` to check).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from pointea.atomic import WriteError, atomic_path, atomic_write_text
from pointea.engine.tasks import task_for

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

FORMATS = ("torchscript", "onnx")
ONNX_PACKAGES = ("onnx", "onnxruntime")  # the ``export`` extra: the exporter's output, and the check
SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
TOLERANCE = 1e-4  # largest accepted |export - PyTorch| on the check input
ONNX_OPSET = 17
EXPORT_BATCH = 2  # batch size traced; the check runs another one to exercise the dynamic axis
CHECK_BATCH = 3


def export_model(
    checkpoint: PathLike,
    out_dir: PathLike,
    formats: Union[str, Sequence[str]] = "all",
    num_points: Optional[int] = None,
    name: Optional[str] = None,
    check: bool = True,
) -> Dict[str, Any]:
    """Export the model of a checkpoint.

    Args:
        checkpoint: checkpoint file, run folder or shipped weights name.
        out_dir: output folder (created).
        formats: ``"all"`` (TorchScript, and ONNX when its packages are installed), one format
            or a sequence of them (``"torchscript"``, ``"onnx"``).
        num_points: point count of the exported graph (default: the checkpoint's, else 1024).
        name: base file name (default: the checkpoint's stem, or the run folder's name).
        check: run each export on a fresh input and compare with the PyTorch model.

    Returns:
        ``{"metadata": path, "num_points": N, <format>: {"path", "ok", "max_abs_diff" (when
        checked) or "error" (when the exporter failed)}}``; ``ok`` is False when the exporter
        failed or the difference exceeds :data:`TOLERANCE`. With ``"all"`` and the ONNX packages
        missing, ``"skipped": {"onnx": reason}`` says so.

    Raises:
        ValueError: unknown format or invalid checkpoint.
        ImportError: ONNX asked for by name but ``onnx`` / ``onnxruntime`` is not installed
            (raised before anything is written).
    """
    from pointea.engine.checkpoint import load_model
    from pointea.pretrained import resolve_checkpoint

    requested = FORMATS if formats == "all" else (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in requested if f not in FORMATS]
    if unknown or not requested:
        raise ValueError(f"unknown export formats {unknown or list(requested)}; valid: 'all' or any of {', '.join(FORMATS)}")
    skipped: Dict[str, str] = {}
    missing = onnx_missing() if "onnx" in requested else []
    if missing and formats != "all":
        raise ImportError(onnx_advice(missing))
    if missing:
        skipped["onnx"] = onnx_advice(missing)
        requested = tuple(f for f in requested if f != "onnx")
    source = resolve_checkpoint(checkpoint)
    model, meta = load_model(source, device="cpu")
    num_points = num_points or meta.get("num_points") or 1024
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A run folder's file is always best.pt: the folder's name tells the exports apart.
    name = name or (Path(checkpoint).name if Path(checkpoint).is_dir() else source.stem)
    example = _example_inputs(model, num_points, EXPORT_BATCH, seed=0)
    check_inputs = _example_inputs(model, num_points, CHECK_BATCH, seed=1)
    with torch.inference_mode():
        expected = model(*check_inputs).numpy()

    result: Dict[str, Any] = {"num_points": num_points}
    if skipped:
        result["skipped"] = skipped
        logger.info("onnx export skipped: %s", skipped["onnx"])
    for fmt in requested:
        path = out_dir / f"{name}{SUFFIXES[fmt]}"
        entry: Dict[str, Any] = {"path": str(path)}
        try:
            if fmt == "torchscript":
                export_torchscript(model, example, path)
                run = _torchscript_runner(path)
            else:
                export_onnx(model, example, path)
                run = _onnx_runner(path)
        except WriteError:  # a full disk fails every format alike: stop with its one-line error
            raise
        except Exception as error:  # an exporter's failure on one format must not hide the others
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            entry.update(ok=False, error=f"{type(error).__name__}: {message}")
            logger.error("%s export of %s failed: %s", fmt, source, entry["error"])
            result[fmt] = entry
            continue
        if check:
            diff = float(np.abs(run(check_inputs) - expected).max())
            entry.update(max_abs_diff=diff, ok=diff <= TOLERANCE)
            log = logger.info if entry["ok"] else logger.error
            log("%s export %s: max |diff| vs PyTorch %.3g (tolerance %.0e)", fmt, path, diff, TOLERANCE)
        else:
            entry["ok"] = True
        result[fmt] = entry

    metadata = out_dir / f"{name}.json"
    atomic_write_text(metadata, json.dumps(_metadata(model, meta, num_points, source), indent=2) + "\n")
    result["metadata"] = str(metadata)
    return result


def onnx_missing() -> List[str]:
    """The packages of the ``export`` extra that cannot be imported here (empty when ONNX works)."""
    missing = []
    for package in ONNX_PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    return missing


def onnx_advice(missing: Sequence[str]) -> str:
    """One line saying which ONNX packages are missing and how to install them."""
    return f"ONNX export needs {' and '.join(missing)} (not installed): pip install \"pointea[export]\""


def export_torchscript(model: nn.Module, example: Tuple[Tensor, ...], path: PathLike) -> Path:
    """Trace ``model`` on ``example`` and save it with ``torch.jit.save`` (atomically)."""
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        # through a Python file object: torch's own writer aborts the process on a full disk,
        # a Python handle raises an OSError that atomic_path reports with the path
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.jit.save(traced, handle)
    return Path(path)


def export_onnx(model: nn.Module, example: Tuple[Tensor, ...], path: PathLike, opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` to ONNX with a dynamic batch axis (TorchScript-based exporter).

    The TorchScript-based exporter is used because the torch.export-based one needs the
    ``onnxscript`` package, which pointea does not depend on.
    """
    import onnx  # noqa: F401  (fail early with a clear ImportError)

    input_names = ["points"] if len(example) == 1 else ["points", "category"]
    dynamic_axes = {name: {0: "batch"} for name in input_names + ["logits"]}
    with atomic_path(path) as tmp, _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(tmp),
            input_names=input_names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    return Path(path)


def _torchscript_runner(path: Path):
    with _quiet_tracing():
        module = torch.jit.load(str(path), map_location="cpu")

    def run(inputs: Tuple[Tensor, ...]) -> np.ndarray:
        with torch.inference_mode():
            return module(*inputs).numpy()

    return run


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]

    def run(inputs: Tuple[Tensor, ...]) -> np.ndarray:
        return session.run(["logits"], {n: t.numpy() for n, t in zip(names, inputs)})[0]

    return run


def _example_inputs(model: nn.Module, num_points: int, batch_size: int, seed: int) -> Tuple[Tensor, ...]:
    """Clouds on the unit sphere's scale (and valid categories) for tracing and checking.

    Shapes:
        points (B, N, C); segmentation also category (B,)
    """
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(batch_size, num_points, config.in_channels, generator=generator) * 2 - 1
    if config.in_channels >= 6:
        points[..., 3:6] = torch.nn.functional.normalize(points[..., 3:6], dim=-1)
    if not task_for(model).uses_category:
        return (points,)
    category = torch.randint(0, len(config.category_parts), (batch_size,), generator=generator)
    return points, category


def _metadata(model: nn.Module, meta: Dict[str, Any], num_points: int, checkpoint: Path) -> Dict[str, Any]:
    config = model.config
    inputs = {"points": {"shape": ["batch", num_points, config.in_channels], "dtype": "float32"}}
    if task_for(model).uses_category:
        inputs["category"] = {"shape": ["batch"], "dtype": "int64"}
        logits_shape = ["batch", num_points, config.num_parts]
    else:
        logits_shape = ["batch", config.num_classes]
    keys = ("name", "task", "classes", "categories", "category_parts", "part_names")
    return {
        "source_checkpoint": checkpoint.name,
        "inputs": inputs,
        "outputs": {"logits": {"shape": logits_shape, "dtype": "float32"}},
        "preprocessing": "centre on the centroid, scale into the unit sphere, resample to num_points",
        "dataset": {key: meta[key] for key in keys if meta.get(key) is not None},
    }


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence tracer and deprecation chatter (PyTorch marks TorchScript and the TorchScript-based
    ONNX exporter deprecated); the numeric check is what tells whether an export works."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        yield
