"""A QDQ ONNX file's graph run in PyTorch: the fake-quantized reference its int8 kernels are held to.

Activations go through QuantizeLinear -> DequantizeLinear as float tensors (quantize, clamp, dequantize with the
file's scales and zero points); weights and biases are dequantized per channel; every other op runs in float32.
Quantization rounds x / scale half to even, as ONNX specifies. torch.fake_quantize_per_tensor_affine multiplies by
1 / scale instead, which moves values that sit on a rounding boundary by one step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def _fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    info = torch.iinfo(zero_point.dtype)
    zp = zero_point.float()
    return (torch.clamp(torch.round(x / scale) + zp, info.min, info.max) - zp) * scale


def _dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * q.dim()
    if scale.numel() > 1:
        shape[axis] = -1
    return ((q.double() - zero_point.double().reshape(shape)) * scale.double().reshape(shape)).float()


def _conv(x, weight, bias, attrs):
    pads = attrs.get("pads", [0] * 4)
    if pads[:2] != pads[2:]:
        raise NotImplementedError("asymmetric padding")
    return F.conv2d(x, weight, bias, stride=attrs.get("strides", 1), padding=pads[:2],
                    dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))  # fmt: skip


def _gemm(a, b, c, attrs):
    b = b.t() if attrs.get("transB", 0) else b
    return a @ b + (0 if c is None else c)


OPS = {
    "Conv": lambda ins, attrs: _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs),
    "Gemm": lambda ins, attrs: _gemm(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs),
    "Add": lambda ins, attrs: ins[0] + ins[1],
    "Relu": lambda ins, attrs: F.relu(ins[0]),
    "GlobalAveragePool": lambda ins, attrs: ins[0].mean(dim=(2, 3), keepdim=True),
    "Flatten": lambda ins, attrs: ins[0].flatten(attrs.get("axis", 1)),
}


@torch.no_grad()
def fake_quantized_outputs(path: str | Path, images: np.ndarray) -> np.ndarray:
    """The QDQ file at `path` run on `images` in PyTorch (see the module's docstring)."""
    model = onnx.load(str(path))
    values = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    values[model.graph.input[0].name] = torch.from_numpy(images)
    quantized = set()  # QuantizeLinear outputs, held as fake-quantized floats
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        ins = [values[name] for name in node.input]
        if node.op_type == "QuantizeLinear":
            out = _fake_quantize(ins[0], *ins[1:])
            quantized.add(node.output[0])
        elif node.op_type == "DequantizeLinear":
            out = ins[0] if node.input[0] in quantized else _dequantize(*ins, attrs.get("axis", 1))
        else:
            out = OPS[node.op_type](ins, attrs)
        values[node.output[0]] = out
    return values[model.graph.output[0].name].numpy()
