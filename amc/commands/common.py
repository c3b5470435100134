"""What several commands share: a checkpoint's input shape and data, and the check that a policy fits its teacher."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch.nn as nn

from amc.compress.policy import CompressionPolicy, model_fingerprint
from amc.data import DataSplits, load_dataset
from amc.errors import AmcError


def check_policy_matches(policy: CompressionPolicy, blob: dict, teacher: nn.Module, force: bool = False) -> None:
    """Refuse a policy written for another teacher; with `force`, accept a model of the same family
    (same number of classes, every named unit present), warn, and clear the policy's fingerprint so that
    `apply_policy` checks unit names only."""
    name = blob["arch"]["name"]
    if policy.num_classes is not None and policy.num_classes != blob["arch"]["num_classes"]:
        raise AmcError(f"policy is for {policy.num_classes} classes, the teacher has {blob['arch']['num_classes']}")
    mismatch = None
    if policy.architecture and policy.architecture != name:
        mismatch = f"policy is for {policy.architecture}, the teacher is {name}"
    elif policy.fingerprint and policy.fingerprint != model_fingerprint(teacher):
        mismatch = f"policy fingerprint {policy.fingerprint} does not match the teacher's {model_fingerprint(teacher)}"
    if mismatch is None:
        return
    if not force:
        raise AmcError(f"{mismatch}; use a policy searched on this teacher, or --force for a model of its family")
    warnings.warn(f"{mismatch}; applying anyway (--force): units the policy does not name are kept whole",
                  stacklevel=2)  # fmt: skip
    policy.fingerprint = ""


def search_settings(policy: CompressionPolicy) -> dict:
    """How a search built its students (BN recalibration, precision, reconstruction), from the policy; a config
    saved with sections (env, evaluation, agent, run) is read by its keys' own names."""
    flat = {}
    for key, value in (policy.metadata.get("search_config") or {}).items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def data_source_record(source: str | None, checkpoint: str | Path) -> dict:
    """How a checkpoint names its data: a file or folder absolutely and relative to the checkpoint's folder (which
    survives a move); anything else (a bundled data set) as it is."""
    if not source or not Path(source).exists():
        return {"source": source}
    where = Path(source).resolve()
    return {"source": str(where), "source_from_checkpoint": os.path.relpath(where, Path(checkpoint).resolve().parent)}


def stored_data_dir(stored: dict, checkpoint: str | Path) -> str:
    """The data a checkpoint names, found from its own folder or absolutely; one line where neither is here. An
    older checkpoint's relative path is read from the working directory, else from the checkpoint's folder."""
    folder, source = Path(checkpoint).resolve().parent, stored["source"]
    if not stored.get("source_from_checkpoint"):
        return str(folder / source) if not Path(source).exists() and (folder / source).exists() else source
    found = next((c for c in (folder / stored["source_from_checkpoint"], Path(source)) if c.exists()), None)
    if found is None:
        raise AmcError(f"{checkpoint} was trained on {source}, which is not here (looked from the checkpoint's folder "
                       f"and at that path); pass --data-dir with where that data is now")  # fmt: skip
    return str(found)


def load_data_for(
    blob: dict, dataset: str | None, data_dir: str | None, seed: int | None, *, checkpoint: str | Path
) -> DataSplits:
    """The data a checkpoint (read from `checkpoint`) was trained on, unless the user names another."""
    stored = blob.get("dataset", {})
    name = dataset or stored.get("name")
    if data_dir is None and name == stored.get("name") and stored.get("source"):
        data_dir = stored_data_dir(stored, checkpoint)
    if seed is None:
        seed = blob.get("train_config", {}).get("seed", 0)
    options = {}
    if name == "imagefolder" == stored.get("name"):  # decode the images as the teacher saw them
        options = stored.get("options", {"image_size": 32, "channels": 3})  # older checkpoints: 32x32 RGB
    return load_dataset(name, data_dir, seed=seed, **options)
