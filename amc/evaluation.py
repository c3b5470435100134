"""`amc evaluate`: accuracy and hardware cost of a teacher or student checkpoint."""

from __future__ import annotations

import statistics
import warnings

import torch.nn as nn
from tqdm.auto import tqdm

from amc.checkpoint import load_checkpoint
from amc.config import EvaluateConfig
from amc.data import DataSplits, load_dataset
from amc.device import resolve_device
from amc.measured_cost import count_macs, count_params, flop_counter_macs, measure_latency, model_device, size_bytes
from amc.student import model_from_checkpoint
from amc.training import evaluate_accuracy


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


def load_data_for(blob: dict, dataset: str | None, data_dir: str | None, seed: int | None) -> DataSplits:
    """The data a checkpoint was trained on, unless the user names another."""
    stored = blob.get("dataset", {})
    name = dataset or stored.get("name")
    if data_dir is None and name == stored.get("name") and stored.get("source"):
        data_dir = stored["source"]
    if seed is None:
        seed = blob.get("train_config", {}).get("seed", 0)
    options = {}
    if name == "imagefolder" == stored.get("name"):  # decode the images as the teacher saw them
        options = stored.get("options", {"image_size": 32, "channels": 3})  # older checkpoints: 32x32 RGB
    return load_dataset(name, data_dir, seed=seed, **options)


def alternating_speedup(
    model: nn.Module,
    reference: nn.Module,
    input_shape,
    batch_size: int,
    *,
    rounds: int = 4,
    repeats: int = 10,
    threads: int | None = None,
) -> float:
    """Reference latency over model latency, each the median of `rounds` timings taken alternately in this
    process, so that drift of a shared machine hits both alike."""
    model_ms, reference_ms = [], []
    for _ in range(rounds):
        reference_ms.append(measure_latency(reference, input_shape, batch_size, threads=threads, repeats=repeats))
        model_ms.append(measure_latency(model, input_shape, batch_size, threads=threads, repeats=repeats))
    return statistics.median(reference_ms) / statistics.median(model_ms)


def evaluate_checkpoint(cfg: EvaluateConfig) -> dict:
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.model)
    model = model_from_checkpoint(blob).to(device)
    data = load_data_for(blob, cfg.dataset, cfg.data_dir, cfg.seed)
    report = evaluate_report(model, data, latency_repeats=cfg.latency_repeats, threads=cfg.threads)
    if cfg.speedup_over:  # both timed here, alternately, on one device with one thread setting
        reference = model_from_checkpoint(load_checkpoint(cfg.speedup_over)).to(device)
        for batch in (1, 128):
            repeats = cfg.latency_repeats if batch == 1 else max(5, cfg.latency_repeats // 2)
            report[f"speedup_b{batch}"] = alternating_speedup(
                model, reference, data.input_shape, batch, repeats=repeats, threads=cfg.threads
            )  # fmt: skip
    return report
