"""The `amc` command. Each subcommand's options come from one typed config dataclass (its --help)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Callable

from amc.errors import AmcError


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per dataclass field: `--data-dir` for `data_dir`, help from the field's metadata."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.metadata.get("positional"):
            parser.add_argument(f.name, type=kind, help=help_text)
        elif kind is bool:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", type=kind, default=default, help=f"{help_text} (default: {default})"
            )


def config_from_args(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _print_result(result: dict, as_json: bool) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if as_json:
        print(json.dumps(result))


def _commands() -> dict[str, tuple[type, Callable]]:
    from amc import commands
    from amc.evaluation import EvaluateConfig, evaluate_checkpoint
    from amc.training import TrainConfig, train_teacher

    return {
        "train-teacher": (TrainConfig, train_teacher),
        "evaluate": (EvaluateConfig, evaluate_checkpoint),
        "apply": (commands.ApplyConfig, commands.apply_command),
        "baseline": (commands.BaselineConfig, commands.baseline_command),
        "finetune": (commands.FinetuneConfig, commands.finetune_command),
        "profile-latency": (commands.ProfileLatencyConfig, commands.profile_latency_command),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amc", description="AutoML model compression under a hardware budget.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = _commands()
    for name, (cls, _) in commands.items():
        add_config_arguments(sub.add_parser(name, help=cls.__doc__, description=cls.__doc__), cls)
    args = parser.parse_args(argv)
    cls, run = commands[args.command]
    try:
        result = run(config_from_args(cls, args))
    except AmcError as exc:
        print(f"amc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"amc {args.command}: interrupted; everything written so far is kept (resume with --resume)",
            file=sys.stderr,
        )
        return 130
    if isinstance(result, dict):
        _print_result(result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
