"""pointea: deep learning on point clouds with external attention.

The Python API of the command line, importable from the package itself::

    import pointea

    config = pointea.load_config("synthetic-cls", overrides=["train.epochs=3"])
    result = pointea.train(config, "runs/api")
    metrics = pointea.evaluate("runs/api/checkpoints/best.pt", split="test")

The functions are imported on first use, so ``import pointea`` stays light (no torch).
"""

from importlib import import_module
from typing import Any, List

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_config": "pointea.config",
    "train": "pointea.engine.train",
    "resume_training": "pointea.engine.train",
    "evaluate": "pointea.engine.evaluate",
    "robustness": "pointea.engine.robustness",
    "predict_files": "pointea.engine.predict",
    "predict_points": "pointea.engine.predict",
    "load_model": "pointea.engine.checkpoint",
    "list_pretrained": "pointea.pretrained",
    "export_model": "pointea.engine.export",
    "build_model": "pointea.models",
    "read_point_cloud": "pointea.data.io",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'pointea' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted({*globals(), *_API})
