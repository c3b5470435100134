"""A property-based fuzzer of what amc reads (hypothesis): every file kind a command takes, mutated in its bytes or
in its fields, and odd values for every command's flags. Each case must end in exit 0, or in exit 2 with one line
of stderr, never a traceback; and no file that was there before may change.

`tests/test_fuzz.py` runs a short, derandomized budget in `make test`; `experiments/fuzz_inputs.py` runs the long
one and writes its figures into docs/bad_inputs.md.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from bad_inputs import png_tree, snapshot, workspace
from hypothesis import strategies as st

from agents.cli import COMMANDS, main
from agents.cli_config import leaves

CASE_SECONDS = 120
"""A case still running after this long is stopped and counted as slow, not as a failure."""


def fuzz_workspace(root: Path) -> dict[str, str]:
    """bad_inputs' workspace (teacher, policy, student, finished search), plus a latency table and an image tree."""
    paths = workspace(root)
    quiet = io.StringIO()
    with redirect_stdout(quiet), redirect_stderr(quiet):
        assert main(["profile-latency", paths["teacher"], "--grid-points", "2", "--check", "0", "--out",
                     str(root / "lut.json")]) == 0  # fmt: skip
    paths["table"] = str(root / "lut.json")
    for name, content in png_tree().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    paths["images"] = str(root / "images")
    return paths


@dataclass(frozen=True)
class FileKind:
    """A file amc reads: where the case's copy goes (under its own folder), and the command that reads it."""

    copy: str
    argv: tuple[str, ...]
    writes: str | None = None
    """A folder under the case's own that the command may change when it succeeds (a resumed run goes on)."""


RESUME = ("search", "--resume", "{tmp}/run", "--set", "episodes=3")
# {tmp} is the case's folder (the working directory too); {teacher}, {table}, ... are the workspace's files.
FILE_KINDS = {
    "policy": FileKind(
        "p.json", ("apply", "--teacher", "{teacher}", "--policy", "{tmp}/p.json", "--out", "{tmp}/s.pt")
    ),
    "config": FileKind("c.yaml", ("baseline", "uniform", "--config", "{tmp}/c.yaml", "--out", "{tmp}/p.json")),
    "teacher checkpoint": FileKind(
        "t.pt", ("baseline", "uniform", "--teacher", "{tmp}/t.pt", "--budget", "flops=0.5", "--out", "{tmp}/p.json")
    ),
    "student checkpoint": FileKind("s.pt", ("export", "{tmp}/s.pt", "--format", "packed", "--out", "{tmp}/s.amc")),
    "agent": FileKind(
        "run/agent.pt",
        (
            "policy",
            "predict",
            "--agent",
            "{tmp}/run/agent.pt",
            "--teacher",
            "{teacher}",
            "--budget",
            "flops=0.6",
            "--out",
            "{tmp}/p.json",
        ),
    ),  # fmt: skip
    "replay buffer": FileKind("run/replay_buffer.npz", RESUME, "run"),
    "search state": FileKind("run/search_state.json", RESUME, "run"),
    "run config": FileKind("run/config.yaml", RESUME, "run"),
    "latency table": FileKind(
        "lut.json",
        (
            "baseline",
            "uniform",
            "--teacher",
            "{teacher}",
            "--budget",
            "latency=0.6",
            "--latency-table",
            "{tmp}/lut.json",
            "--out",
            "{tmp}/p.json",
        ),
    ),  # fmt: skip
    "image": FileKind(
        "images/train/c0/0.png",
        (
            "train-teacher",
            "--dataset",
            "imagefolder",
            "--data-dir",
            "{tmp}/images",
            "--epochs",
            "0",
            "--out",
            "{tmp}/t.pt",
        ),
    ),  # fmt: skip
}


