"""int8 students as runtimes run them: a static-quantized ONNX file (QDQ, per-channel int8 weights, per-tensor
activations calibrated on training images), made by ONNX Runtime's quantization tool. OpenVINO runs the same file.

Activations are uint8 (U8S8) or int8 (S8S8). Which one is fast depends on the runtime and the CPU (ONNX Runtime
ran S8S8 slower than fp32 on a VNNI Xeon, U8S8 1.7x faster), so `ACTIVATION_TYPES` is a choice, and
`amc.deploy.deployment.fastest_activation_type` measures it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amc.deploy.runtimes import require
from amc.errors import AmcError

ACTIVATION_TYPES = ("uint8", "int8")


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over an array of images."""

    def __init__(self, name: str, images: np.ndarray, batch_size: int):
        self._batches = iter([{name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def module_path(node_name: str) -> str:
    """The PyTorch module an exported node came from: '/layer2/layer2.0/downsample/downsample.0/Conv' ->
    'layer2.0.downsample.0' (torch.onnx names each node by its module scopes, then its op)."""
    path, last = "", ""
    for scope in node_name.strip("/").split("/")[:-1]:
        if last and scope.startswith(last + "."):
            path += scope[len(last) :]
        else:
            path = f"{path}.{scope}" if path else scope
        last = scope
    return path


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    *,
    activation_type: str = "uint8",
    float_layers: Sequence[str] = (),
) -> Path:
    """Write `out_path`: `fp32_path` statically quantized to QDQ int8 (per-channel weights), with activation
    ranges from `calibration` (normalised float32 images, N x C x H x W; MinMax). The conv/linear modules named
    in `float_layers` stay in fp32 (mixed precision)."""
    if activation_type not in ACTIVATION_TYPES:
        raise AmcError(f"unknown int8 activation type {activation_type!r}; choose uint8 or int8")
    if len(calibration) == 0:
        raise AmcError("int8 calibration needs at least one image")
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs a hint per run to the root logger
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        import onnx

        graph = onnx.load(str(prepared), load_external_data=False).graph
        excluded = [node.name for node in graph.node if module_path(node.name) in set(float_layers)]
        missing = set(float_layers) - {module_path(name) for name in excluded}
        if missing:
            raise AmcError(f"no exported layer is named {sorted(missing)[0]!r}; float_layers takes conv/linear "
                           "module names, e.g. layer1.0.conv1")  # fmt: skip
        name = graph.input[0].name
        quantize_static(
            str(prepared), str(out_path), _Batches(name, calibration.astype(np.float32), 32),
            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
        )  # fmt: skip
    return Path(out_path)
