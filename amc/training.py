"""Training and evaluation loops shared by teacher training and student fine-tuning."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from amc.checkpoint import load_checkpoint, save_checkpoint
from amc.config import TrainConfig
from amc.data import DataSplits, load_dataset
from amc.distributed import ONE_PROCESS, Ranks, barrier, finish, start, summed, wrap
from amc.errors import AmcError
from amc.input_check import check_model_takes
from amc.models import (
    SMALL_INPUT_PIXELS,
    TRAINING_ONLY_HEADS,
    create_model,
    input_kwargs,
    model_spec,
    trust_named_model,
)
from amc.precision import autocast, resolve_precision


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
    batches = data.batches(split, batch_size, limit=limit, channels_last=precision == "bf16")
    return accuracy_on(model, batches, precision=precision, device=device, desc=f"{split} accuracy")


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""loss(logits, labels, images) -> scalar; the images let a distillation loss query its teacher."""


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


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
    loader = data.batches("train", batch_size, train=True, generator=generator, channels_last=precision == "bf16",
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


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; no weight decay on BatchNorm and bias parameters."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, lr: float, total_steps: int):
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    raise AmcError(f"unknown schedule {schedule!r}; use onecycle or cosine")


def image_options(cfg: TrainConfig) -> dict:
    options = {k: v for k, v in (("image_size", cfg.image_size), ("channels", cfg.channels)) if v is not None}
    if options and cfg.dataset != "imagefolder":
        raise AmcError(f"--image-size and --channels apply to --dataset imagefolder only, not {cfg.dataset}; drop them")
    return options


def describe_inputs(shape) -> str:
    channels = {1: "grayscale", 3: "RGB"}.get(shape[0], f"{shape[0]} channels")
    return f"{channels} {shape[2]}x{shape[1]}"


def train_teacher(cfg: TrainConfig) -> dict | None:
    """Train `cfg.model` on `cfg.dataset`; checkpoint every epoch; return the final metrics. Under torchrun,
    every rank trains its share (amc/distributed.py) and rank 0 alone writes and returns."""
    from torch.utils.tensorboard import SummaryWriter

    if cfg.epochs < 0:
        raise AmcError(f"--epochs is {cfg.epochs}; pass 1 or more (0 writes an untrained teacher)")
    ranks, device = start(cfg.device, cfg.batch_size)
    say = print if ranks.is_main else (lambda *args, **kwargs: None)
    cfg.precision = resolve_precision(cfg.precision, device, announce=ranks.is_main)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, seed=cfg.seed, **image_options(cfg))
    extra = input_kwargs(cfg.model, data.input_shape)
    say(f"inputs: {describe_inputs(data.input_shape)}")
    if "small_input" in extra:
        say(f"small_input: {'on' if extra['small_input'] else 'off'} (auto: on for images of "
            f"{SMALL_INPUT_PIXELS} px or less)")  # fmt: skip
    if ranks.distributed:
        say(f"torchrun: {ranks.world_size} processes, {cfg.batch_size // ranks.world_size} images each per step")
    trust_named_model(cfg.model)
    if cfg.model.startswith("tv:") and cfg.model[3:] in TRAINING_ONLY_HEADS:
        say(f"{cfg.model}: built without its auxiliary classifiers (heads that run only in training)")
    spec = model_spec(cfg.model, data.num_classes, **extra)
    model = create_model(cfg.model, data.num_classes, **extra).to(device)
    check_model_takes(model, data.input_shape, data.name)
    if cfg.precision == "bf16":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    steps_per_epoch = len(data.batches("train", cfg.batch_size, shard=ranks.shard))
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.lr, max(cfg.epochs, 1) * steps_per_epoch)
    if cfg.epochs == 0:
        say("epochs: 0, so the teacher is written untrained (for structural checks; its accuracy is chance)")
    generator = torch.Generator().manual_seed(cfg.seed)
    resume_state = None
    if cfg.resume:
        blob = load_checkpoint(out)
        resume_state = blob.get("train_state")
        if resume_state is None:
            raise AmcError(f"{out} holds a finished run with no training state; train again without --resume")
        model.load_state_dict(blob["state_dict"])
        torch.set_rng_state(resume_state["torch_rng"])
        say(f"resuming {out} at epoch {resume_state['epoch']}/{cfg.epochs}")

    writer = None
    if ranks.is_main:
        writer = SummaryWriter(str(Path(cfg.tb_dir) if cfg.tb_dir else out.with_suffix(".tb")))
        if resume_state is None:
            writer.add_text("hyperparameters", "\n".join(f"|{k}|{v}|" for k, v in asdict(cfg).items()))
    payload = {"kind": "teacher", "arch": spec, "dataset": data.describe(), "train_config": asdict(cfg),
               "world_size": ranks.world_size}  # fmt: skip

    def save(epoch: int, metrics: dict, state: dict) -> None:
        state = {**state, "torch_rng": torch.get_rng_state()}
        save_checkpoint(out, {**payload, "state_dict": _cpu_state(model),
                              "metrics": {"val_accuracy": metrics["val_accuracy"]}, "train_state": state})  # fmt: skip

    history = fit(
        model,
        data,
        cross_entropy_loss,
        optimizer,
        scheduler,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        precision=cfg.precision,
        generator=generator,
        device=device,
        resume_state=resume_state,
        writer=writer,
        tb_tags={"loss": "train/loss", "accuracy": "train/accuracy", "val_accuracy": "val/accuracy", "lr": "train/lr"},
        on_epoch_end=save if ranks.is_main else None,
        desc=f"{cfg.model} on {cfg.dataset}",
        ranks=ranks,
    )

    if not ranks.is_main:
        finish(ranks)
        return None
    model = model.to(memory_format=torch.contiguous_format)
    metrics = {
        "accuracy": evaluate_accuracy(model, data, "test", device=device),
        "val_accuracy": evaluate_accuracy(model, data, "val", device=device),
        "epochs": cfg.epochs,
        "train_seconds": history[-1]["seconds"] if history else 0.0,
    }
    writer.add_scalar("test/accuracy", metrics["accuracy"], cfg.epochs)
    writer.close()
    save_checkpoint(out, {**payload, "state_dict": _cpu_state(model), "metrics": metrics, "history": history})
    finish(ranks)
    return metrics


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
