"""How a student is fine-tuned against its teacher: read by the fine-tune command, the reward's KD steps and the
candidate evaluator."""

from __future__ import annotations

from dataclasses import dataclass

from amc.config import doc
from amc.errors import AmcError
from amc.train.precision import PRECISIONS


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
        if self.precision not in PRECISIONS:
            raise AmcError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
