"""A model and its data checked against each other before any work: a dry forward on the data's image shape. A
model that cannot take it is one line naming the channels it takes or the smallest image size that works."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from amc.device import model_device
from amc.errors import AmcError, library_text

LARGEST_SIZE_TRIED = 1024


def _error(model: nn.Module, shape: Sequence[int]) -> Exception | None:
    """What a forward of two images of `shape` raises, in eval mode (the mode is restored), or None."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *shape, device=model_device(model)))
    except (RuntimeError, ValueError, IndexError) as exc:
        return exc
    finally:
        model.train(was_training)
    return None


def _smallest_size(model: nn.Module, channels: int, size: int) -> int | None:
    """The smallest square image side above `size` the model takes (None up to `LARGEST_SIZE_TRIED`)."""
    low, high = size, size + 1
    while _error(model, (channels, high, high)) is not None:
        if high >= LARGEST_SIZE_TRIED:
            return None
        low, high = high, min(2 * high, LARGEST_SIZE_TRIED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _error(model, (channels, middle, middle)) is None else (middle, high)
    return high


def check_model_takes(model: nn.Module, input_shape: Sequence[int], data_name: str) -> None:
    """Refuse in one line, before any work, a model that cannot run on the data's images."""
    error = _error(model, input_shape)
    if error is None:
        return
    channels, height, width = input_shape
    for other in (1, 3):
        if other != channels and _error(model, (other, height, width)) is None:
            raise AmcError(f"the model takes {other}-channel images, but {data_name} has {channels}; use "
                           f"{other}-channel data (imagefolder: --channels {other})")  # fmt: skip
    smallest = _smallest_size(model, channels, max(height, width))
    if smallest is not None:
        raise AmcError(f"{data_name}'s {height}x{width} images are too small for the model; the smallest it takes "
                       f"is {smallest}x{smallest} (imagefolder: --image-size {smallest})")  # fmt: skip
    raise AmcError(f"the model cannot run on {data_name}'s {channels}x{height}x{width} images "
                   f"({library_text(error)}); check that the model and the data belong together")  # fmt: skip
