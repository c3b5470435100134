"""Training and evaluation loops shared by teacher training and student fine-tuning."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from amc.data import DataSplits
from amc.errors import AmcError
from amc.train.distributed import ONE_PROCESS, Ranks, barrier, summed, wrap
from amc.train.precision import autocast, channels_last, resolve_precision


@torch.no_grad()
def accuracy_on(
    model: nn.Module, batches, *, precision: str = "fp32", device: torch.device | None = None, desc: str | None = None
) -> float:
    """Top-1 accuracy (a fraction) over `(images, labels)` batches, in eval mode; a progress bar if `desc`."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    with autocast(precision, device):
        for x, y in tqdm(batches, desc=desc, disable=desc is None, leave=False, dynamic_ncols=True):
            logits = model(x.to(device))
            correct += (logits.argmax(1).cpu() == y.cpu()).sum().item()
            total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def evaluate_accuracy(
    model: nn.Module,
    data: DataSplits,
    split: str = "test",
    *,
    batch_size: int = 256,
    precision: str = "fp32",
    limit: int | None = None,
    device: torch.device | None = None,
) -> float:
    """Top-1 accuracy (a fraction) on one split, in eval mode, with a progress bar."""
    device = device or next(model.parameters()).device
    precision = resolve_precision(precision, device)
    batches = data.batches(split, batch_size, limit=limit, channels_last=channels_last(precision, device))
    return accuracy_on(model, batches, precision=precision, device=device, desc=f"{split} accuracy")


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


"""loss(logits, labels, images) -> scalar; the images let a distillation loss query its teacher."""


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def train_epoch(
    model: nn.Module,
    data: DataSplits,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    batch_size: int,
    precision: str,
    generator: torch.Generator,
    device: torch.device,
    max_steps: int | None = None,
    desc: str = "train",
    progress: bool = True,
    ranks: Ranks = ONE_PROCESS,
) -> dict[str, float]:
    """One pass over the training split (or `max_steps` batches); returns mean loss and train accuracy (over all
    ranks when distributed: each rank takes its share of every global batch of `batch_size`)."""
    precision = resolve_precision(precision, device)
    model.train()
    loader = data.batches("train", batch_size, train=True, generator=generator,
                          channels_last=channels_last(precision, device),
                          shard=ranks.shard)  # fmt: skip
    total = min(len(loader), max_steps) if max_steps else len(loader)
    loss_sum = correct = seen = 0.0
    bar = tqdm(
        loader, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not (progress and ranks.is_main)
    )
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(x)
            loss = loss_fn(logits, y, x)
        if not torch.isfinite(loss):
            raise AmcError(f"training loss became {loss.item()} at step {step} of {desc}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    bar.close()
    loss_sum, correct, seen = summed([loss_sum, correct, seen], ranks, device)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}


EpochEnd = Callable[[int, dict, dict], None]


"""on_epoch_end(epoch, metrics, state): metrics has the epoch's loss, accuracy and val_accuracy; state resumes."""


def fit(
    model: nn.Module,
    data: DataSplits,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epochs: int,
    batch_size: int,
    precision: str,
    generator: torch.Generator,
    device: torch.device,
    total_steps: int | None = None,
    resume_state: dict | None = None,
    writer=None,
    tb_tags: dict[str, str] | None = None,
    on_epoch_end: EpochEnd | None = None,
    desc: str = "epoch",
    progress: bool = True,
    ranks: Ranks = ONE_PROCESS,
) -> list[dict]:
    """The training loop of teacher training and of fine-tuning: `epochs` passes of `train_epoch` (the last
    one cut at `total_steps`), a val pass on rank 0 after each, TensorBoard scalars under `tb_tags` (keys loss,
    accuracy, val_accuracy, lr), and `on_epoch_end` with a state that `resume_state` continues from (optimizer,
    scheduler, shuffling generator, history). Returns the per-epoch history."""
    trained = wrap(model, ranks, device)
    steps_per_epoch = len(data.batches("train", batch_size, shard=ranks.shard))
    total_steps = total_steps or epochs * steps_per_epoch
    start_epoch, history = 0, []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        generator.set_state(resume_state["generator"])
        start_epoch, history = resume_state["epoch"], resume_state["history"]
    started = time.time() - (history[-1]["seconds"] if history else 0.0)
    bar = tqdm(range(start_epoch, epochs), desc=desc, initial=start_epoch, total=epochs, dynamic_ncols=True,
               disable=not (progress and ranks.is_main))  # fmt: skip
    for epoch in bar:
        stats = train_epoch(
            trained,
            data,
            loss_fn,
            optimizer,
            scheduler,
            batch_size=batch_size,
            precision=precision,
            generator=generator,
            device=device,
            max_steps=min(steps_per_epoch, total_steps - epoch * steps_per_epoch),
            desc=f"epoch {epoch + 1}/{epochs}",
            progress=progress,
            ranks=ranks,
        )
        val = evaluate_accuracy(model, data, "val", precision=precision, device=device) if ranks.is_main else None
        history.append({"epoch": epoch + 1, **stats, "val_accuracy": val, "seconds": time.time() - started})
        if writer is not None:
            values = {**stats, "val_accuracy": val, "lr": optimizer.param_groups[0]["lr"]}
            for key, tag in (tb_tags or {}).items():
                writer.add_scalar(tag, values[key], epoch + 1)
            writer.flush()
        if on_epoch_end is not None:
            state = {"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "generator": generator.get_state(), "history": history}  # fmt: skip
            on_epoch_end(epoch + 1, history[-1], state)
        barrier(ranks)  # the other ranks wait for rank 0's evaluation and checkpoint
    return history


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(
    model: nn.Module, lr: float, momentum: float, weight_decay: float, kind: str = "sgd"
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or AdamW (what transformers train with; `momentum` unused); no weight decay on
    norm, bias and other one-dimensional parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise AmcError(f"unknown optimizer {kind!r}; use {' or '.join(OPTIMIZERS)}")


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int):
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    raise AmcError(f"unknown schedule {schedule!r}; use onecycle or cosine")
