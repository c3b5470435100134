"""amc: AutoML model compression. The core imports torch and torch-pruning only, never gymnasium or SB3."""

__version__ = "0.1.0"

from amc.student import load_student  # noqa: E402

__all__ = ["__version__", "load_student"]
