"""Typed training configuration: data, model and optimisation settings, YAML in and out.

A run is described by one :class:`Config` with three sections::

    data:  {name: synthetic, num_points: 1024, ...}        # DataConfig
    model: {preset: pointea-cls, overrides: {dropout: 0.5}}  # ModelSection
    train: {epochs: 30, batch_size: 32, lr: 0.001, ...}     # TrainConfig

Recipes ship in ``pointea/configs/*.yaml``; :func:`load_config` accepts a recipe name
(``synthetic-cls``) or a path. Command-line overrides use dotted keys with YAML values:
``train.lr=0.01``, ``model.overrides.widths=[64,64]``, ``train.augmentation=[]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from pointea.atomic import atomic_write_text
from pointea.data.catalog import DATASETS as CATALOG

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# An error lists every valid choice when there are at most this many, or when none is close to
# the bad value; a longer list is left out behind a close match, to keep the message one line.
MAX_LISTED_CHOICES = 12
# a suggestion's difflib ratio may trail the best suggestion's by at most this much
CLOSE_MATCH_MARGIN = 0.05

OPTIMIZERS = ("adamw", "sgd")
AMP_MODES = ("auto", "none", "bf16")
SAMPLINGS = ("uniform", "dedup", "class_balanced")
# train.augmentation names -> pointea.data.transforms classes
AUGMENTATIONS = {
    "normalize": "NormalizeUnitSphere",
    "scale_translate": "RandomScaleTranslate",
    "jitter": "RandomJitter",
    "rotate_up": "RandomRotateUp",
    "rotate_so3": "RandomRotateSO3",
    "rotate_perturb": "RandomRotatePerturb",
    "point_dropout": "RandomPointDropout",
    "local_dropout": "RandomLocalDropout",
    "subsample": "RandomSubsample",
    "shuffle": "ShufflePoints",
    "pointwolf": "PointWOLF",
    "noise_points": "RandomNoisePoints",
    "rsmix": "RSMix",
}
# constructor arguments the engine supplies, not the config
AUGMENTATION_ENGINE_ARGS = ("generator", "num_classes")


@dataclass
class DataConfig:
    """Which dataset to train on and how its samples are prepared."""

    name: str = "synthetic"  # a name of pointea.data.catalog.DATASETS
    root: Optional[str] = None  # dataset folder; unused for generated datasets
    num_points: Optional[int] = 1024  # points per cloud; null keeps whole clouds where the dataset can
    # train split only: load this many points per cloud and train on a fresh random num_points of
    # them every epoch (val and test keep their fixed num_points); null trains on fixed points
    resample_from: Optional[int] = None
    use_normals: bool = False  # feed (x, y, z, nx, ny, nz) instead of (x, y, z)
    val_fraction: float = 0.1  # validation holdout carved from the official train split
    split_seed: int = 0  # seed of that holdout
    # how ModelNet carves that holdout: stratified (random shapes of each class) | grouped (whole
    # groups of near-identical shapes, so no val shape has a twin in train: closer to test accuracy)
    val_split: str = "stratified"
    cache_dir: Optional[str] = None  # array cache; default ~/.cache/pointea
    num_samples: Optional[int] = None  # generated data: train shapes per class (val and test get a quarter)
    categories: Optional[List[str]] = None  # part datasets: train on a subset of categories
    # dataset-specific variant; null takes the dataset's default. ScanObjectNN: obj_bg | obj_only |
    # pb_t25 | pb_t25_r | pb_t50_r | pb_t50_rs (default); datasets without variants refuse one
    variant: Optional[str] = None


@dataclass
class ModelSection:
    """A model preset (see ``pointea models``) plus keyword overrides of its ModelConfig."""

    preset: str = "pointea-cls"
    overrides: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation, augmentation and run-time settings."""

    epochs: int = 100
    batch_size: int = 32  # global batch: split evenly across processes under DDP
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # peak learning rate, reached after warm-up
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd momentum (adamw uses betas (0.9, 0.999))
    warmup_epochs: float = 0.0  # linear warm-up from 0, then cosine decay to min_lr
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None  # max global gradient norm; null disables clipping
    # Exponential moving average of the weights and batch-norm statistics, updated every step
    # (horizon about 1 / (1 - ema_decay) steps); 0 = off. When on, validation, best.pt and the
    # returned metrics are the averaged model's, and the trained weights are logged as "val_raw".
    ema_decay: float = 0.0
    # bf16 autocast (loss, optimizer and metrics stay fp32): "auto" uses it where the hardware
    # runs bf16 fast (CUDA with bf16, CPUs with AVX-512 BF16 / AMX), else fp32.
    amp: str = "auto"  # auto | none | bf16
    compile: bool = False  # torch.compile the model (pays off on long runs only)
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms; bit-exact resume
    num_workers: int = 0  # DataLoader workers for datasets not held in memory
    augmentation: List[Dict[str, Any]] = field(default_factory=list)  # [{name: ..., **kwargs}]
    # Which training shapes an epoch visits. "uniform": each once, in a fresh random order.
    # The others draw as many shapes with replacement, each with a weight. "dedup": 1 / the number
    # of shapes of the split it is near-identical to (pointea.data.dedup.duplicate_counts), scaled
    # so that each class keeps its share of the draws: a CAD model duplicated many times over is
    # not trained on many times over. "class_balanced": 1 / the size of its class, so every class
    # is drawn equally often.
    sampling: str = "uniform"  # uniform | dedup | class_balanced
    eval_every: int = 1  # validate every k epochs (and always after the last)
    select_metric: Optional[str] = None  # val metric for best.pt; default by task
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    sync_batchnorm: bool = True  # batch-norm statistics over the global batch under DDP
    threads: Optional[int] = None  # torch intra-op threads; default: torch's choice
    progress: bool = True  # tqdm progress bars (rank 0, when stderr is a terminal)
    checkpoint_every: int = 1  # write last.pt every k epochs (and after the last)
    # Wall-clock budget in seconds for the run's epochs (training, validation and checkpoints,
    # summed over resumed sessions); null = none. From the second epoch on, when the rest of the
    # schedule would not fit at this session's pace, train.epochs is cut to what fits (never below
    # the warm-up or the next epoch) and the cosine schedule is re-planned to end there; the cut is
    # logged and recorded in config.yaml and the checkpoints. Where the whole schedule fits, it
    # changes nothing.
    time_budget_s: Optional[float] = None


