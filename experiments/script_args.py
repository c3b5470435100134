"""The command line of an experiment script, made from its typed `Args` dataclass (cleanrl style)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

from agents.cli import OneLineParser
from amc.errors import AmcError


def parse_args(cls, doc: str, commands: list[str] | None = None):
    """`--flag` per field of `cls` (lists take several values); a leading COMMAND field when `commands`."""
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if commands:
        parser.add_argument("command", choices=commands)
    for f in dataclasses.fields(cls):
        if f.name == "command":
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            parser.add_argument(flag, required=True)
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            kind = type(default[0]) if default else str
            parser.add_argument(flag, nargs="+", type=kind, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return cls(**vars(parser.parse_args()))


def run_script(main: Callable, cls, doc: str, commands: list[str] | None = None) -> None:
    """Parse the command line into `cls` and call `main(args)`; bad input (AmcError) is one line and exit 2."""
    args = parse_args(cls, doc, commands)
    try:
        main(args)
    except AmcError as exc:
        print(f"{sys.argv[0]}: error: {exc}", file=sys.stderr)
        sys.exit(2)
