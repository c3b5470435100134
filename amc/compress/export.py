"""Deployment formats for a student: baked float modules, TorchScript, ONNX, and packed low-bit weights.

`bake` folds sparsity masks and weight quantizers into plain float weights (what a runtime executes).
The packed file stores each quantized weight as `bits`-bit integer codes plus one float32 scale per output
channel, so its bytes on disk are what `amc.cost.measured.size_bytes` reports.
"""

from __future__ import annotations

import copy
import json
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from amc.compress.quantization import FakeQuantize, WeightMask, channel_scales
from amc.errors import AmcError

PACK_MAGIC = b"AMCPACK1"
FORMATS = ("torchscript", "onnx", "packed")


def bake(model: nn.Module) -> nn.Module:
    """A copy with every weight parametrization replaced by its current value; forward outputs are unchanged.
    (`remove_parametrizations` would edit the parametrized class, which the copy shares with `model`.)"""
    baked = copy.deepcopy(model).eval()
    for module in baked.modules():
        if parametrize.is_parametrized(module):
            values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
            module.__class__ = module.__class__.__bases__[0]  # ParametrizedConv2d -> Conv2d
            del module._modules["parametrizations"]
            for name, value in values.items():
                module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return baked


CPU = torch.device("cpu")


def _example(input_shape: Sequence[int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))


def relative_difference(outputs, reference) -> float:
    """Largest |output - reference| over the largest |reference|: meaningful for large and small logits alike."""
    outputs, reference = torch.as_tensor(outputs, dtype=torch.float64), torch.as_tensor(reference, dtype=torch.float64)
    return float((outputs - reference).abs().max() / reference.abs().max().clamp_min(torch.finfo(torch.float32).tiny))


@torch.no_grad()
def export_torchscript(
    model: nn.Module, input_shape: Sequence[int], path: str | Path, device: torch.device = CPU
) -> float:
    """Trace the baked model on the CPU, save it, reload it onto `device` and return its `relative_difference`
    from PyTorch's outputs there."""
    baked = bake(model).cpu()
    with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; it still is what runtimes load
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(baked, _example(input_shape))
        torch.jit.save(traced, str(path))
        reloaded = torch.jit.load(str(path), map_location=device)
    check = _example(input_shape, batch=4, seed=1).to(device)
    return relative_difference(reloaded(check).cpu(), baked.to(device)(check).cpu())


@torch.no_grad()
def write_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path) -> nn.Module:
    """Write the baked model as ONNX with a dynamic batch axis (input `input`, output `logits`); returns it."""
    baked = bake(model).cpu()
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript; torch warns about it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            baked, (_example(input_shape),), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return baked


@torch.no_grad()
def export_onnx(
    model: nn.Module, input_shape: Sequence[int], path: str | Path, device: torch.device = CPU
) -> float | None:
    """Export the baked model to ONNX (dynamic batch). Returns its `relative_difference` from PyTorch's outputs,
    computed with onnx's reference evaluator against PyTorch on `device`, or None when the `onnx` package is not
    installed."""
    baked = write_onnx(model, input_shape, path)
    try:
        import onnx
        from onnx.reference import ReferenceEvaluator
    except ImportError:
        return None
    check = _example(input_shape, batch=4, seed=1)
    outputs = ReferenceEvaluator(onnx.load(str(path))).run(None, {"input": check.numpy()})[0]
    return relative_difference(outputs, baked.to(device)(check.to(device)).cpu())


# ----------------------------------------------------------------------------- packed weights


def _pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned integers < 2**bits, `bits` bits each, little-endian bit order."""
    as_bits = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(as_bits.reshape(-1), bitorder="little").tobytes()


def _unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, :bits] = flat.reshape(count, bits)
    return np.packbits(padded, axis=1, bitorder="little")[:, 0]


def _weight_parts(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The weight just before quantization (mask applied), its mask, and its bit width."""
    chain = module.parametrizations.weight
    value, mask, bits = chain.original.detach(), None, 32
    for step in chain:
        if isinstance(step, FakeQuantize):
            bits = step.bits
            break
        if isinstance(step, WeightMask):
            mask = step.mask
        value = step(value).detach()
    return value, mask, bits