def original(kind: str, paths: dict[str, str]) -> dict[str, bytes]:
    """The files a case of `kind` starts from, by their path under the case's folder, before any mutation."""
    run = Path(paths["run"])
    if kind in ("agent", "replay buffer", "search state", "run config"):
        return {f"run/{p.name}": p.read_bytes() for p in run.iterdir() if p.is_file()}
    if kind == "image":
        root = Path(paths["images"])
        return {f"images/{p.relative_to(root)}": p.read_bytes() for p in root.rglob("*.png")}
    if kind == "config":
        return {"c.yaml": yaml.safe_dump({"teacher": paths["teacher"], "budget": "flops=0.5"}).encode()}
    source = {"policy": "policy", "teacher checkpoint": "teacher", "student checkpoint": "student",
              "latency table": "table"}[kind]  # fmt: skip
    return {FILE_KINDS[kind].copy: Path(paths[source]).read_bytes()}


ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.just([]), st.just({}), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip


@st.composite
def structured_mutation(draw, data):
    """`data` (a nested dict/list from JSON, YAML or a checkpoint) with one key set to an odd value, deleted or
    added."""
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((*path, k))
                if len(paths) < 400:
                    walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node[:8]):
                paths.append((*path, i))
                walk(v, (*path, i))

    walk(data, ())
    if not paths or not isinstance(data, dict):
        return draw(ODD_VALUES)
    path = draw(st.sampled_from(paths))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["set", "delete", "add"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
    else:
        parent[path[-1]] = draw(ODD_VALUES)
    return data


@st.composite
def byte_mutation(draw, content: bytes):
    how = draw(st.sampled_from(["truncate", "flip", "insert", "replace", "empty"]))
    if how == "empty" or not content:
        return b""
    if how == "truncate":
        return content[: draw(st.integers(0, len(content) - 1))]
    if how == "replace":
        return draw(st.binary(max_size=64))
    data = bytearray(content)
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        for i in range(at, min(len(data), at + draw(st.integers(1, 16)))):
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    return bytes(data[:at]) + draw(st.binary(min_size=1, max_size=32)) + bytes(data[at:])


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@st.composite
def mutated_file(draw, kind: str, name: str, content: bytes):
    """`content` of the file `name` mutated in its fields (where it parses) or in its bytes."""
    if draw(st.booleans()):
        return draw(byte_mutation(content))
    try:
        if name.endswith(".json"):
            return json.dumps(draw(structured_mutation(json.loads(content)))).encode()
        if name.endswith(".yaml"):
            return yaml.safe_dump(draw(structured_mutation(yaml.safe_load(content)))).encode()
        if name.endswith(".pt"):
            blob = torch.load(io.BytesIO(content), weights_only=True)
            return _torch_bytes(draw(structured_mutation(_tensors_to_odd(blob, draw))))
        if name.endswith(".npz"):
            arrays = dict(np.load(io.BytesIO(content), allow_pickle=False))
            key = draw(st.sampled_from(sorted(arrays)))
            arrays[key] = draw(st.sampled_from([np.zeros(0), np.full((3, 2), np.nan), np.array("text"),
                                                arrays[key][:1], arrays[key].astype(np.float16)]))  # fmt: skip
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            return buffer.getvalue()
    except Exception:  # noqa: BLE001  (a mutation that cannot be made falls back to the bytes)
        pass
    return draw(byte_mutation(content))


def _tensors_to_odd(blob, draw):
    """Now and then a tensor of the checkpoint swapped for one of another shape or dtype."""
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict) and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(blob["state_dict"])))
        odd = [torch.zeros(0), torch.zeros(2, 3, 5), torch.tensor(float("nan")), torch.zeros(1, dtype=torch.int8)]
        blob["state_dict"][key] = draw(st.sampled_from(odd))
    return blob


@dataclass
class Case:
    """One fuzz case: the command line (placeholders filled later) and the files written into its folder."""

    label: str
    argv: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    writes: str | None = None


@st.composite
def file_cases(draw, paths: dict[str, str]):
    kind = draw(st.sampled_from(sorted(FILE_KINDS)))
    files = original(kind, paths)
    target = FILE_KINDS[kind].copy
    files[target] = draw(mutated_file(kind, target, files[target]))
    return Case(f"file: {kind}", list(FILE_KINDS[kind].argv), files, FILE_KINDS[kind].writes)


