"""File-level workflows behind the core `amc` subcommands: apply, baseline, finetune, profile-latency.

Each takes one typed config (which is also the subcommand's --help) and returns a dict for reporting.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch.nn as nn

from amc.baselines import global_pruning, random_policy, uniform
from amc.budget import Budget
from amc.checkpoint import load_checkpoint
from amc.config import ApplyConfig, BaselineConfig, ExportConfig, FinetuneConfig, FinetuneSettings, ProfileLatencyConfig
from amc.device import resolve_device
from amc.distill import finetune, recalibrate_bn
from amc.distributed import finish, start
from amc.errors import AmcError
from amc.evaluation import load_data_for
from amc.input_check import check_model_takes
from amc.latency import build_latency_table, load_latency_table, resolve_round_to
from amc.measured_cost import cost_ratios, measure_latency, size_bytes
from amc.models import create_model, trust_named_model
from amc.outputs import refuse_overwriting_inputs
from amc.policy import CompressionPolicy, model_fingerprint
from amc.predicted_cost import CostModel
from amc.runtime_latency import build_runtime_table
from amc.runtimes import Target, require
from amc.student import apply_policy, model_from_checkpoint, save_student, student_from_checkpoint
from amc.timing import example_batch
from amc.training import evaluate_accuracy


def input_shape_of(blob: dict) -> tuple[int, ...]:
    return tuple(blob["dataset"]["input_shape"])


def check_policy_matches(policy: CompressionPolicy, blob: dict, teacher: nn.Module, force: bool = False) -> None:
    """Refuse a policy written for another teacher; with `force`, accept a model of the same family
    (same number of classes, every named unit present), warn, and clear the policy's fingerprint so that
    `apply_policy` checks unit names only."""
    name = blob["arch"]["name"]
    if policy.num_classes is not None and policy.num_classes != blob["arch"]["num_classes"]:
        raise AmcError(f"policy is for {policy.num_classes} classes, the teacher has {blob['arch']['num_classes']}")
    mismatch = None
    if policy.architecture and policy.architecture != name:
        mismatch = f"policy is for {policy.architecture}, the teacher is {name}"
    elif policy.fingerprint and policy.fingerprint != model_fingerprint(teacher):
        mismatch = f"policy fingerprint {policy.fingerprint} does not match the teacher's {model_fingerprint(teacher)}"
    if mismatch is None:
        return
    if not force:
        raise AmcError(f"{mismatch}; use a policy searched on this teacher, or --force for a model of its family")
    warnings.warn(f"{mismatch}; applying anyway (--force): units the policy does not name are kept whole",
                  stacklevel=2)  # fmt: skip
    policy.fingerprint = ""


def search_settings(policy: CompressionPolicy) -> dict:
    """How a search built its students (BN recalibration, precision, reconstruction), from the policy."""
    return policy.metadata.get("search_config") or {}


# ----------------------------------------------------------------------------- apply


def apply_command(cfg: ApplyConfig) -> dict:
    refuse_overwriting_inputs(cfg.out, teacher=cfg.teacher, policy=cfg.policy)
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.teacher)
    teacher = model_from_checkpoint(blob).to(device)
    policy = CompressionPolicy.load(cfg.policy)
    check_policy_matches(policy, blob, teacher, force=cfg.force)
    searched = search_settings(policy)
    batches = cfg.recalibrate_bn if cfg.recalibrate_bn is not None else searched.get("recalibrate_batches", 0)
    precision = cfg.recalibrate_precision or searched.get("precision", "fp32")
    refit = cfg.reconstruct if cfg.reconstruct is not None else searched.get("reconstruct", False)
    shape = input_shape_of(blob)
    data = load_data_for(blob, None, cfg.data_dir, None) if batches or refit else None
    student = apply_policy(teacher, policy, shape, reconstruction_data=data if refit else None)
    CostModel(teacher, shape).check_student(student, policy)
    if batches:
        recalibrate_bn(student, data, batches=batches, precision=precision)
    result = cost_ratios(student, teacher, shape)
    save_student(cfg.out, student, blob, policy, metrics=result)
    return {"out": cfg.out, "device": str(device), "recalibrate_bn": batches, "recalibrate_precision": precision,
            **result}  # fmt: skip


# ----------------------------------------------------------------------------- baseline


def baseline_command(cfg: BaselineConfig) -> dict:
    refuse_overwriting_inputs(cfg.out, teacher=cfg.teacher)
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.teacher)
    teacher = model_from_checkpoint(blob).to(device)
    budget = Budget(flops=cfg.flops, params=cfg.params, size=cfg.size, latency=cfg.latency)
    table = load_latency_table(cfg.latency_table, cfg.runtime, cfg.runtime_precision) if cfg.latency_table else None
    round_to = resolve_round_to(cfg.round_to, table)
    cost_model = CostModel(teacher, input_shape_of(blob))
    if table is not None:
        cost_model.with_latency(table)
    if cfg.method == "uniform":
        policy = uniform(cost_model, budget, round_to=round_to)
    elif cfg.method == "random":
        policy = random_policy(cost_model, budget, np.random.default_rng(cfg.seed), round_to=round_to)
    elif cfg.method == "global":
        data = load_data_for(blob, None, cfg.data_dir, None) if cfg.importance == "taylor" else None
        policy = global_pruning(teacher, input_shape_of(blob), cost_model, budget, importance=cfg.importance,
                                max_pruning_ratio=cfg.max_pruning_ratio, data=data, round_to=round_to)  # fmt: skip
    else:
        raise AmcError(f"unknown baseline {cfg.method!r}; use uniform, random or global")
    predicted = cost_model.policy_ratios(policy)
    policy.architecture = blob["arch"]["name"]
    policy.num_classes = blob["arch"]["num_classes"]
    policy.fingerprint = model_fingerprint(teacher)
    policy.metadata.update({"budget": dict(budget.items()), "predicted": predicted, "seed": cfg.seed})
    policy.save(cfg.out)
    return {"out": cfg.out, **{f"{k}_ratio": v for k, v in predicted.items()}}


# ----------------------------------------------------------------------------- finetune


def finetune_command(cfg: FinetuneConfig) -> dict | None:
    """Under torchrun every rank trains its share (amc/distributed.py); rank 0 alone writes and returns."""
    from torch.utils.tensorboard import SummaryWriter

    refuse_overwriting_inputs(cfg.out, teacher=cfg.teacher, student=cfg.student)
    cfg.check()  # before anything loads
    ranks, device = start(cfg.device, cfg.batch_size)
    teacher_blob = load_checkpoint(cfg.teacher)
    teacher = model_from_checkpoint(teacher_blob)
    source = cfg.out if cfg.resume else cfg.student
    student_blob = load_checkpoint(source)
    if student_blob.get("kind") != "student":
        raise AmcError(f"{source} is not a student checkpoint; create one with `amc apply`")
    if student_blob["structure"]["teacher_fingerprint"] != model_fingerprint(teacher):
        raise AmcError(f"{source} was not compressed from {cfg.teacher}; pass the teacher it came from")
    student = student_from_checkpoint(student_blob)
    resume_state = student_blob.get("train_state") if cfg.resume else None
    if cfg.resume and resume_state is None:
        raise AmcError(f"{cfg.out} holds a finished fine-tune; run again without --resume")
    data = load_data_for(teacher_blob, None, cfg.data_dir, None)
    check_model_takes(student, data.input_shape, data.name)
    settings = FinetuneSettings(**{k: getattr(cfg, k) for k in FinetuneSettings.__dataclass_fields__})
    before = student_blob["metrics"].get("accuracy_before_finetune")
    if before is None and ranks.is_main:
        before = evaluate_accuracy(student, data, "test")
    policy = CompressionPolicy.from_dict(student_blob["policy"])
    writer = SummaryWriter(cfg.tb_dir or str(Path(cfg.out).with_suffix(".tb"))) if ranks.is_main else None

    def save(epoch: int, state: dict) -> None:
        save_student(
            cfg.out,
            student,
            teacher_blob,
            policy,
            metrics={"accuracy_before_finetune": before, "epoch": epoch},
            train_state=state,
        )

    stats = finetune(student, teacher, data, settings, writer=writer, on_epoch_end=save if ranks.is_main else None,
                     resume_state=resume_state, device=device, ranks=ranks)  # fmt: skip
    if not ranks.is_main:
        finish(ranks)
        return None
    writer.close()
    student = student.cpu()
    result = {
        "accuracy_before_finetune": before,
        "accuracy": evaluate_accuracy(student, data, "test"),
        "val_accuracy": evaluate_accuracy(student, data, "val"),
        "teacher_accuracy": teacher_blob.get("metrics", {}).get("accuracy"),
        "finetune_seconds": stats["seconds"],
        "world_size": ranks.world_size,
        "settings": asdict(settings),
    }
    save_student(cfg.out, student, teacher_blob, policy, metrics=result)
    finish(ranks)
    return result


# ----------------------------------------------------------------------------- profile-latency


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
    return {
        "out": cfg.out, **table.target, "teacher_ms": table.teacher_ms, "round_to": table.round_to,
        "channel_block": table.block,
        "activation_type": table.activation_type, "median_error": check["median_error"],
        "p90_error": check["p90_error"], "max_error": check["max_error"],
    }  # fmt: skip


# ----------------------------------------------------------------------------- export


def export_command(cfg: ExportConfig) -> dict:
    import torch

    from amc.export import FORMATS, bake, export_onnx, export_torchscript, load_packed, relative_difference, save_packed

    if cfg.format not in FORMATS:
        raise AmcError(f"unknown export format {cfg.format!r}; choose one of {', '.join(FORMATS)}")
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.student)
    model = model_from_checkpoint(blob).cpu().eval()
    shape = input_shape_of(blob)
    suffix = {"torchscript": ".ts", "onnx": ".onnx", "packed": ".amcpack"}[cfg.format]
    out = Path(cfg.out or Path(cfg.student).with_suffix(suffix))
    refuse_overwriting_inputs(out, student=cfg.student)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"out": str(out), "format": cfg.format, "checked_on": str(device)}
    tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed: no half-written file at `out`
    try:
        if cfg.format == "torchscript":
            diff = export_torchscript(model, shape, tmp, device)
        elif cfg.format == "onnx":
            diff = export_onnx(model, shape, tmp, device)
        else:
            written = save_packed(model, tmp)
            baked = bake(model)
            baked.load_state_dict(load_packed(tmp))
            x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1)).to(device)
            with torch.no_grad():
                diff = relative_difference(baked.to(device)(x).cpu(), model.to(device)(x).cpu())
            model = model.cpu()
            reported = size_bytes(model)
            result.update(size_bytes_reported=reported, bytes_over_reported=written / reported - 1.0)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    result["bytes"] = out.stat().st_size
    result["relative_diff"] = diff
    if diff is None:
        result["check"] = "skipped: install the onnx package to compare outputs"
    elif diff > cfg.tolerance:
        raise AmcError(f"{out} was written but its outputs differ from PyTorch's by {diff:.2e} of the largest output "
                       f"(> --tolerance {cfg.tolerance:g}); report the model, or raise --tolerance")  # fmt: skip
    return result
