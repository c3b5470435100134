"""The `amc` command. Each subcommand's options come from one typed config dataclass (its --help)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from amc.distributed import torchrun_ranks
from amc.errors import AmcError
from amc.models import trust_model_code


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
                f"--{f.name.replace('_', '-')}", type=kind, default=default,
                help=help_text if "default" in help_text else f"{help_text} (default: {default})",
            )  # fmt: skip


def config_from_args(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _print_result(result: dict, as_json: bool) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if as_json:
        print(json.dumps(result))


def _search(args: argparse.Namespace) -> dict:
    from agents.search import resume_config, run_search

    flags = [f"{key[len(FIELD_FLAG):]}={value}" for key, value in vars(args).items()
             if key.startswith(FIELD_FLAG) and value is not None]  # fmt: skip
    args.set = [*flags, *args.set]  # `--episodes 40` is `--set episodes=40`; an explicit --set comes last and wins
    if args.init_agent:
        args.set = [*args.set, f"init_agent={args.init_agent}"]
    if args.resume:
        return run_search(resume_config(args.resume, args.set), resume_dir=args.resume)
    from agents.config import load_config

    return run_search(load_config(args.config, args.set))


FIELD_FLAG = "config_key_"


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    from agents.config import SearchConfig, config_help

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = config_help()
    parser.add_argument("--config", help="YAML file of SearchConfig fields (e.g. experiments/configs/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in this folder")
    parser.add_argument("--init-agent", metavar="AGENT_PT", help="warm-start from a saved agent (= --set init_agent=…)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    fields = parser.add_argument_group("config keys as flags (`--episodes 40` = `--set episodes=40`; listed below)")
    for field in dataclasses.fields(SearchConfig):
        flag = f"--{field.name.replace('_', '-')}"
        if field.name != "init_agent":
            fields.add_argument(flag, dest=FIELD_FLAG + field.name, metavar="VALUE", help=argparse.SUPPRESS)


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    from agents.predict import PredictConfig

    actions = parser.add_subparsers(dest="policy_command", required=True)
    add_config_arguments(actions.add_parser("predict", help=PredictConfig.__doc__, description=PredictConfig.__doc__),
                         PredictConfig)  # fmt: skip


def _policy(args: argparse.Namespace) -> dict:
    from agents.predict import PredictConfig, predict_command

    return predict_command(config_from_args(PredictConfig, args))


def _commands() -> dict[str, tuple[str, Callable, Callable]]:
    """name -> (help, add_arguments(parser), run(args))."""
    from agents.report import ReportConfig, write_report
    from amc import commands
    from amc.evaluation import EvaluateConfig, evaluate_checkpoint
    from amc.training import TrainConfig, train_teacher

    def from_config(cls: type, fn: Callable) -> tuple[str, Callable, Callable]:
        return cls.__doc__, lambda p: add_config_arguments(p, cls), lambda a: fn(config_from_args(cls, a))

    return {
        "train-teacher": from_config(TrainConfig, train_teacher),
        "evaluate": from_config(EvaluateConfig, evaluate_checkpoint),
        "apply": from_config(commands.ApplyConfig, commands.apply_command),
        "baseline": from_config(commands.BaselineConfig, commands.baseline_command),
        "finetune": from_config(commands.FinetuneConfig, commands.finetune_command),
        "profile-latency": from_config(commands.ProfileLatencyConfig, commands.profile_latency_command),
        "search": ("Search a per-layer compression policy under a budget.", _add_search_arguments, _search),
        "export": from_config(commands.ExportConfig, commands.export_command),
        "report": (
            ReportConfig.__doc__,
            lambda p: add_config_arguments(p, ReportConfig),
            lambda a: write_report(config_from_args(ReportConfig, a)),
        ),  # fmt: skip
        "policy": ("Work with saved policies and agents: `amc policy predict`.", _add_policy_arguments, _policy),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="amc", description="AutoML model compression under a hardware budget.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = _commands()
    for name, (help_text, add_arguments, _) in commands.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command_parser)
        command_parser.add_argument("--trust-model-code", action="append", default=[], metavar="FILE",
                                    help="build checkpoints whose architecture is this .py file (it runs)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        for file_name in args.trust_model_code:
            if not Path(file_name).is_file():
                raise AmcError(f"--trust-model-code {file_name}: no such file")
            trust_model_code(file_name)
        result = commands[args.command][2](args)
    except AmcError as exc:
        if torchrun_ranks().is_main:  # under torchrun every rank fails alike; one line is enough
            print(f"amc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amc {args.command}: interrupted; everything written so far is kept (resume with --resume)",
              file=sys.stderr)  # fmt: skip
        return 130
    if isinstance(result, dict):
        _print_result(result, getattr(args, "json", False))
    return 0


def run_json(argv: list[str], echo: bool = True) -> dict:
    """Run one subcommand in-process with --json and return its JSON result; for scripts in experiments/.
    Its table still reaches stdout when `echo`; a failure exits with the subcommand's status."""
    import contextlib
    import io

    print(f"$ amc {' '.join(argv)}", flush=True)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*argv, "--json"])
    if echo:
        print(buffer.getvalue(), end="", flush=True)
    if code != 0:
        raise SystemExit(f"amc {argv[0]} failed with exit status {code}")
    return json.loads(buffer.getvalue().strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