@dataclass
class Config:
    """A complete, resolvable training recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"data": DataConfig, "model": ModelSection, "train": TrainConfig}


def available_configs() -> List[str]:
    """Names of the recipes shipped in ``pointea/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: Union[str, os.PathLike]) -> Path:
    """Find a recipe by shipped name (``synthetic-cls``) or by file path.

    Raises:
        FileNotFoundError: neither a file nor a shipped recipe; lists the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{path.name}.yaml" if path.suffix == "" else CONFIG_DIR / path.name
    if len(path.parts) == 1 and shipped.is_file():
        return shipped
    # a bare name is compared with the recipe names; a path with folders is not a recipe name
    typed_name = shipped.stem if len(path.parts) == 1 else ""
    hint = choices_hint(typed_name, available_configs(), "shipped recipes")
    raise FileNotFoundError(f"config {str(name_or_path)!r} is neither a file nor a shipped recipe{hint}")


def load_config(
    name_or_path: Union[str, os.PathLike, None] = None, overrides: Sequence[str] = ()
) -> Config:
    """Load a recipe (or the defaults when ``None``) and apply ``key=value`` overrides."""
    if name_or_path is None:
        config = Config()
    else:
        path = resolve_config_path(name_or_path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
        config = config_from_dict(raw, source=str(path))
    return apply_overrides(config, overrides)


def save_config(config: Config, path: Union[str, os.PathLike]) -> None:
    """Write ``config`` as YAML (atomically)."""
    atomic_write_text(path, config_to_yaml(config))


def config_to_dict(config: Config) -> Dict[str, Any]:
    """Plain nested dict of ``config`` (YAML/JSON/checkpoint safe)."""
    return dataclasses.asdict(config)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


def config_from_dict(raw: Dict[str, Any], source: str = "config") -> Config:
    """Build a validated :class:`Config` from a nested dict.

    Raises:
        ValueError: unknown section or key (lists the valid ones), or a value of the wrong type.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping with sections {list(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS), key=str)
    if unknown:
        hint = choices_hint(unknown[0], list(SECTIONS), "valid sections")
        raise ValueError(f"{source}: unknown section {unknown[0]!r}{hint}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping, got {values!r}")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                hint = choices_hint(key, valid, f"valid keys in {name!r}", prefix=f"{name}.")
                raise ValueError(f"{source}: unknown key {name}.{key}{hint}")
        hints = typing.get_type_hints(cls)
        kwargs = {
            key: _check_type(value, hints[key], f"{source}: {name}.{key}")
            for key, value in values.items()
        }
        sections[name] = cls(**kwargs)
    config = Config(**sections)
    validate_config(config, source)
    return config


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Return a copy of ``config`` with dotted ``section.key=value`` overrides applied.

    Values are parsed as YAML (``0.01``, ``true``, ``null``, ``[64, 128]``, ``{name: jitter}``).
    ``model.overrides.KEY=VALUE`` sets one model keyword.
    """
    raw = config_to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ValueError(f"override {item!r}: value is not valid YAML: {error}") from None
        parts = key.strip().split(".")
        if parts[0] not in SECTIONS:
            hint = choices_hint(parts[0], list(SECTIONS), "valid sections")
            raise ValueError(f"override {item!r}: unknown section {parts[0]!r}{hint}")
        if len(parts) == 3 and parts[:2] == ["model", "overrides"]:
            raw["model"]["overrides"][parts[2]] = value
            continue
        if len(parts) != 2:
            raise ValueError(
                f"override {item!r}: expected section.key=value (or model.overrides.KEY=value)"
            )
        raw[parts[0]][parts[1]] = value
    return config_from_dict(raw, source="overrides")


def validate_config(config: Config, source: str = "config") -> None:
    """Check the choices and ranges that the types alone do not express."""
    data, train = config.data, config.train
    _check_choice(data.name, list(CATALOG), f"{source}: data.name")  # read live: entries may be added
    _check_model_section(config.model, source)
    _check_choice(train.optimizer, OPTIMIZERS, f"{source}: train.optimizer")
    _check_choice(train.amp, AMP_MODES, f"{source}: train.amp")
    _check_choice(train.sampling, SAMPLINGS, f"{source}: train.sampling")
    if not 0.0 < data.val_fraction < 1.0:
        raise ValueError(f"{source}: data.val_fraction must be in (0, 1), got {data.val_fraction}")
    for key in ("num_points", "resample_from", "num_samples"):
        value = getattr(data, key)
        if value is not None and value < 1:
            raise ValueError(f"{source}: data.{key} must be at least 1 (or null), got {value}")
    if data.resample_from is not None and (data.num_points is None or data.resample_from <= data.num_points):
        raise ValueError(
            f"{source}: data.resample_from must be larger than data.num_points, got resample_from="
            f"{data.resample_from}, num_points={data.num_points}"
        )
    for key in ("epochs", "batch_size", "eval_every", "checkpoint_every"):
        if getattr(train, key) < 1:
            raise ValueError(f"{source}: train.{key} must be >= 1, got {getattr(train, key)}")
    if train.lr <= 0 or train.min_lr < 0 or train.min_lr > train.lr:
        raise ValueError(
            f"{source}: need 0 <= train.min_lr <= train.lr and lr > 0, got lr={train.lr}, "
            f"min_lr={train.min_lr}"
        )
    if not 0.0 <= train.label_smoothing < 1.0:
        raise ValueError(f"{source}: train.label_smoothing must be in [0, 1)")
    if not 0.0 <= train.ema_decay < 1.0:
        raise ValueError(f"{source}: train.ema_decay must be in [0, 1) (0 = off), got {train.ema_decay}")
    if train.grad_clip is not None and train.grad_clip <= 0:
        raise ValueError(f"{source}: train.grad_clip must be positive or null")
    if train.time_budget_s is not None and not train.time_budget_s > 0:
        raise ValueError(f"{source}: train.time_budget_s must be a positive number of seconds or null, "
                         f"got {train.time_budget_s}")
    if train.warmup_epochs < 0 or train.warmup_epochs > train.epochs:
        raise ValueError(f"{source}: train.warmup_epochs must be in [0, train.epochs]")
    for index, aug in enumerate(train.augmentation):
        if not isinstance(aug, dict) or "name" not in aug:
            raise ValueError(
                f"{source}: train.augmentation[{index}] must be a mapping with a 'name' "
                f"(one of {', '.join(AUGMENTATIONS)}), got {aug!r}"
            )
        _check_choice(aug["name"], AUGMENTATIONS, f"{source}: train.augmentation[{index}].name")
    _check_augmentation_arguments(config, source)
    if train.select_metric is not None and train.select_metric.startswith("test"):
        raise ValueError(f"{source}: train.select_metric selects on validation metrics only")


def choices_hint(value: Any, choices: Sequence[str], label: str = "valid", prefix: str = "") -> str:
    """The end of an error about ``value`` not being one of ``choices``: what to use instead.

    Lists the choices when there are few or none is close, and the close matches that
    ``difflib.get_close_matches`` finds, e.g. ``"; valid choices: adamw, sgd; did you mean adamw?"``.
    ``prefix`` goes before each suggestion (``train.`` turns ``lr`` into ``train.lr``).
    """
    choices = [str(choice) for choice in choices]
    close = difflib.get_close_matches(str(value), choices, n=3)
    # keep only the matches about as close as the best: 'pointea-cls-mheaa' suggests
    # pointea-cls-mhea, not also pointea-cls-sa
    ratios = [difflib.SequenceMatcher(None, str(value), match).ratio() for match in close]
    close = [match for match, ratio in zip(close, ratios) if ratio >= ratios[0] - CLOSE_MATCH_MARGIN]
    parts = []
    if not close or len(choices) <= MAX_LISTED_CHOICES:
        parts.append(f"{label}: {', '.join(choices) or 'none'}")
    if close:
        parts.append(f"did you mean {' or '.join(prefix + match for match in close)}?")
    return "; " + "; ".join(parts)


def _check_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} is {value!r}{choices_hint(value, choices, 'valid choices')}")


def augmentation_kwargs(spec: Dict[str, Any]) -> Dict[str, Any]:
    """A ``train.augmentation`` entry's arguments for its transform (YAML lists become tuples);
    ``name`` and ``p`` (the probability of applying it to a cloud) are the entry's own keys."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in spec.items()
            if key not in ("name", "p")}


