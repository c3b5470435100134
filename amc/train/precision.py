"""Numeric precision: bf16 where the device computes it natively, fp32 elsewhere.

On CPUs without native bf16 (AVX2-only x86, many AMD EPYC and older Intel parts) bf16 autocast is
10-14x slower than fp32, so `auto` never picks it there.
"""

from __future__ import annotations

import contextlib

import torch

from amc.device import cpu_flags
from amc.errors import AmcError

PRECISIONS = ("auto", "bf16", "fp32")


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix work is native: a CUDA device with bf16, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)]
    if any(check is not None and check() for check in checks):
        return True
    return any(flag in cpu_flags() for flag in _CPU_BF16_FLAGS)


def channels_last(precision: str, device: torch.device) -> bool:
    """Whether images (and the models the reward builds) run in channels_last: on a CPU always, since oneDNN's
    convolutions are faster in it in fp32 as in bf16 (experiments/results/candidate_cost.md); elsewhere with
    bf16."""
    return device.type == "cpu" or resolve_precision(precision, device) == "bf16"


def memory_format(precision: str, device: torch.device) -> torch.memory_format:
    """The layout of images, and of the models they meet, as `channels_last` decides (a convolution is slower when
    its weights and its input differ)."""
    return torch.channels_last if channels_last(precision, device) else torch.contiguous_format


def resolve_precision(precision: str, device: torch.device, announce: bool = False) -> str:
    """`bf16` or `fp32`; `auto` becomes bf16 only where `native_bf16(device)`. `announce` prints the choice."""
    if precision not in PRECISIONS:
        raise AmcError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    chosen = "bf16" if native_bf16(device) else "fp32"
    if announce:
        why = "native bf16" if chosen == "bf16" else "no native bf16, where bf16 autocast is 10-14x slower"
        print(f"precision: {chosen} (auto: {why} on {device.type})", flush=True)
    return chosen


def autocast(precision: str, device: torch.device):
    """bf16 autocast, or a no-op for fp32 (`auto` is resolved for `device` first)."""
    precision = resolve_precision(precision, device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
