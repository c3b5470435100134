"""How any command's typed config is resolved: its defaults, then a YAML file, then `--flags`, then
`--set key=value`, every value checked against its field's type (one line naming the key when it is wrong).

A config may nest sections (`SearchConfig.agent`): their keys are `agent.noise_sigma` in `--set`, `--agent.noise-sigma`
as a flag, and a mapping under `agent:` in YAML. The flat names of earlier versions (`noise_sigma`, and `agent` for
`agent.algorithm`) are still read, so old configs, run folders and commands keep working."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from amc.errors import AmcError
from amc.files import read_user_text

RENAMED = {"agent": "agent.algorithm", "importance": "global_importance"}
"""Flat names of earlier versions that are not the leaf's own name."""

INVOCATION = ("json", "resume")
"""Flags of the command line (how to run), never config keys; configs resolved by earlier versions record them
false, and are still read."""

# What a number means decides its range, the same under every command: (least, most, least excluded).
BOUNDS = {
    "actor_lr": (0, None, True), "critic_lr": (0, None, True), "lr": (0, None, True), "tolerance": (0, None, True),
    "temperature": (0, None, True), "momentum": (0, 1, True), "tau": (0, 1, True), "noise_decay": (0, 1, True),
    "alpha": (0, 1, False), "gamma": (0, 1, False), "baseline_decay": (0, 1, False), "min_keep": (0, 1, True),
    "max_sparsity": (0, 1, False), "max_pruning_ratio": (0, 1, True), "flops": (0, None, True),
    "params": (0, None, True), "size": (0, None, True), "latency": (0, None, True), "noise_sigma": (0, None, False),
    "weight_decay": (0, None, False), "mse_weight": (0, None, False), "label_smoothing": (0, 1, False),
    "batch_size": (1, None, False), "episodes": (1, None, False), "eval_samples": (1, None, False),
    "latency_repeats": (1, None, False), "report_latency_repeats": (1, None, False), "report_samples": (1, None, False),
    "threads": (1, None, False), "worker_threads": (1, None, False), "workers": (1, None, False),
    "grid_points": (2, None, False), "students": (1, None, False), "rounds": (1, None, False),
    "image_size": (1, None, False), "channels": (1, None, False), "steps": (1, None, False),
    "min_bits": (1, 32, False), "max_bits": (1, 32, False), "hidden": (1, None, False),
    "epochs": (0, None, False), "final_finetune_epochs": (0, None, False), "finetune_steps": (0, None, False),
    "warmup_episodes": (0, None, False), "recalibrate_batches": (0, None, False), "recalibrate_bn": (0, None, False),
    "checkpoint_every": (0, None, False), "check": (0, None, False), "seed": (0, None, False),
}  # fmt: skip


def check_bounds(path: str, value, label: str) -> None:
    """Refuse a number outside what its setting means (a list: each item)."""
    bounds = BOUNDS.get(path.rsplit(".", 1)[-1])
    if bounds is None or value is None or isinstance(value, (str, bool)):
        return
    least, most, strict = bounds
    for item in value if isinstance(value, list) else [value]:
        low = item <= least if strict else item < least
        if low or (most is not None and item > most):
            where = f"{'above' if strict else 'at least'} {least}" + (
                f" and at most {most}" if most is not None else ""
            )
            raise AmcError(f"{label} is out of range; it must be {where}")


