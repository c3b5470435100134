"""`amc train-teacher`: train a registry or user model on a data set, checkpointed every epoch and resumable."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from amc.checkpoint import load_checkpoint, save_checkpoint
from amc.commands.common import data_source_record
from amc.compress.student import model_from_checkpoint
from amc.config import data_dir_field, device_field, doc
from amc.data import load_dataset
from amc.errors import AmcError
from amc.files import check_output_file
from amc.input_check import check_model_takes
from amc.models import (
    SMALL_INPUT_PIXELS,
    TRAINING_ONLY_HEADS,
    create_model,
    input_kwargs,
    model_spec,
    trust_named_model,
)
from amc.train.distill import distillation_loss
from amc.train.distributed import finish, start
from amc.train.loop import cross_entropy_loss, evaluate_accuracy, fit, make_optimizer, make_scheduler
from amc.train.precision import resolve_precision


@dataclass
class TrainConfig:
    """Train a teacher network from scratch."""

    model: str = doc("resnet20", "registry name, tv:<torchvision name> or path/to/file.py:ClassName")
    dataset: str = doc("cifar10", "cifar10, digits, imagefolder or synthetic")
    data_dir: str | None = data_dir_field("data folder or ImageFolder .tar.gz (cifar10, imagefolder)")
    download: bool = doc(False, "download CIFAR-10 through torchvision if it is missing")
    image_size: int | None = doc(None, "imagefolder: resize every image to NxN (default: keep their own size)")
    channels: int | None = doc(None, "imagefolder: 1 (grayscale) or 3 (RGB) (default: what the images are)")
    epochs: int = doc(40, "training epochs; 0 writes an untrained teacher, for structural checks")
    batch_size: int = doc(128, "batch size")
    lr: float = doc(0.2, "peak learning rate")
    momentum: float = doc(0.9, "Nesterov momentum (sgd)")
    optimizer: str = doc("sgd", "sgd (Nesterov momentum) or adamw (what transformers train with)")
    label_smoothing: float = doc(0.0, "label smoothing of the cross-entropy (transformers: 0.1)")
    distill_from: str | None = doc(None, "a trained checkpoint of the same data whose soft targets the model also "
                                   "learns from (DeiT-style, e.g. the ResNet-20 teacher for a ViT)")  # fmt: skip
    weight_decay: float = doc(5e-4, "weight decay on conv and linear weights")
    schedule: str = doc("onecycle", "learning-rate schedule: onecycle or cosine")
    precision: str = doc("auto", "auto (bf16 where native), bf16 (autocast + channels_last) or fp32; reports are fp32")
    seed: int = doc(0, "seed for initialisation, the val split, shuffling and augmentation")
    device: str = device_field()
    out: str = doc("teacher.pt", "checkpoint path; rewritten after every epoch")
    tb_dir: str | None = doc(None, "TensorBoard folder (default: <out without suffix>.tb)")


def image_options(cfg: TrainConfig) -> dict:
    options = {k: v for k, v in (("image_size", cfg.image_size), ("channels", cfg.channels)) if v is not None}
    if options and cfg.dataset != "imagefolder":
        raise AmcError(f"--image-size and --channels apply to --dataset imagefolder only, not {cfg.dataset}; drop them")
    return options


def describe_inputs(shape) -> str:
    channels = {1: "grayscale", 3: "RGB"}.get(shape[0], f"{shape[0]} channels")
    return f"{channels} {shape[2]}x{shape[1]}"


def train_teacher(cfg: TrainConfig, resume: bool = False) -> dict | None:
    """Train `cfg.model` on `cfg.dataset`; checkpoint every epoch (`resume`: continue from the one at `cfg.out`);
    return the final metrics. Under torchrun every rank trains its share (amc/train/distributed.py) and rank 0
    alone writes and returns."""
    from torch.utils.tensorboard import SummaryWriter

    if cfg.epochs < 0:
        raise AmcError(f"--epochs is {cfg.epochs}; pass 1 or more (0 writes an untrained teacher)")
    ranks, device = start(cfg.device, cfg.batch_size)
    say = print if ranks.is_main else (lambda *args, **kwargs: None)
    cfg.precision = resolve_precision(cfg.precision, device, announce=ranks.is_main)
    out = check_output_file(cfg.out)
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
    optimizer = make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.optimizer)
    loss_fn = training_loss(cfg, data.num_classes, device, say)
    steps_per_epoch = len(data.batches("train", cfg.batch_size, shard=ranks.shard))
    scheduler = make_scheduler(optimizer, cfg.schedule, cfg.lr, max(cfg.epochs, 1) * steps_per_epoch)
    if cfg.epochs == 0:
        say("epochs: 0, so the teacher is written untrained (for structural checks; its accuracy is chance)")
    generator = torch.Generator().manual_seed(cfg.seed)
    resume_state = None
    if resume:
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
    dataset = {**data.describe(), **data_source_record(data.source, out)}
    payload = {"kind": "teacher", "arch": spec, "dataset": dataset, "train_config": asdict(cfg),
               "world_size": ranks.world_size}  # fmt: skip

    def save(epoch: int, metrics: dict, state: dict) -> None:
        state = {**state, "torch_rng": torch.get_rng_state()}
        save_checkpoint(out, {**payload, "state_dict": _cpu_state(model),
                              "metrics": {"val_accuracy": metrics["val_accuracy"]}, "train_state": state})  # fmt: skip

    history = fit(
        model,
        data,
        loss_fn,
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


def training_loss(cfg: TrainConfig, num_classes: int, device, say):
    """Cross-entropy (with `label_smoothing`), or with `distill_from`, half of it replaced by the soft targets of
    that checkpoint's model (knowledge distillation at temperature 4)."""
    if cfg.distill_from is None:
        return partial(cross_entropy_loss, label_smoothing=cfg.label_smoothing)
    blob = load_checkpoint(cfg.distill_from)
    guide = model_from_checkpoint(blob).to(device)
    classes = blob.get("arch", {}).get("num_classes")
    if classes != num_classes:
        raise AmcError(f"--distill-from {cfg.distill_from} predicts {classes} classes, the data has {num_classes}; "
                       "distill from a model trained on the same data")  # fmt: skip
    say(f"distilling from {cfg.distill_from} ({blob['arch']['name']}): half of the loss is its soft targets")
    return distillation_loss(guide, alpha=0.5, temperature=4.0)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
