"""Where a model runs: `--device auto|cpu|cuda|cuda:N`, checked before anything starts, a model's device, and
the CPU's instruction-set flags (bf16 and int8 speed depend on them)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn

from amc.errors import AmcError

DEVICE_HELP = "auto (cuda:0 if CUDA is visible, else cpu), cpu, cuda or cuda:N"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise AmcError(f"--device {device!r} is not a device; use {DEVICE_HELP}") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise AmcError(f"--device {device}: amc runs on cpu or cuda; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise AmcError(f"--device {device}: no CUDA device is visible here; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    index = 0 if resolved.index is None else resolved.index
    if index >= count:
        raise AmcError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


@functools.cache
def cpu_flags() -> frozenset[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
