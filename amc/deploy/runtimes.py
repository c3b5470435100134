"""Where a model is deployed: a runtime (eager PyTorch, ONNX Runtime or OpenVINO on the CPU), a precision, a batch
size and a thread count, and the one function that turns an exported ONNX file into something to time and score.

Every runtime is held to one thread setting: torch's `set_num_threads`, ONNX Runtime's intra-op threads (inter-op
1, sequential), OpenVINO's `INFERENCE_NUM_THREADS` with the latency hint, fp32 inference precision (OpenVINO
would otherwise run bf16 on CPUs that have it, which is not the fp32 the user asked for) and no pinning to cores.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from amc.device import cpu_flags
from amc.errors import AmcError

RUNTIMES = ("eager", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")
_PINS = {"onnxruntime": "onnxruntime==1.32.0", "openvino": "openvino==2026.4.1"}
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
"""The CPU flags that decide which kernels a runtime picks (fp32 width, int8 dot products, bf16, AMX)."""

Runner = Callable[[np.ndarray], np.ndarray]
"""Runs one batch (float32, NCHW) and returns the logits."""


@dataclass(frozen=True)
class Target:
    """The deployed model's setting: a latency or accuracy figure means nothing without all four."""

    runtime: str = "onnxruntime"
    precision: str = "fp32"
    batch: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise AmcError(f"unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if self.precision not in PRECISIONS:
            raise AmcError(f"unknown runtime precision {self.precision!r}; choose fp32 or int8")
        if self.runtime == "eager" and self.precision != "fp32":
            raise AmcError("eager PyTorch runs fp32 only; deploy int8 through onnxruntime or openvino")
        if self.batch < 1 or self.threads < 1:
            raise AmcError(f"batch {self.batch} and threads {self.threads} must be at least 1")

    def describe(self) -> dict:
        """The target plus the runtime's version and the CPU: what every figure is stored beside."""
        return {**asdict(self), "runtime_version": runtime_version(self.runtime), **describe_cpu()}

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision} b{self.batch} t{self.threads}"


def require(runtime: str):
    """The runtime's Python module, or one line saying how to install it."""
    if runtime == "eager":
        return torch
    try:
        return importlib.import_module(runtime)
    except ImportError:
        raise AmcError(
            f"{runtime} is not installed; `pip install '{_PINS[runtime]}'` (or `pip install -e '.[deploy]'`)"
        ) from None


def runtime_version(runtime: str) -> str:
    module = require(runtime)
    return str(getattr(module, "__version__", "unknown")).split("-")[0]


@functools.cache
def describe_cpu() -> dict:
    """The CPU's model name and the flags in CPU_FEATURES it has."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        name = names[0] if names else name
    flags = cpu_flags()
    return {"cpu": name, "cpu_flags": [f for f in CPU_FEATURES if f in flags]}


@contextlib.contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def eager_runner(model: nn.Module, threads: int) -> Runner:
    """The PyTorch module itself, on the CPU, in eval mode, with `threads` threads while it runs."""
    model = model.cpu().eval()

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        with torch_threads(threads):
            return model(torch.from_numpy(x)).numpy()

    return run


def openvino_compiled(onnx_path: str | Path, target: Target, *, pinned: bool = False):
    """The ONNX file compiled by OpenVINO for the CPU, at the target's batch and threads. Unpinned by default:
    OpenVINO's own default pins its threads to cores, and two processes timing at once (parallel workers, two row
    jobs) then share one core (experiments/results/pinning.md)."""
    ov = require("openvino")
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    dims = model.input(0).get_partial_shape()  # the exported batch axis is dynamic: fix it for the kernels
    model.reshape([target.batch, *(dims[i].get_length() for i in range(1, dims.rank.get_length()))])
    return core.compile_model(model, "CPU", {
        "INFERENCE_NUM_THREADS": target.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
        "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": pinned,
    })  # fmt: skip


def onnx_runner(onnx_path: str | Path, target: Target) -> Runner:
    """Compile an ONNX file in the target's runtime with its thread setting."""
    if target.runtime == "onnxruntime":
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = target.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if target.runtime == "openvino":
        request = openvino_compiled(onnx_path, target).create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            if x.shape[0] != target.batch:
                raise AmcError(f"an OpenVINO model compiled for batch {target.batch} was given {x.shape[0]}")
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        return run
    raise AmcError("eager PyTorch runs a module, not an ONNX file; use eager_runner")
