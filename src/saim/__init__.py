"""saim: Single Active Interactive Model — concurrent interactive segmentation and model training."""

__version__ = "0.1.0"
