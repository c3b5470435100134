"""`amc evaluate`: accuracy and hardware cost of a teacher or student checkpoint."""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from amc.checkpoint import load_checkpoint
from amc.commands.common import load_data_for
from amc.compress.student import model_from_checkpoint
from amc.config import data_dir_field, device_field, doc
from amc.cost.measured import count_macs, count_params, flop_counter_macs, measure_latency, size_bytes
from amc.data import DataSplits
from amc.deploy.deployment import at_batch, calibration_images, deploy, runtime_accuracy, time_deployed
from amc.deploy.runtimes import Target, torch_threads
from amc.deploy.timing import time_alternated
from amc.device import model_device, resolve_device
from amc.input_check import check_model_takes
from amc.train.loop import evaluate_accuracy


def cost_report(model: nn.Module, input_shape, *, latency_repeats: int = 20, threads: int | None = None) -> dict:
    """MACs (checked against `torch.utils.flop_counter`), params, bytes and per-image latency at batch 1 and 128,
    timed on the model's device."""
    macs = count_macs(model, input_shape)
    checked = flop_counter_macs(model, input_shape)
    if abs(checked - macs) > 0.01 * max(macs, 1):
        warnings.warn(f"analytic MACs {macs} differ from torch.utils.flop_counter's {checked}", stacklevel=2)
    device = model_device(model)
    report = {"flops": macs, "params": count_params(model), "size_bytes": size_bytes(model), "device": str(device)}
    for batch in tqdm((1, 128), desc="latency", leave=False, dynamic_ncols=True):
        repeats, warmup = (latency_repeats, 5) if batch == 1 else (max(5, latency_repeats // 2), 3)
        report[f"latency_ms_b{batch}"] = measure_latency(
            model, input_shape, batch, threads=threads, repeats=repeats, warmup=warmup
        )
    return report


def evaluate_report(model: nn.Module, data: DataSplits, *, samples: int | None = None, **cost_kwargs) -> dict:
    """The keys every reporting command shares: accuracy, val_accuracy (on the first `samples` images of each
    split, default all), flops, params, size_bytes, latencies."""
    return {
        "accuracy": evaluate_accuracy(model, data, "test", limit=samples),
        "val_accuracy": evaluate_accuracy(model, data, "val", limit=samples),
        **cost_report(model, data.input_shape, **cost_kwargs),
    }


def alternating_speedup(
    model: nn.Module,
    reference: nn.Module,
    input_shape,
    batch_size: int,
    *,
    rounds: int | None = None,
    threads: int | None = None,
) -> float:
    """Reference latency over model latency in eager PyTorch on the models' device, timed alternately by
    `amc.deploy.timing.time_alternated` (400 runs each at batch 1, 40 at larger batches, unless `rounds` says)."""
    device = model_device(model)
    inputs = torch.randn(batch_size, *input_shape, device=device)

    def runner(m: nn.Module):
        @torch.no_grad()
        def run(x: torch.Tensor) -> None:
            m(x)
            if device.type == "cuda":  # CUDA runs asynchronously: wait before the clock is read
                torch.cuda.synchronize(device)

        return run

    model.eval()
    reference.eval()
    with torch_threads(threads or torch.get_num_threads()):
        timings = time_alternated({"model": runner(model), "reference": runner(reference)}, inputs, rounds=rounds)
    return timings["reference"].median_ms / timings["model"].median_ms


DEPLOYED_BATCHES = (1, 64)


def deployed_report(
    model: nn.Module,
    data: DataSplits,
    runtime: str,
    precision: str,
    *,
    threads: int = 1,
    reference: nn.Module | None = None,
    batches=DEPLOYED_BATCHES,
    rounds: int | None = None,
) -> dict:
    """Accuracy on the test split and per-image latency at each batch size, all measured in `runtime` at
    `precision`, with the target and CPU named. With a `reference` (e.g. the teacher) it is deployed alike and
    timed alternately with the model: `speedup_b<batch>`, and for int8 also `speedup_vs_fp32_b<batch>` over the
    reference in fp32."""
    shape = data.input_shape
    target = Target(runtime, precision, batches[0], threads)
    calibration = calibration_images(data) if precision == "int8" else None
    with tempfile.TemporaryDirectory() as folder:
        models = {"model": deploy(model, shape, target, folder, calibration=calibration)}
        if reference is not None:
            models["reference"] = deploy(reference, shape, target, folder, calibration=calibration, name="reference")
            if precision == "int8":
                fp32 = dataclasses.replace(target, precision="fp32")
                models["reference_fp32"] = deploy(reference, shape, fp32, folder, name="reference_fp32")
        report = {**target.describe(), "accuracy": runtime_accuracy(models["model"], data, "test")}
        report.pop("batch")
        report["activation_type"] = models["model"].activation_type
        for batch in tqdm(batches, desc=f"latency ({runtime} {precision})", leave=False, dynamic_ncols=True):
            timings = time_deployed({k: at_batch(d, batch) for k, d in models.items()}, shape, rounds=rounds)
            report[f"latency_ms_b{batch}"] = timings["model"].median_ms
            report[f"latency_iqr_b{batch}"] = timings["model"].spread
            if reference is not None:
                report[f"speedup_b{batch}"] = timings["reference"].median_ms / timings["model"].median_ms
            if "reference_fp32" in timings:
                report[f"speedup_vs_fp32_b{batch}"] = timings["reference_fp32"].median_ms / timings["model"].median_ms
    return report


def evaluate_checkpoint(cfg: EvaluateConfig) -> dict:
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.model)
    model = model_from_checkpoint(blob).to(device)
    reference = model_from_checkpoint(load_checkpoint(cfg.speedup_over)) if cfg.speedup_over else None  # read first
    data = load_data_for(blob, cfg.dataset, cfg.data_dir, cfg.seed, checkpoint=cfg.model)
    check_model_takes(model, data.input_shape, data.name)
    if cfg.runtime != "eager" or cfg.runtime_precision != "fp32":
        Target(cfg.runtime, cfg.runtime_precision)  # a bad name is one line before any work
        report = {
            "flops": count_macs(model, data.input_shape),
            "params": count_params(model),
            **deployed_report(model.cpu(), data, cfg.runtime, cfg.runtime_precision, threads=cfg.threads or 1,
                              reference=reference, rounds=cfg.rounds),
        }  # fmt: skip
        return report
    report = evaluate_report(model, data, latency_repeats=cfg.latency_repeats, threads=cfg.threads)
    if reference is not None:  # both timed here, alternately, on one device with one thread setting
        reference = reference.to(device)
        for batch in (1, 128):
            report[f"speedup_b{batch}"] = alternating_speedup(
                model, reference, data.input_shape, batch, rounds=cfg.rounds, threads=cfg.threads
            )
    return report


@dataclass
class EvaluateConfig:
    """Report accuracy, MACs, params, size and latency (on --device) of a checkpoint."""

    model: str = doc("teacher.pt", "teacher or student checkpoint", positional=True)
    dataset: str | None = doc(None, "data set name (default: the one stored in the checkpoint)")
    data_dir: str | None = data_dir_field("data folder or .tar.gz (default: the one stored in the checkpoint)")
    seed: int | None = doc(None, "val-split seed (default: the one the checkpoint was trained with)")
    latency_repeats: int = doc(20, "timed repeats per batch size (median reported)")
    threads: int | None = doc(None, "CPU threads for latency (default: torch's current setting)")
    device: str = device_field()
    speedup_over: str | None = doc(
        None, "a reference checkpoint (e.g. the teacher): both are timed alternately, adding speedup_b<batch>"
    )
    runtime: str = doc("eager", "where to measure: eager (PyTorch), onnxruntime or openvino (the exported model)")
    runtime_precision: str = doc("fp32", "onnxruntime/openvino: fp32, or int8 (static QDQ, calibrated on train images)")
    rounds: int | None = doc(
        None, "alternating timing rounds of --speedup-over and runtimes (default: 20 at batch 1, 10 above)"
    )
