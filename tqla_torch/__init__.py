"""tqla_torch: compress PyTorch transformers with tqla's factorizations."""

__version__ = "0.1.0"