CHEAP = {  # a command with what it needs to run fast; one of its flags then gets an odd value
    "evaluate": ["evaluate", "{teacher}", "--latency-repeats", "1"],
    "apply": ["apply", "--teacher", "{teacher}", "--policy", "{policy}", "--out", "{tmp}/s.pt"],
    "baseline": ["baseline", "uniform", "--teacher", "{teacher}", "--budget", "flops=0.5", "--out", "{tmp}/p.json"],
    "finetune": ["finetune", "--student", "{student}", "--teacher", "{teacher}", "--steps", "1", "--out",
                 "{tmp}/f.pt"],
    "export": ["export", "{student}", "--out", "{tmp}/s.onnx"],
    "profile-latency": ["profile-latency", "{teacher}", "--grid-points", "2", "--check", "0", "--out", "{tmp}/l.json"],
    "train-teacher": ["train-teacher", "--dataset", "synthetic", "--epochs", "0", "--out", "{tmp}/t.pt"],
    "policy predict": ["policy", "predict", "--agent", "{run}/agent.pt", "--teacher", "{teacher}", "--out",
                       "{tmp}/p.json"],
    "report": ["report", "{run}", "--out", "{tmp}/report"],
    "search": ["search", "--set", "teacher={teacher}", "--set", "run.out_dir={tmp}/runs", "--set", "agent.episodes=2",
               "--set", "agent.warmup_episodes=1", "--set", "evaluation.eval_samples=32", "--set",
               "run.report_samples=32", "--set", "run.report_latency_repeats=1"],
}  # fmt: skip
FLAG_VALUES = st.one_of(
    st.sampled_from(["", " ", "nan", "inf", "-inf", "-1", "0", "1e309", "0.5", "-0.5", "1.5", "2", "true", "none",
                     "None", "[]", "{}", "[1,", "a=b", "flops=2", "latency=0.5", "flops=0.5,size=x", "🙂", "..", ".",
                     "{tmp}", "{tmp}/missing/x", "{teacher}", "{policy}", "{student}", "{run}", "{tmp}/x.yaml"]),
    st.floats(-4, 4).map(str), st.integers(-3, 3).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"), max_size=10),
)  # fmt: skip
"""Values for any flag: never a path outside the case's folder or the workspace, and never a number large enough
to make a valid command run for long."""


OUTPUT_KEYS = ("out", "out_dir", "tb_dir")


@st.composite
def flag_cases(draw):
    command = draw(st.sampled_from(sorted(CHEAP)))
    config = COMMANDS[command].config
    keys = [p for p, (f, _) in leaves(config).items() if not f.metadata.get("positional")]
    key = draw(st.sampled_from(keys))
    value = draw(FLAG_VALUES)
    if key.rsplit(".", 1)[-1] in OUTPUT_KEYS and value.startswith("{") and not value.startswith("{tmp}"):
        value = "{tmp}/out"  # writing over a file the user named as output is the user's call, not a defect
    if draw(st.booleans()):
        argv = [*CHEAP[command], "--set", f"{key}={value}"]
    else:
        argv = [*CHEAP[command], "--" + key.replace("_", "-"), value]
    return Case(f"flag: {command} {key}", argv)


def cases(paths: dict[str, str]):
    return st.one_of(file_cases(paths), flag_cases())


@dataclass
class Outcome:
    code: int | None
    err: str
    traceback: str | None
    changed: list[str]
    slow: bool = False

    @property
    def message_lines(self) -> list[str]:
        """stderr without the progress bars work draws (tqdm redraws a line with carriage returns)."""
        return [line for line in self.err.split("\n") if line.strip() and "\r" not in line and "%|" not in line]

    @property
    def ok(self) -> bool:
        one_line = self.code == 0 or (self.code == 2 and len(self.message_lines) == 1)
        return self.traceback is None and not self.changed and (one_line or self.slow)


_ORIGINALS: dict[str, set[str]] = {}
"""The workspace's own files, by workspace: what a case may not change (files a case writes beside them may)."""


class _Slow(BaseException):
    pass


