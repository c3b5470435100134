"""`amc apply`: build the student a policy describes from its teacher, bit for bit the same every time."""

from __future__ import annotations

from dataclasses import dataclass

from amc.checkpoint import input_shape_of, load_checkpoint
from amc.commands.common import check_policy_matches, load_data_for, search_settings
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy, model_from_checkpoint, save_student
from amc.config import data_dir_field, device_field, doc, teacher_field
from amc.cost.measured import cost_ratios
from amc.cost.predicted import CostModel
from amc.device import resolve_device
from amc.files import refuse_overwriting_inputs
from amc.train.distill import recalibrate_bn


@dataclass
class ApplyConfig:
    """Apply a compression policy to a teacher and save the student (a search's policy reproduces its
    student.pt exactly, BatchNorm recalibration included)."""

    teacher: str = teacher_field()
    policy: str = doc("policy.json", "policy JSON (from `amc baseline` or `amc search`)")
    out: str = doc("student.pt", "student checkpoint to write")
    recalibrate_bn: int | None = doc(
        None, "re-estimate BatchNorm statistics from this many training batches (default: as the search did, else 0)"
    )
    recalibrate_precision: str | None = doc(None, "bf16 or fp32 for recalibration (default: as the search did)")
    reconstruct: bool | None = doc(None, "refit layers that lost inputs by least squares (default: as the search)")
    force: bool = doc(False, "apply a policy searched on another model of the same family (warns)")
    data_dir: str | None = data_dir_field("data for recalibration and reconstruction (default: the teacher's)")
    device: str = device_field()


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
    data = load_data_for(blob, None, cfg.data_dir, None, checkpoint=cfg.teacher) if batches or refit else None
    student = apply_policy(teacher, policy, shape, reconstruction_data=data if refit else None)
    CostModel(teacher, shape).check_student(student, policy)
    if batches:
        recalibrate_bn(student, data, batches=batches, precision=precision)
    result = cost_ratios(student, teacher, shape)
    save_student(cfg.out, student, blob, policy, metrics=result)
    return {"out": cfg.out, "device": str(device), "recalibrate_bn": batches, "recalibrate_precision": precision,
            **result}  # fmt: skip
