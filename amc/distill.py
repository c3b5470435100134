"""Knowledge distillation (Hinton et al. 2015) and BatchNorm recalibration (EagleEye, ECCV 2020)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.config import doc
from amc.data import DataSplits
from amc.device import resolve_device
from amc.distributed import ONE_PROCESS, Ranks, barrier, wrap
from amc.errors import AmcError
from amc.precision import autocast, resolve_precision
from amc.training import LossFn, evaluate_accuracy, make_optimizer, train_epoch


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 0.9,
    temperature: float = 4.0,
    mse_weight: float = 0.0,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y) [+ mse_weight * MSE(s, t)]."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    loss = alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits.float(), labels)
    if mse_weight:
        loss = loss + mse_weight * F.mse_loss(student_logits.float(), teacher_logits.float())  # N2N's logit loss
    return loss


def distillation_loss(teacher: nn.Module, alpha: float, temperature: float, mse_weight: float = 0.0) -> LossFn:
    """A training loss that asks the (frozen, eval-mode) teacher for soft targets on each batch."""
    teacher.eval()

    def loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(images)
        return kd_loss(logits, teacher_logits, labels, alpha=alpha, temperature=temperature, mse_weight=mse_weight)

    return loss


def recalibration_batches(data: DataSplits, batches: int = 20, batch_size: int = 128, seed: int = 0) -> list:
    """The training images BN recalibration runs on: `batches` seeded, shuffled, unaugmented batches."""
    loader = data.batches("train", batch_size, generator=torch.Generator().manual_seed(seed))
    loader.shuffle = True
    return [x for x, _ in itertools.islice(loader, batches)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, data: DataSplits, batches: int = 20, batch_size: int = 128, seed: int = 0, precision: str = "fp32"
) -> nn.Module:
    """Re-estimate BatchNorm running statistics from `batches` training batches (no augmentation)."""
    return recalibrate_bn_on(model, recalibration_batches(data, batches, batch_size, seed), precision)


@torch.no_grad()
def recalibrate_bn_on(model: nn.Module, images: Iterable[torch.Tensor], precision: str = "fp32") -> nn.Module:
    """Re-estimate BatchNorm running statistics from batches of images.

    Uses a cumulative average while it runs and restores each layer's momentum afterwards, so later
    fine-tuning behaves normally.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    try:
        with autocast(precision, device):
            for x in images:
                model(x.to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return model


@dataclass
class FinetuneSettings:
    """How a student is fine-tuned against its teacher."""

    epochs: int = doc(15, "KD fine-tuning epochs (ignored when --steps is set)")
    steps: int | None = doc(None, "fine-tune for this many batches instead of whole epochs")
    batch_size: int = doc(128, "batch size")
    lr: float = doc(0.05, "initial learning rate, cosine-annealed to 0")
    momentum: float = doc(0.9, "Nesterov momentum")
    weight_decay: float = doc(5e-4, "weight decay")
    alpha: float = doc(0.9, "weight of the soft-target KL term; 1 - alpha weighs cross-entropy")
    temperature: float = doc(4.0, "softmax temperature T of the soft targets")
    mse_weight: float = doc(0.0, "weight of N2N's MSE between student and teacher logits")
    precision: str = doc("auto", "auto (bf16 where native), bf16 or fp32 for training")
    seed: int = doc(0, "seed for shuffling and augmentation")

    def check(self) -> None:
        if (self.steps if self.steps is not None else self.epochs) < 1:
            raise AmcError("fine-tuning would run no steps; set --epochs or --steps above 0")


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    data: DataSplits,
    settings: FinetuneSettings,
    *,
    writer=None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    resume_state: dict | None = None,
    device: torch.device | None = None,
    show_progress: bool = True,
    ranks: Ranks = ONE_PROCESS,
) -> dict:
    """KD fine-tune `student` in place. `on_epoch_end(epoch, state)` gets a resumable state every epoch. Under
    torchrun (`ranks`), every rank trains its share of each batch and only rank 0 evaluates; pass `writer` and
    `on_epoch_end` on rank 0 only."""
    settings.check()
    device = device or resolve_device()
    settings.precision = resolve_precision(settings.precision, device)
    student.to(device)
    teacher.to(device).eval()
    trained = wrap(student, ranks, device)
    loss_fn = distillation_loss(teacher, settings.alpha, settings.temperature, settings.mse_weight)
    steps_per_epoch = len(data.batches("train", settings.batch_size, shard=ranks.shard))
    total_steps = settings.steps or settings.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = make_optimizer(student, settings.lr, settings.momentum, settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    generator = torch.Generator().manual_seed(settings.seed)
    start_epoch, history = 0, []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        generator.set_state(resume_state["generator"])
        start_epoch, history = resume_state["epoch"], resume_state["history"]
    started = time.time() - (history[-1]["seconds"] if history else 0.0)
    for epoch in range(start_epoch, epochs):
        remaining = total_steps - epoch * steps_per_epoch
        stats = train_epoch(
            trained,
            data,
            loss_fn,
            optimizer,
            scheduler,
            batch_size=settings.batch_size,
            precision=settings.precision,
            generator=generator,
            device=device,
            max_steps=min(steps_per_epoch, remaining),
            desc=f"KD epoch {epoch + 1}/{epochs}",
            progress=show_progress,
            ranks=ranks,
        )
        val = (
            evaluate_accuracy(student, data, "val", precision=settings.precision, device=device)
            if ranks.is_main
            else None
        )
        history.append({"epoch": epoch + 1, **stats, "val_accuracy": val, "seconds": time.time() - started})
        if writer is not None:
            writer.add_scalar("finetune/loss", stats["loss"], epoch + 1)
            writer.add_scalar("finetune/val_accuracy", val, epoch + 1)
            writer.add_scalar("finetune/lr", optimizer.param_groups[0]["lr"], epoch + 1)
            writer.flush()
        if on_epoch_end is not None:
            on_epoch_end(
                epoch + 1,
                {
                    "epoch": epoch + 1,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "history": history,
                    "settings": asdict(settings),
                },
            )
        barrier(ranks)  # the other ranks wait for rank 0's evaluation and checkpoint
    return {"val_accuracy": history[-1]["val_accuracy"], "epochs": epochs, "seconds": history[-1]["seconds"]}
