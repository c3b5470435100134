"""Checkpoints as plain dicts that `torch.load(..., weights_only=True)` reads: no pickled objects."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from amc.errors import AmcError, library_text
from amc.files import check_output_file

FORMAT = "amc-checkpoint"
FORMAT_VERSION = 1


def package_versions() -> dict[str, str]:
    import torchvision

    from amc import __version__

    return {
        "amc": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write atomically (temp file then rename), so an interruption never leaves a half-written file."""
    path = check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": package_versions(), **payload}
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(blob, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # left only where writing or renaming failed


def load_checkpoint(path: str | Path) -> dict:
    """Read an amc checkpoint; a missing, corrupt or foreign file raises a one-line `AmcError`."""
    path = Path(path)
    if not path.is_file():
        raise AmcError(f"checkpoint {path} does not exist")
    try:
        # TorchVersion is a str subclass that amc 0.1.0 wrote into "versions"; harmless to allow.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (the unpickler fails in many ways on damaged bytes)
        first_line = library_text(exc)
        raise AmcError(
            f"checkpoint {path} is corrupt or truncated ({first_line}); re-create or re-download it"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise AmcError(f"{path} is not an amc checkpoint; create one with `amc train-teacher` or `amc apply`")
    return blob


def input_shape_of(blob: dict) -> tuple[int, ...]:
    """The (channels, height, width) a checkpoint's model takes; a damaged entry is a one-line error."""
    dataset = blob.get("dataset")
    shape = dataset.get("input_shape") if isinstance(dataset, dict) else None
    if (
        not isinstance(shape, (list, tuple))
        or not 1 <= len(shape) <= 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 65536 for s in shape)
    ):
        raise AmcError(f"the checkpoint's dataset.input_shape is {shape!r}, not (channels, height, width); "
                       "re-create it with `amc train-teacher`")  # fmt: skip
    return tuple(shape)