def run(case: Case, paths: dict[str, str], folder: Path) -> Outcome:
    """Run `case` in its own folder (also the working directory), with the workspace's files watched."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, content in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    root = Path(paths["teacher"]).parent
    originals = _ORIGINALS.setdefault(str(root), set(snapshot([root])))
    watched = [root, folder]
    before = {k: v for k, v in snapshot(watched).items() if k in originals or k.startswith(f"{folder}{os.sep}")}
    argv = _fill_safe(case.argv, paths, folder)
    cwd, out, err = os.getcwd(), io.StringIO(), io.StringIO()
    code, trace, slow = None, None, False
    previous = signal.signal(signal.SIGALRM, _raise_slow)
    signal.alarm(CASE_SECONDS)
    try:
        os.chdir(folder)
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    except _Slow:
        slow = True
    except BaseException as exc:  # noqa: BLE001  (what the fuzzer is looking for)
        import traceback

        trace = "".join(traceback.format_exception(exc))[-3000:]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)
        torch.set_num_threads(1)
    after = snapshot(watched)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    if code == 0 and case.writes:  # a resumed run that went on wrote its own folder, as it should
        changed = [k for k in changed if not k.startswith(str(folder / case.writes) + os.sep)]
    return Outcome(code, err.getvalue(), trace, changed, slow)


def _raise_slow(signum, frame):
    raise _Slow


def _fill_safe(argv: list[str], paths: dict[str, str], folder: Path) -> list[str]:
    """Placeholders filled; a value with stray braces (from the fuzzer's text) is left as it is."""
    out = []
    for a in argv:
        try:
            out.append(a.format(tmp=folder, **paths))
        except (KeyError, IndexError, ValueError):
            out.append(a)
    return out


def describe(outcome: Outcome) -> str:
    if outcome.traceback:
        return outcome.traceback.strip().splitlines()[-1]
    if outcome.changed:
        return f"exit {outcome.code}, changed {outcome.changed[:3]}: {outcome.err.strip()[-200:]!r}"
    return f"exit {outcome.code}: {outcome.err.strip()[-300:]!r}"


FUZZ_MARKERS = ("<!-- fuzz: written by experiments/fuzz_inputs.py report -->", "<!-- /fuzz -->")


def fuzz_block(rows: list[dict]) -> list[str]:
    """The long fuzz run's figures: cases, what they covered, and what failed (from results/fuzz.json's rows)."""
    if not rows:
        return ["The long fuzz run has not been made here yet (`python experiments/fuzz_inputs.py run`)."]
    labels: dict[str, int] = {}
    for r in rows:
        for label, n in r["labels"].items():
            labels[label] = labels.get(label, 0) + n
    total = sum(r["cases"] for r in rows)
    files = sorted({k.split(": ", 1)[1] for k in labels if k.startswith("file: ")})
    commands = sorted({k.split(": ", 1)[1].rsplit(" ", 1)[0] for k in labels if k.startswith("flag: ")})
    flags = len({k for k in labels if k.startswith("flag: ")})
    failures = [f for r in rows for f in r["failures"]]
    tracebacks = sum(f["kind"] == "traceback" for f in failures)
    changed = sum(f["kind"] == "changed" for f in failures)
    machines = sorted({r["machine"].get("cpu", "?") for r in rows})
    lines = [
        f"The long fuzz run (`python experiments/fuzz_inputs.py run`, tests/fuzz_inputs.py): **{total:,} cases** in "
        f"{len(rows)} seeded chunks, {sum(r['seconds'] for r in rows) / 60:.0f} minutes on {', '.join(machines)}.",
        f"- Files mutated (bytes, or fields where they parse): {', '.join(files)} "
        f"({sum(n for k, n in labels.items() if k.startswith('file: ')):,} cases).",
        f"- Odd flag values: {flags} flags of {len(commands)} commands ({', '.join(commands)}; "
        f"{sum(n for k, n in labels.items() if k.startswith('flag: ')):,} cases).",
        f"- Tracebacks: **{tracebacks}**; inputs changed: **{changed}**; other failures (exit status or more than "
        f"one line): {len(failures) - tracebacks - changed}; stopped as slow: {sum(r['slow'] for r in rows)}.",
    ]
    lines += [f"  - {f['case']}: {f['what']}" for f in failures[:10]]
    return lines
