"""The command line of an experiment script, made from its typed `Args` dataclass (cleanrl style), with amc's
machinery: the same one-line parser, and every value checked by the same coercion and ranges as `amc` config
keys (agents/cli_config.py). A list takes several values, and its flag may repeat (`--set a=1 --set b=2`, as in
`amc`, or `--set a=1 b=2`)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path

from agents.cli import OneLineParser
from agents.cli_config import check_bounds, coerce
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


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def build_parser(cls, doc: str, commands: list[str] | None = None) -> argparse.ArgumentParser:
    """`--flag` per field of `cls`, with the field's docstring and default as its help; a leading COMMAND
    argument when `commands`. Flags default to None (not given): `args_from` fills the defaults."""
    parser = OneLineParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    helps, hints = field_help(cls), typing.get_type_hints(cls)
    if commands:
        parser.add_argument("command", choices=commands)
    for f in dataclasses.fields(cls):
        if f.name == "command":
            continue
        flag, default = f"--{f.name.replace('_', '-')}", _default(f)
        if default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=helps.get(f.name))
            continue
        shown = f"{helps[f.name]} (default: {default})" if f.name in helps else f"default: {default}"
        origin = typing.get_origin(hints[f.name]) or hints[f.name]
        if origin is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=shown)
        elif origin is list:
            parser.add_argument(flag, nargs="+", action="extend", help=shown)
        else:
            parser.add_argument(flag, help=shown)
    return parser


def args_from(cls, namespace: argparse.Namespace):
    """`cls` from parsed flags: each given value coerced to its field's type and checked against its range, the
    way `amc` checks a config key (one line naming the flag when it is wrong)."""
    hints, values = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        raw = getattr(namespace, f.name, None)
        if raw is None:
            continue
        label = f"--{f.name.replace('_', '-')} {' '.join(map(str, raw)) if isinstance(raw, list) else raw}"
        values[f.name] = coerce(raw, hints[f.name], label) if f.name != "command" else raw
        check_bounds(f.name, values[f.name], label)
    return cls(**values)


def run_script(main: Callable, cls, doc: str, commands: list[str] | None = None) -> None:
    """Parse the command line into `cls` and call `main(args)`; bad input (AmcError) is one line and exit 2."""
    try:
        args = args_from(cls, build_parser(cls, doc, commands).parse_args())
        main(args)
    except AmcError as exc:
        print(f"{sys.argv[0]}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_and_report(run: Callable, report: Callable, cls, doc: str) -> None:
    """The two-command convention: `run` measures and merges its rows into `--results`, then the page is written
    from those rows alone; `report` writes the page only."""

    def main(args) -> None:
        if args.command == "run":
            run(args)
        report(Path(args.results))

    run_script(main, cls, doc, ["run", "report"])
