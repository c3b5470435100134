"""`CompressionPolicy`: what happens to each layer, as plain data that round-trips through JSON."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch.nn as nn

from amc.errors import AmcError
from amc.files import check_output_file, read_user_text
from amc.values import finite, whole

SCHEMA_VERSION = 1
ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 32)


def model_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter's name and shape: equal for two models of the same architecture."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(f"{name}:{tuple(p.shape)};".encode())
    return digest.hexdigest()[:16]


def _named(kind):
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and kind(v) for k, v in value.items())


_FIELD_KINDS = {  # field: (check, what it holds)
    "keep_ratios": (_named(finite), "unit names with keep ratios (numbers)"),
    "sparsity": (_named(finite), "layer names with sparsities (numbers)"),
    "bits": (_named(whole), "layer names with bit widths (whole numbers)"),
    "removed_blocks": (lambda v: isinstance(v, list) and all(isinstance(b, str) for b in v), "a list of block names"),
    "activation_bits": (whole, "a whole number"), "importance": (lambda v: isinstance(v, str), "a name"),
    "round_to": (whole, "a whole number"), "architecture": (lambda v: isinstance(v, str), "a name"),
    "fingerprint": (lambda v: isinstance(v, str), "text"),
    "num_classes": (lambda v: v is None or whole(v), "a whole number"),
    "metadata": (lambda v: isinstance(v, dict), "a mapping"),
}  # fmt: skip
"""What each field of a policy file holds; anything else is refused when the file is read."""


@dataclass
class CompressionPolicy:
    """Per-unit decisions. Channel keep ratios are keyed by pruning unit (a coupled group, named after
    its first layer); sparsity and bits by conv/linear module name; removed blocks by module name."""

    keep_ratios: dict[str, float] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)
    removed_blocks: list[str] = field(default_factory=list)
    bits: dict[str, int] = field(default_factory=dict)
    activation_bits: int = 32
    """8 fake-quantizes every conv/linear input to 8 bits; 32 leaves activations in float."""
    importance: str = "l1"
    """How channels are ranked within a unit: l1 or l2 magnitude."""
    round_to: int = 1
    """Kept channel counts are rounded to a multiple of this (at least one multiple)."""
    architecture: str = ""
    """Registry name of the teacher's architecture."""
    fingerprint: str = ""
    """`model_fingerprint` of the teacher; empty means unchecked."""
    num_classes: int | None = None
    metadata: dict = field(default_factory=dict)
    """Free-form record: mode, budget, achieved costs, accuracy, search config, versions."""
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CompressionPolicy:
        if not isinstance(data, dict):
            raise AmcError(
                f"a policy is a JSON object of fields, not a {type(data).__name__}; is it an amc policy.json?"
            )
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise AmcError(f"policy schema_version {version} is not supported (this amc reads {SCHEMA_VERSION})")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise AmcError(f"policy has unknown fields {sorted(unknown)}; is it an amc policy.json?")
        wrong = [name for name, (ok, _) in _FIELD_KINDS.items() if name in data and not ok(data[name])]
        if wrong:
            name = wrong[0]
            raise AmcError(f"policy field {name} must hold {_FIELD_KINDS[name][1]}, not {data[name]!r}; "
                           "make the policy with `amc baseline` or `amc search`")  # fmt: skip
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CompressionPolicy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AmcError(f"policy is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        """Atomic write: a crash never leaves a half-written policy."""
        path = check_output_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> CompressionPolicy:
        fix = "make one with `amc baseline` or `amc search`"
        return cls.from_json(read_user_text(path, "policy file", fix))

    def structure_key(self, pieces: dict[str, list[int]]) -> tuple:
        """Equal for two policies that build the same student: kept channel counts (given the sizes of each
        unit's pieces), removed blocks, bits and sparsity; ratios that round to the same channels collide."""
        from amc.compress.pruning import kept_channels

        kept = tuple(
            tuple(kept_channels(size, ratio, self.round_to) for size in pieces[name])
            for name, ratio in sorted(self.keep_ratios.items())
        )
        sparsity = tuple(round(v, 4) for _, v in sorted(self.sparsity.items()))
        return kept, tuple(sorted(self.removed_blocks)), tuple(sorted(self.bits.items())), sparsity

    # ------------------------------------------------------------------ checks

    def validate(self, model: nn.Module, unit_names: list[str], removable: list[str]) -> None:
        """Reject a policy for another architecture, unknown names or out-of-range values."""
        if self.fingerprint and self.fingerprint != model_fingerprint(model):
            raise AmcError(
                f"policy was written for another architecture ({self.architecture or 'unknown'}, fingerprint "
                f"{self.fingerprint}); apply it to the teacher it was searched on"
            )
        layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        for field_name, values in (("keep_ratios", self.keep_ratios), ("sparsity", self.sparsity), ("bits", self.bits)):
            if not isinstance(values, dict):
                raise AmcError(f"policy {field_name} must be a JSON object of layer: value, not {values!r}")
            for name, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise AmcError(f"policy {field_name} of {name!r} is {value!r}; it must be a number")
        for name, ratio in self.keep_ratios.items():
            if name not in unit_names:
                raise AmcError(f"policy keep_ratios names unknown pruning unit {name!r}; units are {unit_names}")
            if not 0.0 < ratio <= 1.0:
                raise AmcError(f"keep ratio of {name!r} is {ratio}; it must lie in (0, 1]")
        for name, value in self.sparsity.items():
            if name not in layers:
                raise AmcError(f"policy sparsity names unknown layer {name!r}")
            if not 0.0 <= value < 1.0:
                raise AmcError(f"sparsity of {name!r} is {value}; it must lie in [0, 1)")
        for name, value in self.bits.items():
            if name not in layers:
                raise AmcError(f"policy bits names unknown layer {name!r}")
            if value not in ALLOWED_BITS:
                raise AmcError(f"bits of {name!r} is {value}; use 2-8 or 32")
        for name in self.removed_blocks:
            if name not in removable:
                raise AmcError(f"policy removes {name!r}, which is not a removable block; removable: {removable}")
        if self.activation_bits not in ALLOWED_BITS:
            raise AmcError(f"activation_bits is {self.activation_bits}; use 2-8 or 32")
        if self.round_to < 1:
            raise AmcError(f"round_to is {self.round_to}; it must be at least 1")
