"""The field helper of every typed config: its default and help text, so a config is also its command's --help."""

from __future__ import annotations

from dataclasses import field


def doc(default, help: str, **metadata):
    """A dataclass field with a default and a help string (`positional=True` makes it a CLI argument)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})
