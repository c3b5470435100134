"""amc: AutoML model compression. The core imports torch and torch-pruning only, never gymnasium or SB3.

Importing `amc` (or `amc.errors`) is light: `amc.load_student` loads the heavy modules on first use."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_student"]


def __getattr__(name: str):
    if name == "load_student":
        from amc.compress.student import load_student

        return load_student
    raise AttributeError(f"module 'amc' has no attribute {name!r}")
