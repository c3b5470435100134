"""`amc finetune`: KD fine-tune a student against its teacher, checkpointed every epoch and resumable."""

from __future__ import annotations

from dataclasses import dataclass

from amc.checkpoint import load_checkpoint
from amc.commands.common import load_data_for
from amc.compress.policy import CompressionPolicy, model_fingerprint
from amc.compress.student import model_from_checkpoint, save_student, student_from_checkpoint
from amc.config import data_dir_field, device_field, doc, teacher_field
from amc.errors import AmcError
from amc.files import check_output_file, refuse_overwriting_inputs
from amc.input_check import check_model_takes
from amc.train.distill import finetune
from amc.train.distributed import finish, start
from amc.train.loop import evaluate_accuracy
from amc.train.settings import FinetuneSettings, teacher_optimizer


@dataclass
class FinetuneConfig(FinetuneSettings):
    """KD fine-tune a student against its teacher; checkpoint every epoch."""

    student: str = doc("student.pt", "student checkpoint (from `amc apply`)")
    teacher: str = teacher_field()
    out: str = doc("student_ft.pt", "fine-tuned student checkpoint; rewritten after every epoch")
    data_dir: str | None = data_dir_field()
    tb_dir: str | None = doc(None, "TensorBoard folder (default: <out without suffix>.tb)")
    device: str = device_field()


def finetune_command(cfg: FinetuneConfig, resume: bool = False) -> dict | None:
    """`resume`: continue from the checkpoint at `cfg.out`. Under torchrun every rank trains its share
    (amc/train/distributed.py); rank 0 alone writes and returns."""
    from torch.utils.tensorboard import SummaryWriter

    refuse_overwriting_inputs(cfg.out, teacher=cfg.teacher, student=cfg.student)
    cfg.check()  # before anything loads
    ranks, device = start(cfg.device, cfg.batch_size)
    teacher_blob = load_checkpoint(cfg.teacher)
    teacher = model_from_checkpoint(teacher_blob)
    source = cfg.out if resume else cfg.student
    student_blob = load_checkpoint(source)
    if student_blob.get("kind") != "student":
        raise AmcError(f"{source} is not a student checkpoint; create one with `amc apply`")
    if student_blob["structure"]["teacher_fingerprint"] != model_fingerprint(teacher):
        raise AmcError(f"{source} was not compressed from {cfg.teacher}; pass the teacher it came from")
    student = student_from_checkpoint(student_blob)
    resume_state = student_blob.get("train_state") if resume else None
    if resume and resume_state is None:
        raise AmcError(f"{cfg.out} holds a finished fine-tune; run again without --resume")
    data = load_data_for(teacher_blob, None, cfg.data_dir, None, checkpoint=cfg.teacher)
    check_model_takes(student, data.input_shape, data.name)
    settings = FinetuneSettings(**{k: getattr(cfg, k) for k in FinetuneSettings.__dataclass_fields__}).resolved(
        teacher_optimizer(teacher_blob)
    )
    before = student_blob["metrics"].get("accuracy_before_finetune")
    if before is None and ranks.is_main:
        before = evaluate_accuracy(student, data, "test")
    policy = CompressionPolicy.from_dict(student_blob["policy"])
    writer = SummaryWriter(cfg.tb_dir or str(check_output_file(cfg.out).with_suffix(".tb"))) if ranks.is_main else None

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
        "settings": stats["settings"],  # as run: precision resolved
    }
    save_student(cfg.out, student, teacher_blob, policy, metrics=result)
    finish(ranks)
    return result
