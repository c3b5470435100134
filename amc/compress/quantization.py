"""Fine-grained sparsity masks and mixed-precision weight quantization, as weight parametrizations.

Both stay attached to the student, so fine-tuning keeps pruned weights at zero and trains through the
quantizer (straight-through estimator). The student remains a plain `nn.Module`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


class WeightMask(nn.Module):
    """Multiplies a weight by a fixed 0/1 mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class FakeQuantize(nn.Module):
    """Symmetric, per-output-channel, linear quantization to `bits`; gradients pass straight through."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = int(bits)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        quantized = quantize_per_channel(weight, self.bits)
        return weight + (quantized - weight).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    max_abs = weight.detach().abs().flatten(1).amax(dim=1).clamp_min(1e-12)
    return max_abs / qmax


def quantize_per_channel(weight: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    scale = channel_scales(weight, bits).view(-1, *([1] * (weight.ndim - 1)))
    return torch.clamp(torch.round(weight / scale), -qmax, qmax) * scale


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the largest-magnitude weights; exactly round(sparsity * numel) are zeroed (ties by index). The mask
    lives on the weight's device; the ranking is done on the CPU, so it is the same on every device."""
    n_zero = int(round(sparsity * weight.numel()))
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if n_zero > 0:
        order = torch.sort(weight.detach().abs().flatten().cpu(), stable=True).indices
        mask[order[:n_zero]] = False
    return mask.view_as(weight).to(weight.device)


def sparsify(model: nn.Module, sparsity: dict[str, float]) -> None:
    """Zero the smallest weights of each named layer, permanently (the mask stays as a parametrization)."""
    for name, value in sparsity.items():
        if value <= 0:
            continue
        module = model.get_submodule(name)
        parametrize.register_parametrization(module, "weight", WeightMask(magnitude_mask(module.weight, value)))


def quantize_weights(model: nn.Module, bits: dict[str, int]) -> None:
    """Fake-quantize each named layer's weights to its bit width (32 means float, left alone)."""
    for name, b in bits.items():
        if b < 32:
            parametrize.register_parametrization(model.get_submodule(name), "weight", FakeQuantize(b))


class ActivationQuantizer:
    """Forward pre-hook: per-tensor symmetric fake quantization of a layer's input."""

    def __init__(self, bits: int = 8):
        self.bits = bits

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple:
        x = inputs[0]
        qmax = 2 ** (self.bits - 1) - 1
        scale = x.detach().abs().amax().clamp_min(1e-12) / qmax
        q = torch.clamp(torch.round(x / scale), -qmax, qmax) * scale
        return (x + (q - x).detach(), *inputs[1:])


def quantize_activations(model: nn.Module, bits: int = 8) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_pre_hook(ActivationQuantizer(bits))


def weight_bits(module: nn.Module) -> int:
    """Bit width of a layer's stored weights: 32 unless fake-quantized."""
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, FakeQuantize):
                return p.bits
    return 32


def weight_mask(module: nn.Module) -> torch.Tensor | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, WeightMask):
                return p.mask
    return None
