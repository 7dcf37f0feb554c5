"""Pretrained weights shipped with the package, and the resolver of ``--checkpoint`` arguments.

Weights ship as ``pointea/weights/**/<name>.pt`` (a slim checkpoint) with a ``<name>.json`` record
beside each (command, config, split, metrics, hardware, times). A file's name is its path under
``pointea/weights`` without ``.pt``: ``pointea-cls-modelnet40-cpu`` or
``ablation/pointea-cls-modelnet40-cpu-ea``; a file in a subfolder also answers to its bare stem
when no other file has that stem.

:func:`resolve_checkpoint` turns what a user passes as a checkpoint into a file, as timm resolves
``pretrained=True``: an existing file wins, then a run folder (its ``checkpoints/best.pt``), then a
shipped name.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Union

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RUN_CHECKPOINT = Path("checkpoints") / "best.pt"  # what a run folder stands for


def shipped_weights() -> Dict[str, Path]:
    """Names of the shipped weights (sorted) mapped to their files, subfolders included."""
    files = sorted(WEIGHTS_DIR.rglob("*.pt"))
    return {path.relative_to(WEIGHTS_DIR).with_suffix("").as_posix(): path for path in files}


def list_pretrained() -> List[str]:
    """Names of the shipped weights, each usable wherever a checkpoint path is."""
    return list(shipped_weights())


def weights_record(path: PathLike) -> Dict[str, Any]:
    """The ``.json`` record beside a weights file (``{}`` when there is none).

    Raises:
        ValueError: the record is not a JSON object; the message names the file.
    """
    record_path = Path(path).with_suffix(".json")
    if not record_path.is_file():
        return {}
    try:
        record = json.loads(record_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"weights record {record_path} is not valid JSON: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"weights record {record_path} must hold a JSON object, got {type(record).__name__}")
    return record


def resolve_checkpoint(checkpoint: PathLike) -> Path:
    """The checkpoint file meant by a path, a run folder or a shipped weights name.

    Order: an existing file; a run folder, standing for its ``checkpoints/best.pt`` (logged in one
    line); the name of shipped weights (``.pt`` optional).

    Raises:
        FileNotFoundError: a run folder without ``checkpoints/best.pt`` (the message says what the
            folder holds), or neither a path nor a shipped name (the message lists the shipped
            names and the closest ones).
    """
    path = Path(checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        best = path / RUN_CHECKPOINT
        if best.is_file():
            logger.warning("%s is a run folder: using its %s", path, RUN_CHECKPOINT.as_posix())
            return best
        raise FileNotFoundError(f"checkpoint {path} is a folder without {RUN_CHECKPOINT.as_posix()}: {_folder_hint(path)}")
    shipped = shipped_weights()
    stems = [name.rsplit("/", 1)[-1] for name in shipped]
    aliases = {stem: path for stem, path in zip(stems, shipped.values()) if stems.count(stem) == 1}
    aliases.update(shipped)  # a full name wins over another file's stem
    key = str(checkpoint).replace(os.sep, "/")
    key = key[: -len(".pt")] if key.endswith(".pt") else key
    if key in aliases:
        return aliases[key]
    names = ", ".join(shipped) or "none"
    close = difflib.get_close_matches(key, list(aliases), n=3)
    guess = f"; did you mean {' or '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"checkpoint not found: {checkpoint} is neither a file, a run folder nor shipped weights "
        f"(shipped weights: {names}){guess}"
    )


def _folder_hint(folder: Path) -> str:
    """What a would-be run folder lacks, and the checkpoint files it does hold."""
    checkpoints = folder / RUN_CHECKPOINT.parent
    if not checkpoints.is_dir():
        held = sorted(p.name for p in folder.glob("*.pt"))
        found = f"; it holds {', '.join(held)}: pass one of those files" if held else ""
        return f"it has no {checkpoints.name}/ subfolder, so it is not a pointea run folder{found}"
    held = sorted(p.name for p in checkpoints.glob("*.pt"))
    if held:
        return f"{checkpoints.name}/ holds {', '.join(held)}; pass one of those files, e.g. {checkpoints / held[0]}"
    return f"{checkpoints.name}/ holds no .pt file yet (has the run saved an epoch?)"


def weights_info(name: str) -> Dict[str, Any]:
    """What ``pointea models`` shows of shipped weights, read from the file and its record.

    The parameter count comes from a model built on the meta device (no memory, no init cost),
    so buffers such as batch-norm statistics are not counted, as for the presets.

    Returns:
        ``{"name", "path", "task", "dataset", "num_points", "in_channels", "params",
        "file_mib", "preset", "split", "metrics", "record"}`` (``split`` and ``metrics`` from the
        record, None / ``{}`` when it has none).

    Raises:
        FileNotFoundError: ``name`` is not shipped. ValueError: the file or record is invalid.
    """
    import torch

    from pointea.engine.checkpoint import load_checkpoint
    from pointea.models import build_model, count_parameters, model_config_from_dict

    shipped = shipped_weights()
    if name not in shipped:
        raise FileNotFoundError(f"no shipped weights named {name!r}; shipped: {', '.join(shipped) or 'none'}")
    path = shipped[name]
    state = load_checkpoint(path)
    with torch.device("meta"):
        model = build_model(model_config_from_dict(state["model_config"]))
    record = weights_record(path)
    dataset = state["dataset"]
    return {
        "name": name,
        "path": path,
        "task": model.config.task,
        "dataset": dataset.get("name"),
        "num_points": dataset.get("num_points"),
        "in_channels": model.config.in_channels,
        "params": count_parameters(model),
        "file_mib": path.stat().st_size / 2**20,
        "preset": (record.get("config") or {}).get("model", {}).get("preset"),
        "split": record.get("split"),
        "metrics": record.get("metrics") or {},
        "record": record,
    }