def _check_augmentation_arguments(config: Config, source: str) -> None:
    """Build each augmentation entry once, so that a misspelt or bad argument fails at load, and
    keep mixing entries last and to classification."""
    # imported here so that importing pointea.config stays free of torch
    from pointea.data import transforms
    from pointea.models import PRESETS

    mixing_seen = None
    for index, spec in enumerate(config.train.augmentation):
        what = f"{source}: train.augmentation[{index}] ({spec['name']})"
        cls = getattr(transforms, AUGMENTATIONS[spec["name"]])
        valid = [name for name in inspect.signature(cls).parameters if name not in AUGMENTATION_ENGINE_ARGS]
        kwargs = augmentation_kwargs(spec)
        for key in kwargs:
            if key not in valid:
                raise ValueError(f"{what}: unknown argument {key!r}{choices_hint(key, valid, 'valid arguments')}")
        try:
            cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what}: {error}") from None
        mixes = getattr(cls, "mixes_samples", False)
        if "p" in spec:
            probability = spec["p"]
            if mixes:
                raise ValueError(f"{what}: p applies to per-cloud augmentations; a mixing entry has its own "
                                 "probability argument")
            if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
                raise ValueError(f"{what}: p must be a probability in [0, 1], got {probability!r}")
        if mixes:
            preset = PRESETS.get(config.model.preset)
            task = config.model.overrides.get("task", preset.task if preset else None)
            if task != "classification":
                raise ValueError(f"{what} mixes clouds and their class labels: classification only, "
                                 f"but model.preset {config.model.preset!r} is a {task} model")
            mixing_seen = index
        elif mixing_seen is not None:
            raise ValueError(f"{what} comes after the mixing entry train.augmentation[{mixing_seen}]; "
                             "mixing must come last, after the per-cloud augmentations")


