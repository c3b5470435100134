"""`apply_policy(teacher, policy) -> student`, and student checkpoints that rebuild without the teacher.

A student checkpoint stores its architecture as data: the teacher's registry spec, the removed blocks, the
removed attention heads, torch-pruning's pruning history, the sparsity layers and the bit widths. Loading
replays them on a fresh `create_model` and then loads the state_dict, all under `weights_only=True`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from amc.checkpoint import input_shape_of, load_checkpoint, save_checkpoint
from amc.compress.heads import find_attention, prune_heads, replay_heads
from amc.compress.policy import CompressionPolicy, model_fingerprint
from amc.compress.pruning import find_units, kept_channels, prune_channels, replay_pruning
from amc.compress.quantization import quantize_activations, quantize_weights, sparsify
from amc.compress.reconstruction import reconstruct
from amc.compress.removal import removable_blocks, remove_blocks
from amc.data import DataSplits
from amc.errors import AmcError, library_text
from amc.models import create_from_spec

STRUCTURE_ATTR = "amc_structure"


def apply_policy(
    teacher: nn.Module,
    policy: CompressionPolicy,
    input_shape: Sequence[int],
    *,
    validate: bool = True,
    reconstruction_data: DataSplits | None = None,
) -> nn.Module:
    """Build the student the policy describes; the teacher is never modified.

    Order: remove blocks, remove attention heads, prune channels (physically), optionally refit the layers
    that lost inputs by least squares on `reconstruction_data` (AMC), then add sparsity masks and weight
    quantizers.
    The returned module carries its structure in `student.amc_structure` for `save_student`.
    """
    if validate:
        units = [u.name for u in find_units(teacher, input_shape)]
        policy.validate(teacher, units, removable_blocks(teacher, input_shape))
    student = copy.deepcopy(teacher)
    remove_blocks(student, policy.removed_blocks)
    attention = find_attention(student, input_shape)  # the policy names only heads that can go
    kept_heads = {a.name: kept_channels(a.num_heads, policy.keep_ratios[a.qkv]) for a in attention
                  if a.qkv in policy.keep_ratios}  # fmt: skip
    removed_heads = prune_heads(student, kept_heads, attention)
    history = prune_channels(
        student, policy.keep_ratios, input_shape, round_to=policy.round_to, importance=policy.importance
    )
    if reconstruction_data is not None:
        reconstruct(student, teacher, reconstruction_data, history, input_shape)
    present = {name for name, m in student.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    sparsity = {n: v for n, v in policy.sparsity.items() if n in present and v > 0}
    bits = {n: b for n, b in policy.bits.items() if n in present and b < 32}
    sparsify(student, sparsity)
    quantize_weights(student, bits)
    if policy.activation_bits < 32:
        quantize_activations(student, policy.activation_bits)
    setattr(
        student,
        STRUCTURE_ATTR,
        {
            "removed_blocks": list(policy.removed_blocks),
            "removed_heads": removed_heads,
            "pruning_history": history,
            "sparse_layers": sorted(sparsity),
            "bits": bits,
            "activation_bits": policy.activation_bits,
            "teacher_fingerprint": model_fingerprint(teacher),
        },
    )
    return student


def save_student(
    path: str | Path,
    student: nn.Module,
    teacher_blob: dict,
    policy: CompressionPolicy,
    metrics: dict | None = None,
    train_state: dict | None = None,
) -> None:
    """Write a standalone student checkpoint (kind "student"); `train_state` lets a fine-tune resume."""
    structure = getattr(student, STRUCTURE_ATTR, None)
    if structure is None:
        raise AmcError("this module was not built by apply_policy; cannot record its structure")
    save_checkpoint(
        path,
        {
            "kind": "student",
            "arch": teacher_blob["arch"],
            "dataset": teacher_blob.get("dataset", {}),
            "train_config": teacher_blob.get("train_config", {}),
            "structure": structure,
            "policy": policy.to_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()},
            "metrics": metrics or {},
            **({"train_state": train_state} if train_state is not None else {}),
        },
    )


def student_from_checkpoint(blob: dict) -> nn.Module:
    """Rebuild a student from its checkpoint: fresh architecture, replayed structure, stored weights."""
    structure = blob.get("structure")
    if not isinstance(structure, dict):
        raise AmcError("student checkpoint lacks its structure entry; re-create it with `amc apply`")
    input_shape = input_shape_of(blob)
    model = create_from_spec(blob.get("arch"))
    try:
        remove_blocks(model, structure["removed_blocks"])
        replay_heads(model, structure.get("removed_heads", {}), input_shape)
        replay_pruning(model, structure["pruning_history"], input_shape)
        sparsify(model, {name: 0.5 for name in structure["sparse_layers"]})  # masks come from the state_dict
        quantize_weights(model, structure["bits"])
        if structure.get("activation_bits", 32) < 32:
            quantize_activations(model, structure["activation_bits"])
    except AmcError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
        raise AmcError(
            f"the student checkpoint's structure entry is damaged ({library_text(exc)}); re-create it with `amc apply`"
        ) from None
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        raise AmcError(f"student weights do not fit the replayed architecture: {library_text(exc)}") from exc
    setattr(model, STRUCTURE_ATTR, structure)
    return model.eval()


def load_student(path: str | Path) -> nn.Module:
    """Load a student saved by `save_student`, without the teacher or any search code."""
    blob = load_checkpoint(path)
    if blob.get("kind") != "student":
        raise AmcError(f"{path} is a {blob.get('kind')} checkpoint, not a student")
    return student_from_checkpoint(blob)


def model_from_checkpoint(blob: dict) -> nn.Module:
    """Rebuild a teacher (architecture spec + state_dict) from a loaded checkpoint."""
    if blob.get("kind", "teacher") != "teacher":
        return student_from_checkpoint(blob)
    model = create_from_spec(blob.get("arch"))
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        raise AmcError(
            f"checkpoint weights do not fit architecture {blob['arch']['name']}: {library_text(exc)}"
        ) from exc
    return model.eval()