_EXAMPLES = {"int": "a whole number, e.g. 400", "float": "a number, e.g. 0.5", "list": "a list, e.g. [300, 300]",
             "bool": "true or false", "str": "text"}  # fmt: skip
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def coerce(value, hint, label: str):
    """`value` as the field type `hint` (X | None allowed); AmcError naming `label` when it is not one."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)  # X | None
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    target = typing.get_origin(hint) or hint
    if value is None and optional:
        return None
    try:
        if target is list:
            items = value if isinstance(value, list) else yaml.safe_load(str(value))
            if not isinstance(items, list):
                raise ValueError(value)
            item = (typing.get_args(hint) or (int,))[0]
            return [coerce(v, item, label) for v in items]
        if target is bool:
            if isinstance(value, bool):
                return value
            return _BOOLS[str(value).lower()]
        if value is None or isinstance(value, (list, dict)):
            raise ValueError(value)
        if target is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)  # int(1.7) would silently become 1
        result = target(value)
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError(value)  # nan or inf is never a setting
        return result
    except (TypeError, ValueError, KeyError) as exc:
        example = _EXAMPLES.get(target.__name__, target.__name__)
        raise AmcError(f"{label} is not a valid {target.__name__}; write {example}") from exc


def is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


def leaves(cls, prefix: str = "") -> dict[str, tuple[dataclasses.Field, object]]:
    """Every key of `cls`, nested sections included, by dotted path: (field, type hint)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if is_section(f):
            out.update(leaves(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (f, hints[f.name])
    return out


def old_names(cls) -> dict[str, str]:
    """Earlier flat spellings -> dotted path: a nested key's own name, and the renamed ones."""
    paths = list(leaves(cls))
    names = {p.rsplit(".", 1)[1]: p for p in paths if "." in p}
    for old, new in RENAMED.items():
        target = new if new in paths else names.get(new)
        if target and old not in paths:
            names[old] = target
    return names


def _path_of(cls, key: str) -> str:
    """The dotted path `key` names in `cls`: itself, or what an earlier flat spelling became."""
    return key if key in leaves(cls) else old_names(cls).get(key, key)


def _flatten_yaml(cls, mapping: dict) -> list[tuple[str, object]]:
    """(key, value) pairs of a YAML mapping, a nested section's mapping turned into dotted keys."""
    sections = {f.name for f in dataclasses.fields(cls) if is_section(f)}
    out = []
    for key, value in mapping.items():
        if key in sections and isinstance(value, dict):
            out += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            out.append((str(key), value))
    return out


def _yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise AmcError(f"{where} is not valid YAML{at}: {detail}") from None


def flag(path: str) -> str:
    """`--agent.noise-sigma` for `agent.noise_sigma`."""
    return "--" + path.replace("_", "-")


def build(cls, values: dict[str, object], prefix: str = ""):
    """A `cls` from already-coerced values by dotted path; sections built the same way."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if is_section(f):
            kwargs[f.name] = build(hints[f.name], values, path + ".")
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def resolve_config(cls, path: str | Path | None = None, flags: dict | None = None, overrides=(), command: str = ""):
    """A `cls` from its defaults, then the YAML file at `path`, then `flags` ({dotted key: raw value}), then
    `key=value` overrides (YAML values); unknown keys and values of the wrong type are refused."""
    assigned: dict[str, tuple[object, str]] = {}

    def assign(key: str, value, label: str) -> None:
        assigned[_path_of(cls, key)] = (value, label)

    if path is not None:
        path = Path(path)
        text = read_user_text(
            path, "config file", "pass a YAML file such as experiments/configs/resnet20_c10_flops30.yaml"
        )
        loaded = _yaml(text, str(path)) or {}
        if not isinstance(loaded, dict):
            raise AmcError(f"{path} must hold a YAML mapping of {cls.__name__} fields")
        for key, value in _flatten_yaml(cls, loaded):
            assign(key, value, f"config key {key}={value!r} in {path}")
    for key, raw in (flags or {}).items():
        assign(key, raw, f"config key {key}={raw}")
    for item in overrides:
        if "=" not in item:
            raise AmcError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        parsed = _yaml(raw, f"--set {item}")
        assign(key, parsed, f"config key {key}={parsed!r}")
    known = leaves(cls)
    for key in INVOCATION:
        if key in assigned and key not in known:
            value, label = assigned.pop(key)
            try:
                asked = value is not None and coerce(value, bool, label)
            except AmcError:
                asked = True
            if asked:
                raise AmcError(f"{label}: {key} is a flag of the command line, not a config key; pass --{key} "
                               f"instead")  # fmt: skip
    unknown = set(assigned) - set(known)
    if unknown:
        raise AmcError(f"unknown config keys {sorted(unknown)}; see `amc {command or '<command>'} --help`")
    values = {k: coerce(v, known[k][1], label) for k, (v, label) in assigned.items()}
    for key, value in values.items():
        check_bounds(key, value, assigned[key][1])
    return build(cls, values)


def dump_config(cfg, path: Path) -> None:
    """The resolved config as YAML (sections as nested mappings), written atomically; `--config` reads it back."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    tmp.replace(path)


def config_help(cls) -> str:
    lines = ["config keys (in the --config YAML file, nested sections as mappings; as --set key=value; or as flags: "
             "--data-dir x for data_dir=x, --agent.noise-sigma 0.3 for agent.noise_sigma=0.3):"]  # fmt: skip
    for path, (f, hint) in leaves(cls).items():
        kind = getattr(hint, "__name__", str(hint))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {path} ({kind}, default {default!r}): {f.metadata['help']}")
    if old_names(cls):
        lines.append("earlier flat names still work: noise_sigma for agent.noise_sigma, agent for agent.algorithm, ...")
    return "\n".join(lines)