def _check_model_section(model: ModelSection, source: str) -> None:
    """Check the preset name, the override keys and their named choices, so that a typo fails
    when the config is loaded rather than after the data is read."""
    # imported here so that importing pointea.config stays free of torch, which pointea.models needs
    from pointea.models import MODEL_CHOICES, PRESETS, ModelConfig

    _check_choice(model.preset, list(PRESETS), f"{source}: model.preset")
    valid = [f.name for f in dataclasses.fields(ModelConfig)]
    for key, value in model.overrides.items():
        if key not in valid:
            hint = choices_hint(key, valid, "valid keys (ModelConfig fields)", prefix="model.overrides.")
            raise ValueError(f"{source}: unknown key model.overrides.{key}{hint}")
        if key in MODEL_CHOICES:
            _check_choice(value, MODEL_CHOICES[key], f"{source}: model.overrides.{key}")


def _check_type(value: Any, hint: Any, what: str) -> Any:
    """Check ``value`` against a dataclass field type; int is accepted (and converted) for float."""
    origin = typing.get_origin(hint)
    if origin is Union:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, what)
            except ValueError as error:
                errors.append(error)
        raise errors[0]
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ValueError(f"{what} must be a list, got {value!r} ({type(value).__name__})")
        (item_hint,) = typing.get_args(hint) or (Any,)
        return [_check_type(item, item_hint, f"{what}[{i}]") for i, item in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ValueError(f"{what} must be a mapping, got {value!r} ({type(value).__name__})")
        return dict(value)
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise ValueError(
        f"{what} must be of type {hint.__name__}, got {value!r} ({type(value).__name__})"
    )
