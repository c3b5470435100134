"""The `amc` command. Every subcommand reads one typed config dataclass the same way: its defaults, then
`--config file.yaml`, then `--flags` (one per field), then `--set key=value`; COMMANDS says where each
command's config and body live."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
import warnings
from pathlib import Path

from agents.cli_config import config_help, dump_config, flag, leaves, old_names, resolve_config
from agents.config import PredictConfig, ReportConfig, SearchConfig
from amc.commands.apply import ApplyConfig
from amc.commands.baseline import BaselineConfig
from amc.commands.evaluate import EvaluateConfig
from amc.commands.export import ExportConfig
from amc.commands.finetune import FinetuneConfig
from amc.commands.profile_latency import ProfileLatencyConfig
from amc.commands.train_teacher import TrainConfig
from amc.errors import AmcError
from amc.files import check_output_file
from amc.models import trust_model_code
from amc.train.distributed import torchrun_ranks


@dataclasses.dataclass(frozen=True)
class Command:
    config: type
    body: str  # "module:function", imported when the command runs
    saves_config: bool = False  # long work: the resolved config is written beside --out
    resume: str = ""  # "out": --resume continues the checkpoint at --out; "run": --resume RUN_DIR


COMMANDS = {
    "train-teacher": Command(TrainConfig, "amc.commands.train_teacher:train_teacher", saves_config=True, resume="out"),
    "evaluate": Command(EvaluateConfig, "amc.commands.evaluate:evaluate_checkpoint"),
    "apply": Command(ApplyConfig, "amc.commands.apply:apply_command"),
    "baseline": Command(BaselineConfig, "amc.commands.baseline:baseline_command"),
    "finetune": Command(FinetuneConfig, "amc.commands.finetune:finetune_command", saves_config=True, resume="out"),
    "profile-latency": Command(ProfileLatencyConfig, "amc.commands.profile_latency:profile_latency_command"),
    "search": Command(SearchConfig, "agents.search:run_search", resume="run"),  # writes its run folder's config.yaml
    "export": Command(ExportConfig, "amc.commands.export:export_command"),
    "report": Command(ReportConfig, "agents.report:write_report"),
    "policy predict": Command(PredictConfig, "agents.predict:predict_command"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is) and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, " ".join(f"{self.prog}: error: {message}; see `{self.prog} --help`".splitlines()) + "\n")


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """--config, one flag per field (`--data-dir` for `data_dir`; positional where the field says so) and --set.
    Flags default to None (not given), so that the config file's values stand unless a flag is passed."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = config_help(cls)
    parser.add_argument("--config", metavar="YAML", help=f"YAML file of {cls.__name__} keys (flags and --set win)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    for path, (f, hint) in leaves(cls).items():
        kind = _base_type(hint)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        help_text = help_text if "default" in help_text else f"{help_text} (default: {default})"
        if f.metadata.get("positional"):
            parser.add_argument(path, nargs="?", default=None, help=help_text)
        elif kind is bool:
            parser.add_argument(flag(path), dest=path, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag(path), dest=path, metavar=path.rsplit(".", 1)[-1].upper(), help=help_text)
    for old, path in old_names(cls).items():  # earlier flat spellings, still read, not shown
        kind = _base_type(leaves(cls)[path][1])
        action = argparse.BooleanOptionalAction if kind is bool else None
        parser.add_argument(flag(old), dest=path, action=action, help=argparse.SUPPRESS)


def config_from_args(cls: type, args: argparse.Namespace, config_path: str | None = None, command: str = ""):
    flags = {path: getattr(args, path) for path in leaves(cls) if getattr(args, path, None) is not None}
    return resolve_config(cls, config_path or args.config, flags, args.set, command)


def _body(command: Command):
    module, function = command.body.split(":")
    return getattr(importlib.import_module(module), function)


def _run(name: str, args: argparse.Namespace):
    """The command's body on its resolved config. `--json` and `--resume` say how to run it, not what to run: they
    are flags of the command line, never config keys, and never saved with the config."""
    command = COMMANDS[name]
    if command.resume == "run":
        from agents.search import resume_config_path

        if args.resume and args.config:
            raise AmcError("--resume continues a run with its own config.yaml; drop --config (flags and --set still "
                           "apply)")  # fmt: skip
        path = resume_config_path(args.resume) if args.resume else None
        cfg = config_from_args(command.config, args, config_path=path, command=name)
        return _body(command)(cfg, resume_dir=args.resume)
    cfg = config_from_args(command.config, args, command=name)
    refuse_empty_outputs(cfg)
    target = _resolved_config_path(cfg, args) if command.saves_config else None
    result = _body(command)(cfg, resume=args.resume) if command.resume else _body(command)(cfg)
    if target is not None and torchrun_ranks().is_main:
        dump_config(cfg, target)
    return result


def refuse_empty_outputs(cfg) -> None:
    """`--out ''` names no file: refused, not taken as the default beside the input."""
    for key in ("out", "out_dir", "tb_dir"):
        value = getattr(cfg, key, None)
        if value is not None and not str(value).strip():
            raise AmcError(f"--{key.replace('_', '-')} is empty; name where to write, or leave it out for the default")


def _resolved_config_path(cfg, args: argparse.Namespace) -> Path:
    """`<out without suffix>.config.yaml`, written after the command succeeds; never the --config file itself."""
    target = check_output_file(cfg.out).with_suffix(".config.yaml")
    if args.config and target.resolve() == Path(args.config).resolve():
        raise AmcError(f"--config {args.config} would be overwritten by this run's resolved config; "
                       f"pass another --out or rename the config file")  # fmt: skip
    return target


def _print_result(result: dict, as_json: bool) -> None:
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if as_json:
        print(json.dumps(result))


def add_invocation_flags(parser: argparse.ArgumentParser, command: Command) -> None:
    """How to run, the same on every command: --json, and --resume where the command can continue."""
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    if command.resume == "run":
        parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in this folder")
    elif command.resume == "out":
        parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="amc", description="AutoML model compression under a hardware budget.")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, command in COMMANDS.items():
        help_text = command.config.__doc__
        if " " in name:  # `policy predict`: a group of subcommands
            group, action = name.split()
            if group not in groups:
                group_parser = sub.add_parser(group, help=f"work with saved policies and agents: `amc {name}`")
                groups[group] = group_parser.add_subparsers(dest=f"{group}_command", required=True)
            command_parser = groups[group].add_parser(action, help=help_text, description=help_text)
        else:
            command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(command_parser, command.config)
        add_invocation_flags(command_parser, command)
        command_parser.add_argument("--trust-model-code", action="append", default=[], metavar="FILE",
                                    help="build checkpoints whose architecture is this .py file (it runs)")  # fmt: skip
    return parser


def _print_error(line: str) -> None:
    """`line` on stderr, last and on a line of its own: progress bars left open by the failure are closed first."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(" ".join(line.splitlines()), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    name = args.command if args.command != "policy" else f"policy {args.policy_command}"
    if unknown:
        extra = " ".join(unknown)
        _print_error(f"amc {name}: error: unrecognized arguments: {extra}; see `amc {name} --help`")
        return 2
    try:
        for file_name in args.trust_model_code:
            if not Path(file_name).is_file():
                raise AmcError(f"--trust-model-code {file_name}: no such file")
            trust_model_code(file_name)
        with warnings.catch_warnings(record=True) as caught:  # shown after a success; a failure is its one line
            result = _run(name, args)
        for warning in caught:
            print(f"amc {name}: warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
    except AmcError as exc:
        if torchrun_ranks().is_main:  # under torchrun every rank fails alike; one line is enough
            _print_error(f"amc {name}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        print(f"amc {name}: interrupted; everything written so far is kept (resume with --resume)", file=sys.stderr)
        return 130
    if isinstance(result, dict):
        _print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
