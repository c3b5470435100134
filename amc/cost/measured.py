"""Measured cost of a built model: one function per resource (MACs, params, size, latency), and layer shapes.
Predictions for a policy, without building it, are in `amc.cost.predicted`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from amc.compress.heads import attention_macs
from amc.compress.pruning import channel_norm_width
from amc.device import model_device
from amc.forward import forward_with_hooks


def _example_input(input_shape: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, *input_shape)


def layer_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-accumulates of every conv and linear layer for one image, by module name."""
    macs: dict[str, int] = {}

    def record(name: str, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_out = module.in_features
        macs[name] = macs.get(name, 0) + output.numel() * per_out  # one image: wherever its batch axis is

    forward_with_hooks(model, input_shape, record, (nn.Conv2d, nn.Linear))
    return macs


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(input, output) channels of every conv/linear layer."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = (m.in_channels, m.out_channels)
        elif isinstance(m, nn.Linear):
            shapes[name] = (m.in_features, m.out_features)
    return shapes


def norm_channels(model: nn.Module) -> dict[str, int]:
    return {name: c for name, m in model.named_modules() if (c := channel_norm_width(m)) is not None}


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Conv, linear and attention-matmul MACs for one image (what papers call FLOPs); `torch.utils.flop_counter`
    counts 2x this (where it sees the attention matmuls: not inside a CPU scaled_dot_product_attention)."""
    return sum(layer_macs(model, input_shape).values()) + sum(attention_macs(model, input_shape).values())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sparse_weight_bits(numel: int, nnz: int, bits: int, rows: int) -> int:
    """Bits to store a weight matrix: dense, bitmask (1 bit per entry + values) or CSR, whichever is smallest.

    CSR stores each non-zero's value and a 16-bit column index, plus a 32-bit row pointer per row.
    """
    dense = numel * bits
    if nnz == numel:
        return dense
    bitmask = numel + nnz * bits
    csr = nnz * (bits + 16) + (rows + 1) * 32
    return min(dense, bitmask, csr)


def layer_weight_bytes(module: nn.Module) -> float:
    """Stored bytes of one conv/linear weight, aware of its bit width and sparsity mask (plus scales)."""
    from amc.compress.quantization import weight_bits, weight_mask

    weight = module.weight
    bits = weight_bits(module)
    mask = weight_mask(module)
    nnz = int(mask.sum()) if mask is not None else weight.numel()
    total = sparse_weight_bits(weight.numel(), nnz, bits, weight.shape[0]) / 8
    if bits < 32:
        total += weight.shape[0] * 4  # one float32 scale per output channel
    return total


def size_bytes(model: nn.Module) -> int:
    """Bytes to store the model for inference: conv/linear weights at their bits and sparsity, every other
    parameter and floating-point buffer (biases, BatchNorm) as float32."""
    from torch.nn.utils import parametrize

    total = 0.0
    counted: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            total += layer_weight_bytes(module)
            if parametrize.is_parametrized(module, "weight"):
                counted.update(id(t) for t in module.parametrizations.weight.parameters())
                counted.update(id(t) for t in module.parametrizations.weight.buffers())
            else:
                counted.add(id(module.weight))
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in counted and tensor.is_floating_point():
            total += tensor.numel() * 4
    return int(round(total))


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    *,
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 20,
    min_seconds: float = 0.0,
) -> float:
    """Median milliseconds per image of `repeats` timed forward passes, after `warmup` untimed ones."""
    device = model_device(model)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    x = _example_input(input_shape, batch_size).to(device)

    def synchronize() -> None:  # CUDA runs asynchronously: wait for queued work before reading the clock
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        for _ in range(warmup):
            model(x)
        synchronize()
        times, started = [], time.perf_counter()
        while len(times) < repeats or time.perf_counter() - started < min_seconds:
            t0 = time.perf_counter()
            model(x)
            synchronize()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return statistics.median(times) * 1000.0 / batch_size


def flop_counter_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs as PyTorch's `FlopCounterMode` sees them (its FLOPs / 2): an independent check on `count_macs`."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(_example_input(input_shape).to(model_device(model)))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def cost_ratios(student: nn.Module, teacher: nn.Module, input_shape) -> dict:
    """The student's MACs, params and bytes, and each as a ratio of the teacher's."""
    macs, params, size = count_macs(student, input_shape), count_params(student), size_bytes(student)
    return {
        "flops": macs,
        "params": params,
        "size_bytes": size,
        "flops_ratio": macs / count_macs(teacher, input_shape),
        "params_ratio": params / count_params(teacher),
        "size_ratio": size / size_bytes(teacher),
    }
