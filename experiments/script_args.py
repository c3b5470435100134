"""The command line of an experiment script, made from its typed `Args` dataclass (cleanrl style)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
from collections.abc import Callable

from agents.cli import OneLineParser
from amc.errors import AmcError


def field_help(cls) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), the way cleanrl documents `Args`."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    helps = {}
    for field, after in zip(body, body[1:], strict=False):
        if isinstance(field, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            helps[field.target.id] = " ".join(str(after.value.value).split())
    return helps


def parse_args(cls, doc: str, commands: list[str] | None = None):
    """`--flag` per field of `cls` (lists take several values), with the field's docstring and default as its
    help; a leading COMMAND field when `commands`."""
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    helps = field_help(cls)
    if commands:
        parser.add_argument("command", choices=commands)
    for f in dataclasses.fields(cls):
        if f.name == "command":
            continue
        flag = f"--{f.name.replace('_', '-')}"
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=helps.get(f.name))
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = f"{helps[f.name]} (default: {default})" if f.name in helps else f"default: {default}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=shown)
        elif isinstance(default, list):
            kind = type(default[0]) if default else str
            parser.add_argument(flag, nargs="+", type=kind, default=default, help=shown)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=shown)
    return cls(**vars(parser.parse_args()))


def run_script(main: Callable, cls, doc: str, commands: list[str] | None = None) -> None:
    """Parse the command line into `cls` and call `main(args)`; bad input (AmcError) is one line and exit 2."""
    args = parse_args(cls, doc, commands)
    try:
        main(args)
    except AmcError as exc:
        print(f"{sys.argv[0]}: error: {exc}", file=sys.stderr)
        sys.exit(2)
