"""Store a finished teacher's weights in fp16, so that it fits in git, and measure it again as stored.

    python experiments/teacher_half_weights.py --source runs/teachers/vit_tiny_cifar10.pt \
        --out experiments/teachers/vit_tiny_cifar10.pt

amc loads the fp16 weights into its fp32 model, so the teacher every student comes from is the rounded one; its
test and validation accuracy are measured on those weights and replace the training run's. The training record
(config, history, the accuracy before rounding) is kept; the optimizer state of an unfinished run is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from script_args import run_script

from amc.checkpoint import load_checkpoint, save_checkpoint
from amc.commands.common import load_data_for
from amc.compress.student import model_from_checkpoint
from amc.errors import AmcError
from amc.files import refuse_overwriting_inputs
from amc.train.loop import evaluate_accuracy


@dataclass
class Args:
    source: str
    """A finished teacher checkpoint (from `amc train-teacher`)."""
    out: str
    """Where the fp16 copy goes (a new file)."""
    data_dir: str | None = None


def half_weights(args: Args) -> None:
    refuse_overwriting_inputs(args.out, source=args.source)
    if Path(args.out).exists():
        raise AmcError(f"{args.out} exists; choose a new --out (nothing is overwritten)")
    blob = load_checkpoint(args.source)
    if "train_state" in blob:
        raise AmcError(f"{args.source} is an unfinished run (it holds its training state); let it finish first")
    blob["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    data = load_data_for(blob, None, args.data_dir, None, checkpoint=args.source)
    model = model_from_checkpoint(blob)
    trained = blob.get("metrics", {})
    metrics = {**trained, "fp32_accuracy": trained.get("accuracy"), "accuracy": evaluate_accuracy(model, data, "test"),
               "val_accuracy": evaluate_accuracy(model, data, "val"), "weights": "fp16"}  # fmt: skip
    save_checkpoint(args.out, {**blob, "metrics": metrics})
    print(
        f"wrote {args.out}: test {metrics['accuracy']:.4f} (fp32 weights: {metrics['fp32_accuracy']}), "
        f"val {metrics['val_accuracy']:.4f}"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_script(half_weights, Args, __doc__)
