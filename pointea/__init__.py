"""pointea: deep learning on point clouds with external attention."""

__version__ = "0.1.0"
