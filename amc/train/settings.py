"""How a student is fine-tuned against its teacher: read by the fine-tune command, the reward's KD steps and the
candidate evaluator."""

from __future__ import annotations

from dataclasses import dataclass, replace

from amc.config import doc
from amc.errors import AmcError
from amc.train.precision import PRECISIONS


@dataclass
class FinetuneSettings:
    """How a student is fine-tuned against its teacher."""

    epochs: int = doc(15, "KD fine-tuning epochs (ignored when --steps is set)")
    steps: int | None = doc(None, "fine-tune for this many batches instead of whole epochs")
    batch_size: int = doc(128, "batch size")
    optimizer: str = doc("auto", "sgd, adamw, or auto: adamw for a teacher trained with it (a transformer; its "
                                 "checkpoint says so), else sgd")  # fmt: skip
    lr: float | None = doc(None, "initial learning rate, cosine-annealed to 0 (default: 0.05 with sgd, 5e-4 with "
                                 "adamw)")  # fmt: skip
    momentum: float = doc(0.9, "Nesterov momentum (sgd)")
    weight_decay: float | None = doc(None, "weight decay (default: 5e-4 with sgd, 0.05 with adamw)")
    alpha: float = doc(0.9, "weight of the soft-target KL term; 1 - alpha weighs cross-entropy")
    temperature: float = doc(4.0, "softmax temperature T of the soft targets")
    mse_weight: float = doc(0.0, "weight of N2N's MSE between student and teacher logits")
    precision: str = doc("auto", "auto (bf16 where native), bf16 or fp32 for training")
    seed: int = doc(0, "seed for shuffling and augmentation")

    def check(self) -> None:
        if (self.steps if self.steps is not None else self.epochs) < 1:
            raise AmcError("fine-tuning would run no steps; set --epochs or --steps above 0")
        if self.precision not in PRECISIONS:
            raise AmcError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        if self.optimizer not in ("auto", *OPTIMIZER_DEFAULTS):
            raise AmcError(f"unknown optimizer {self.optimizer!r}; use auto, {' or '.join(OPTIMIZER_DEFAULTS)}")

    def resolved(self, teacher_optimizer: str | None = None) -> FinetuneSettings:
        """These settings with the optimizer chosen (`auto`: the teacher's own, `teacher_optimizer` from its
        checkpoint, where amc knows it; else sgd) and its default learning rate and weight decay filled in."""
        self.check()
        auto = teacher_optimizer if teacher_optimizer in OPTIMIZER_DEFAULTS else "sgd"
        kind = auto if self.optimizer == "auto" else self.optimizer
        lr, weight_decay = OPTIMIZER_DEFAULTS[kind]
        return replace(self, optimizer=kind, lr=lr if self.lr is None else self.lr,
                       weight_decay=weight_decay if self.weight_decay is None else self.weight_decay)  # fmt: skip


OPTIMIZER_DEFAULTS = {"sgd": (0.05, 5e-4), "adamw": (5e-4, 0.05)}
"""A fine-tune's (learning rate, weight decay) by optimizer: SGD for CNNs; AdamW for transformers, at half of
vit_tiny's training rate (with SGD at 0.05, its students' KD fine-tune diverged within 21 steps)."""


def teacher_optimizer(teacher_blob: dict) -> str | None:
    """What a teacher checkpoint says it was trained with (`amc train-teacher --optimizer`)."""
    config = teacher_blob.get("train_config")
    return config.get("optimizer") if isinstance(config, dict) else None
