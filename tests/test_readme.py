"""The README's walk-through, as written: every `amc` line parses and resolves its config (unknown flags, keys,
values and missing config files are caught here; the commands themselves are tested on tiny models elsewhere)."""

import shlex
from pathlib import Path

from agents.cli import COMMANDS, build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]


def walk_through() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## From a teacher to a deployed student", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    teacher = next(line.split("=", 1)[1].split()[0] for line in block.splitlines() if line.startswith("T="))
    return [line.split("  #")[0].replace("$T", teacher) for line in block.splitlines() if line.startswith("amc ")]


def test_the_walk_through_names_every_step_and_a_teacher_that_is_here():
    steps = [line.split()[1] for line in walk_through()]
    assert steps == ["profile-latency", "search", "apply", "finetune", "export", "evaluate"]
    assert (ROOT / walk_through()[0].split()[2]).is_file()  # the committed teacher


def test_every_walk_through_command_parses_and_resolves(monkeypatch):
    monkeypatch.chdir(ROOT)  # config files are named from the repository root, as a user runs them
    parser = build_parser()
    for line in walk_through():
        args, unknown = parser.parse_known_args(shlex.split(line)[1:])
        assert not unknown, f"{line}: unknown {unknown}"
        cfg = config_from_args(COMMANDS[args.command].config, args, command=args.command)
        assert cfg is not None