def _encode_weight(module: nn.Module) -> tuple[dict, list[bytes]]:
    weight, mask, bits = _weight_parts(module)
    entry: dict = {"shape": list(weight.shape), "bits": bits}
    chunks: list[bytes] = []
    if mask is not None and int(mask.sum()) < mask.numel():
        flat_mask = mask.reshape(-1).cpu().numpy()
        dense_bits, mask_bits = weight.numel() * bits, weight.numel() + int(flat_mask.sum()) * bits
        if mask_bits < dense_bits:
            entry["mask"] = True
            chunks.append(np.packbits(flat_mask, bitorder="little").tobytes())
    keep = mask.reshape(-1).cpu().numpy() if entry.get("mask") else slice(None)
    if bits < 32:
        qmax = 2 ** (bits - 1) - 1
        scale = channel_scales(weight, bits).view(-1, *([1] * (weight.ndim - 1)))
        codes = torch.clamp(torch.round(weight / scale), -qmax, qmax).to(torch.int16) + qmax
        chunks.append(_pack_bits(codes.reshape(-1).cpu().numpy()[keep], bits))
        chunks.append(scale.reshape(-1).float().cpu().numpy().tobytes())
    else:
        chunks.append(weight.reshape(-1).float().cpu().numpy()[keep].tobytes())
    return entry, chunks


def save_packed(model: nn.Module, path: str | Path) -> int:
    """Write every tensor of the model, quantized and sparse weights packed; returns the file's bytes."""
    baked_names = set(bake(model).state_dict())
    entries, payload = [], []
    encoded_prefixes = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and parametrize.is_parametrized(module, "weight"):
            entry, chunks = _encode_weight(module)
            entries.append({"name": f"{name}.weight", "kind": "weight", **entry, "sizes": [len(c) for c in chunks]})
            payload += chunks
            encoded_prefixes.add(f"{name}.parametrizations.weight.")
    for name, tensor in model.state_dict().items():
        if any(name.startswith(p) for p in encoded_prefixes) or name not in baked_names:
            continue
        array = tensor.detach().cpu().numpy()
        if array.dtype == np.float64 or array.dtype == np.float16:
            array = array.astype(np.float32)
        data = np.ascontiguousarray(array).tobytes()
        entries.append({"name": name, "kind": "raw", "dtype": str(array.dtype), "shape": list(array.shape),
                        "sizes": [len(data)]})  # fmt: skip
        payload.append(data)
    header = zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 9)
    path = Path(path)
    path.write_bytes(PACK_MAGIC + struct.pack("<I", len(header)) + header + b"".join(payload))
    return path.stat().st_size


def load_packed(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of the baked model (`bake(student)`) from a packed file."""
    blob = Path(path).read_bytes()
    if not blob.startswith(PACK_MAGIC):
        raise AmcError(f"{path} is not an amc packed-weights file; write one with `amc export --format packed`")
    (header_len,) = struct.unpack("<I", blob[8:12])
    try:
        entries = json.loads(zlib.decompress(blob[12 : 12 + header_len]))
    except (zlib.error, ValueError) as exc:
        raise AmcError(f"{path} has a corrupt header; export it again") from exc
    offset, state = 12 + header_len, {}
    for entry in entries:
        chunks = []
        for size in entry["sizes"]:
            chunks.append(blob[offset : offset + size])
            offset += size
        shape = entry["shape"]
        if entry["kind"] == "raw":
            array = np.frombuffer(chunks[0], dtype=entry["dtype"]).reshape(shape)
            state[entry["name"]] = torch.from_numpy(array.copy())
            continue
        numel, bits = int(np.prod(shape)), entry["bits"]
        mask = None
        if entry.get("mask"):
            mask = np.unpackbits(np.frombuffer(chunks.pop(0), dtype=np.uint8), bitorder="little")[:numel].astype(bool)
        count = int(mask.sum()) if mask is not None else numel
        if bits < 32:
            codes = _unpack_bits(chunks[0], bits, count).astype(np.float32) - (2 ** (bits - 1) - 1)
            scales = np.frombuffer(chunks[1], dtype=np.float32)
            rows = np.repeat(np.arange(shape[0]), numel // shape[0])
            values = codes * scales[rows[mask] if mask is not None else rows]
        else:
            values = np.frombuffer(chunks[0], dtype=np.float32)
        weight = np.zeros(numel, dtype=np.float32)
        weight[mask if mask is not None else slice(None)] = values
        state[entry["name"]] = torch.from_numpy(weight.reshape(shape))
    if offset != len(blob):
        raise AmcError(f"{path} is truncated or has trailing bytes; export it again")
    return state
