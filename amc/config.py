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


# Keys several commands share, declared here once: their defaults and the words of their help.


def teacher_field(help: str = "teacher checkpoint"):
    return doc("teacher.pt", help)


def data_dir_field(help: str = "data folder or .tar.gz (default: the teacher's)"):
    return doc(None, help)


def device_field(purpose: str = ""):
    from amc.device import DEVICE_HELP

    return doc("auto", f"{purpose}: {DEVICE_HELP}" if purpose else DEVICE_HELP)
