"""`amc profile-latency`: build a latency table, eager PyTorch or measured in a runtime, for latency budgets."""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn as nn

from amc.checkpoint import input_shape_of, load_checkpoint
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy, model_from_checkpoint
from amc.config import device_field, doc
from amc.cost.latency import build_latency_table
from amc.cost.measured import measure_latency
from amc.cost.predicted import CostModel
from amc.cost.runtime_latency import build_runtime_table
from amc.deploy.runtimes import Target, require
from amc.deploy.timing import example_batch
from amc.device import resolve_device
from amc.errors import AmcError
from amc.files import refuse_overwriting_inputs
from amc.models import create_model, trust_named_model


@dataclass
class ProfileLatencyConfig:
    """Build a latency table for a teacher in the runtime it is deployed to, and report its error on random
    students timed end to end there."""

    model: str = doc("teacher.pt", "checkpoint, or a registry name with --input-shape", positional=True)
    out: str = doc("lut.json", "latency table to write")
    input_shape: str = doc("3,32,32", "input shape C,H,W when MODEL is a registry name")
    runtime: str = doc("eager", "eager (layers timed alone in PyTorch), onnxruntime or openvino (whole students)")
    runtime_precision: str = doc("fp32", "onnxruntime/openvino: fp32 or int8 (static QDQ)")
    batch_size: int = doc(1, "batch size the table is built for")
    threads: int = doc(1, "CPU threads used for every measurement")
    grid_points: int = doc(6, "eager: channel-count grid points per dimension")
    students: int = doc(90, "onnxruntime/openvino: random students timed to fit the table")
    check: int = doc(30, "random students to measure prediction error on (eager: 0 skips)")
    seed: int = doc(0, "seed of the random students")
    device: str = device_field()


def profile_latency_command(cfg: ProfileLatencyConfig) -> dict:
    refuse_overwriting_inputs(cfg.out, model=cfg.model)
    device = resolve_device(cfg.device)
    if Path(cfg.model).is_file():
        blob = load_checkpoint(cfg.model)
        model, shape = model_from_checkpoint(blob), input_shape_of(blob)
    else:
        trust_named_model(cfg.model)
        try:
            shape = tuple(int(v) for v in cfg.input_shape.split(","))
        except ValueError:
            raise AmcError(f"--input-shape {cfg.input_shape} is not C,H,W; write it like 3,32,32") from None
        model = create_model(cfg.model).eval()
    if cfg.runtime != "eager" or cfg.runtime_precision != "fp32":
        return _profile_runtime(cfg, model.cpu(), shape)
    model = model.to(device)
    table = build_latency_table(
        model, shape, batch_size=cfg.batch_size, threads=cfg.threads, grid_points=cfg.grid_points
    )
    errors = []
    if cfg.check:
        from tqdm.auto import tqdm

        cost_model = CostModel(model, shape)
        rng = np.random.default_rng(cfg.seed)
        for _ in tqdm(range(cfg.check), desc="checking predictions", dynamic_ncols=True):
            keep = {u.name: float(rng.uniform(0.2, 1.0)) for u in cost_model.units}
            student = apply_policy(model, CompressionPolicy(keep_ratios=keep), shape, validate=False)
            measured = measure_latency(student, shape, cfg.batch_size, threads=cfg.threads, repeats=30)
            errors.append(abs(table.predict_model(student) - measured) / measured)
    table.metadata["prediction_error"] = {
        "students": len(errors),
        "median": statistics.median(errors) if errors else None,
        "max": max(errors) if errors else None,
    }
    table.save(cfg.out)
    return {
        "out": cfg.out,
        "device": str(device),
        "teacher_ms": table.teacher_ms,
        "layers": len(table.layers),
        "median_error": table.metadata["prediction_error"]["median"],
        "max_error": table.metadata["prediction_error"]["max"],
    }


ERROR_AIM = (0.05, 0.15)
"""What a runtime table should reach on held-out students: median and 90th-percentile relative error."""


def warn_if_inaccurate(check: dict, students: int) -> None:
    """A warning (printed after the table is written) when the held-out error misses ERROR_AIM: a budget in
    this table would be met only as far as the table is right."""
    median, p90 = check.get("median_error"), check.get("p90_error")
    if median is None or (median <= ERROR_AIM[0] and p90 <= ERROR_AIM[1]):
        return
    warnings.warn(f"the table's error on {check['students']} held-out students is {median:.0%} median and "
                  f"{p90:.0%} at the 90th percentile (aim: {ERROR_AIM[0]:.0%} and {ERROR_AIM[1]:.0%}); time it on an "
                  f"idle machine, or with more --students than {students}", stacklevel=2)  # fmt: skip


def _profile_runtime(cfg: ProfileLatencyConfig, model: nn.Module, shape) -> dict:
    """A runtime table: random students timed end to end in the runtime, a fitted model, its held-out error.
    int8 students are calibrated on random images: the kernels a runtime picks do not depend on the ranges."""
    target = Target(cfg.runtime, cfg.runtime_precision, cfg.batch_size, cfg.threads)
    require(cfg.runtime)
    calibration = example_batch(shape, 64, seed=cfg.seed) if target.precision == "int8" else None
    table = build_runtime_table(model, shape, target, calibration=calibration, students=cfg.students,
                                check=cfg.check, seed=cfg.seed)  # fmt: skip
    table.save(cfg.out)
    check = table.metadata["check"]
    warn_if_inaccurate(check, cfg.students)
    return {
        "out": cfg.out, **table.target, "teacher_ms": table.teacher_ms, "round_to": table.round_to,
        "channel_block": table.block,
        "activation_type": table.activation_type, "median_error": check["median_error"],
        "p90_error": check["p90_error"], "max_error": check["max_error"],
    }  # fmt: skip
