"""A model as it runs where it is deployed: exported to ONNX, quantized to int8 if the target says so, compiled in
the target's runtime; and what is measured there (accuracy on a split, latency against a reference).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from amc.compress.export import write_onnx
from amc.data import DataSplits
from amc.deploy.int8 import ACTIVATION_TYPES, quantize_onnx
from amc.deploy.runtimes import Runner, Target, eager_runner, onnx_runner
from amc.deploy.timing import Timing, example_batch, time_alternated

CALIBRATION_IMAGES = 256
ACCURACY_BATCH = 250
"""Batch size of accuracy passes in a runtime (a larger batch than most targets', for speed; same numerics)."""


@dataclass
class Deployed:
    """A compiled model: `run` takes one batch of `target.batch` normalised images."""

    target: Target
    run: Runner
    onnx_path: Path | None = None
    activation_type: str | None = None
    """uint8 or int8 activations of an int8 model (None for fp32)."""


def calibration_images(data: DataSplits, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """The first `count` training images, normalised as the model sees them (no augmentation)."""
    images = [x for x, _ in data.batches("train", 256, limit=count)]
    return torch.cat(images).numpy().astype(np.float32)


def deploy(
    model: nn.Module,
    input_shape,
    target: Target,
    folder: str | Path,
    *,
    calibration: np.ndarray | None = None,
    activation_type: str = "auto",
    name: str = "model",
    float_layers: Sequence[str] = (),
) -> Deployed:
    """Export `model` into `folder` (`name.onnx`, and `name.int8.onnx` for int8) and compile it for `target`.
    int8 needs `calibration` images; `activation_type` auto times uint8 and int8 activations and keeps the
    faster; the conv/linear modules in `float_layers` stay fp32."""
    if target.runtime == "eager":
        return Deployed(target, eager_runner(model, target.threads))
    folder = Path(folder)
    fp32_path = folder / f"{name}.onnx"
    write_onnx(model, input_shape, fp32_path)
    if target.precision == "fp32":
        return Deployed(target, onnx_runner(fp32_path, target), fp32_path)
    if calibration is None:
        raise ValueError("an int8 deployment needs calibration images")
    if activation_type == "auto":
        activation_type = fastest_activation_type(fp32_path, input_shape, target, calibration)
    int8_path = quantize_onnx(fp32_path, folder / f"{name}.int8.onnx", calibration, activation_type=activation_type,
                              float_layers=float_layers)  # fmt: skip
    return Deployed(target, onnx_runner(int8_path, target), int8_path, activation_type)


def at_batch(deployed: Deployed, batch: int) -> Deployed:
    """The same deployed file compiled for another batch size."""
    if batch == deployed.target.batch:
        return deployed
    target = dataclasses.replace(deployed.target, batch=batch)
    if deployed.onnx_path is None:
        return dataclasses.replace(deployed, target=target)
    return dataclasses.replace(deployed, target=target, run=onnx_runner(deployed.onnx_path, target))


def fastest_activation_type(fp32_path: Path, input_shape, target: Target, calibration: np.ndarray) -> str:
    """uint8 or int8 activations, whichever runs this model faster in the target's runtime on this CPU."""
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ACTIVATION_TYPES:
            path = quantize_onnx(fp32_path, Path(tmp) / f"{kind}.onnx", calibration[:32], activation_type=kind)
            runners[kind] = onnx_runner(path, target)
        timings = time_alternated(runners, example_batch(input_shape, target.batch), rounds=4, warmup=5)
    return min(timings, key=lambda kind: timings[kind].median_ms)


def runtime_accuracy(deployed: Deployed, data: DataSplits, split: str = "test", *, limit: int | None = None) -> float:
    """Top-1 accuracy of the deployed model on a split, computed from the runtime's own outputs (the last batch
    is padded to the compiled batch size)."""
    batch = ACCURACY_BATCH
    run = at_batch(deployed, batch).run
    correct = total = 0
    for x, y in tqdm(data.batches(split, batch, limit=limit), desc=f"{split} accuracy ({deployed.target.runtime})",
                     leave=False, dynamic_ncols=True):  # fmt: skip
        images = x.numpy().astype(np.float32)
        padded = np.concatenate([images, np.zeros((batch - len(images), *images.shape[1:]), np.float32)])
        logits = run(padded)[: len(images)]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return correct / max(total, 1)


def time_deployed(models: dict[str, Deployed], input_shape, **protocol) -> dict[str, Timing]:
    """Per-image latency of several deployed models of one batch size, timed alternately (`amc.deploy.timing`)."""
    batches = {d.target.batch for d in models.values()}
    if len(batches) != 1:
        raise ValueError(f"models compiled for different batch sizes {sorted(batches)} cannot be timed together")
    inputs = example_batch(input_shape, batches.pop())
    return time_alternated({name: d.run for name, d in models.items()}, inputs, **protocol)
