"""The field helpers of every typed config: a key with its default and help text (so a config is also its command's
--help), and a nested section of keys."""

from __future__ import annotations

from dataclasses import field


def doc(default, help: str, **metadata):
    """A dataclass field with a default and a help string (`positional=True` makes it a CLI argument)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def section(cls: type, help: str):
    """A nested config (a dataclass of its own): its keys are `<name>.<key>` in flags and `--set`, or a mapping
    under `<name>:` in YAML."""
    return field(default_factory=cls, metadata={"help": help, "section": True})
