"""Knowledge distillation (Hinton et al. 2015) and BatchNorm recalibration (EagleEye, ECCV 2020)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.data import DataSplits
from amc.device import model_device, resolve_device
from amc.errors import AmcError
from amc.train.distributed import ONE_PROCESS, Ranks
from amc.train.loop import LossFn, fit, make_optimizer
from amc.train.precision import autocast, channels_last, memory_format, resolve_precision
from amc.train.settings import FinetuneSettings


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


def kd_stream(
    teacher: nn.Module, data: DataSplits, settings: FinetuneSettings, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, labels, teacher logits) of the first `settings.steps` batches of a fine-tune: the same seeded,
    augmented batches `finetune` draws, and the teacher's logits as its loss computes them."""
    precision = resolve_precision(settings.precision, device)
    generator = torch.Generator().manual_seed(settings.seed)
    teacher.to(device).eval()
    left = settings.steps
    while left > 0:  # one loader per epoch, as `fit` makes them, sharing the generator
        loader = data.batches("train", settings.batch_size, train=True, generator=generator,
                              channels_last=channels_last(precision, device))  # fmt: skip
        for x, y in itertools.islice(loader, min(left, len(loader))):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad(), autocast(precision, device):
                logits = teacher(x)
            yield x, y, logits  # outside the no_grad: a suspended generator must not hold the caller's grad mode
        left -= min(left, len(loader))


def kd_steps(
    student: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    settings: FinetuneSettings,
    device: torch.device,
) -> None:
    """`finetune`'s optimisation, in place, on ready (images, labels, teacher logits) batches and nothing else:
    no validation pass, no progress bar, no TensorBoard (the reward's brief fine-tune)."""
    settings = settings.resolved()  # the caller's choice of optimizer, else sgd
    precision = resolve_precision(settings.precision, device)
    total_steps = settings.steps
    student.to(device).train()
    optimizer = make_optimizer(student, settings.lr, settings.momentum, settings.weight_decay, settings.optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    for step, (x, y, teacher_logits) in enumerate(batches):
        with autocast(precision, device):
            loss = kd_loss(student(x), teacher_logits, y, alpha=settings.alpha, temperature=settings.temperature,
                           mse_weight=settings.mse_weight)  # fmt: skip
        if not torch.isfinite(loss):
            raise AmcError(f"training loss became {loss.item()} at step {step} of the reward's fine-tune")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def recalibration_batches(data: DataSplits, batches: int = 20, batch_size: int = 128, seed: int = 0) -> list:
    """The training images BN recalibration runs on: `batches` seeded, shuffled, unaugmented batches."""
    loader = data.batches("train", batch_size, generator=torch.Generator().manual_seed(seed))
    loader.shuffle = True
    return [x for x, _ in itertools.islice(loader, batches)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, data: DataSplits, batches: int = 20, batch_size: int = 128, seed: int = 0, precision: str = "fp32"
) -> nn.Module:
    """Re-estimate BatchNorm running statistics from `batches` training batches (no augmentation), images and model
    in the layout the search's evaluator uses, so that the same policy gives the same statistics."""
    layout = memory_format(precision, model_device(model))
    images = [x.contiguous(memory_format=layout) for x in recalibration_batches(data, batches, batch_size, seed)]
    return recalibrate_bn_on(model.to(memory_format=layout), images, precision)


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
    settings = settings.resolved()  # the caller's choice of optimizer, else sgd
    device = device or resolve_device()
    settings.precision = resolve_precision(settings.precision, device)
    student.to(device)
    teacher.to(device).eval()
    loss_fn = distillation_loss(teacher, settings.alpha, settings.temperature, settings.mse_weight)
    steps_per_epoch = len(data.batches("train", settings.batch_size, shard=ranks.shard))
    total_steps = settings.steps or settings.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = make_optimizer(student, settings.lr, settings.momentum, settings.weight_decay, settings.optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )

    def epoch_end(epoch: int, metrics: dict, state: dict) -> None:
        on_epoch_end(epoch, {**state, "settings": asdict(settings)})

    history = fit(
        student,
        data,
        loss_fn,
        optimizer,
        scheduler,
        epochs=epochs,
        total_steps=total_steps,
        batch_size=settings.batch_size,
        precision=settings.precision,
        generator=torch.Generator().manual_seed(settings.seed),
        device=device,
        resume_state=resume_state,
        writer=writer,
        tb_tags={"loss": "finetune/loss", "val_accuracy": "finetune/val_accuracy", "lr": "finetune/lr"},
        on_epoch_end=epoch_end if on_epoch_end is not None else None,
        desc="KD fine-tune",
        progress=show_progress,
        ranks=ranks,
    )
    return {"val_accuracy": history[-1]["val_accuracy"], "epochs": epochs, "seconds": history[-1]["seconds"],
            "settings": asdict(settings)}  # fmt: skip
