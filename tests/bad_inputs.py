"""The table of bad inputs: each case is a command line (with files it needs) that must end in one line naming
the problem and the fix, and exit status 2, leaving every file already there unchanged.

    python tests/bad_inputs.py     # runs every case and writes docs/bad_inputs.md with the messages

`tests/test_bad_inputs.py` runs the same table under pytest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agents.cli import main
from amc.models import create_from_spec


@dataclass
class Case:
    id: str
    argv: list[str]
    """Placeholders: {teacher}, {policy}, {student}, {run}, {other}, {tmp} (a fresh folder for this case)."""
    expect: str
    """A fragment of the one-line message."""
    files: dict[str, str | bytes] = field(default_factory=dict)
    """Files to create in {tmp} first ("SYMLINK:name" makes a symlink to {tmp}/name)."""
    env: dict[str, str] = field(default_factory=dict)


def png_tree() -> dict[str, bytes]:
    """A tiny ImageFolder tree of 8x8 grey PNGs: two classes, three images each in train/ and test/."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "PNG")
    return {f"images/{split}/c{c}/{i}.png": buffer.getvalue() for split in ("train", "test") for c in range(2)
            for i in range(3)}  # fmt: skip


def corrupt_jpeg_tree() -> dict[str, bytes]:
    files = png_tree()
    files["images/train/c0/broken.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    return files


TRAIN = ["train-teacher", "--dataset", "synthetic", "--out", "{tmp}/t.pt"]
APPLY = ["apply", "--teacher", "{teacher}", "--policy", "{tmp}/p.json", "--out", "{tmp}/s.pt"]


def policy_case(id: str, expect: str, policy: str | dict) -> Case:
    """`amc apply` of a policy.json holding `policy`: text as it is, or fields of a schema-1 policy."""
    text = json.dumps({"schema_version": 1, **policy}) if isinstance(policy, dict) else policy
    return Case(id, APPLY, expect, files={"p.json": text})


SEARCH = ["search", "--set", "teacher={teacher}", "--set", "out_dir={tmp}/runs"]

CASES = [
    # train-teacher
    Case("train: unknown model", [*TRAIN, "--model", "resnet21"], "unknown model"),
    Case("train: model file missing", [*TRAIN, "--model", "{tmp}/nofile.py:Net"], "does not exist"),
    Case("train: model class missing", [*TRAIN, "--model", "{tmp}/net.py:Nope"], "has no class",
         files={"net.py": "import torch.nn as nn\nclass Net(nn.Linear):\n    pass\n"}),
    Case("train: unknown data set", ["train-teacher", "--dataset", "mnist", "--out", "{tmp}/t.pt"], "unknown data set"),
    Case("train: CIFAR-10 folder missing", ["train-teacher", "--dataset", "cifar10", "--data-dir", "{tmp}/none",
                                            "--out", "{tmp}/t.pt"], "not found"),
    Case("train: imagefolder without train/", ["train-teacher", "--dataset", "imagefolder", "--data-dir", "{tmp}",
                                               "--out", "{tmp}/t.pt"], "not an ImageFolder tree"),
    Case("train: imagefolder path is a plain file", ["train-teacher", "--dataset", "imagefolder", "--data-dir",
                                                     "{tmp}/plain.txt", "--out", "{tmp}/t.pt"], "not a tar archive",
         files={"plain.txt": "not images"}),
    Case("train: images too small for the model", ["train-teacher", "--model", "tv:densenet121", "--dataset",
                                                   "imagefolder", "--data-dir", "{tmp}/images", "--image-size", "8",
                                                   "--out", "{tmp}/t.pt"], "the smallest it takes is",
         files=png_tree()),
    Case("train: --data-dir is a symlink loop", ["train-teacher", "--dataset", "imagefolder", "--data-dir",
                                                 "{tmp}/loop", "--out", "{tmp}/t.pt"], "is a symlink loop",
         files={"loop": "SYMLINK:loop"}),
    Case("train: --data-dir is a dangling symlink", ["train-teacher", "--dataset", "cifar10", "--data-dir",
                                                     "{tmp}/link", "--out", "{tmp}/t.pt"], "which is gone",
         files={"link": "SYMLINK:moved"}),
    Case("train: a corrupt JPEG in the tree", ["train-teacher", "--dataset", "imagefolder", "--data-dir",
                                               "{tmp}/images", "--out", "{tmp}/t.pt"], "broken.jpg",
         files=corrupt_jpeg_tree()),
    Case("train: negative epochs", [*TRAIN, "--epochs", "-1"], "epochs=-1 is out of range"),
    Case("train: image size on a non-imagefolder set", [*TRAIN, "--image-size", "16"], "imagefolder only"),
    Case("train: two channels", ["train-teacher", "--dataset", "imagefolder", "--data-dir", "{tmp}/images",
                                 "--channels", "2", "--out", "{tmp}/t.pt"], "use 1 (grayscale) or 3",
         files=corrupt_jpeg_tree()),
    Case("train: unknown schedule", [*TRAIN, "--schedule", "step"], "unknown schedule"),
    Case("train: unknown optimizer", [*TRAIN, "--optimizer", "adam"], "unknown optimizer"),
    Case("train: label smoothing above 1", [*TRAIN, "--label-smoothing", "1.5"], "out of range"),
    Case("train: distilling from a model of other classes", ["train-teacher", "--model", "digits_cnn", "--dataset",
                                                             "digits", "--distill-from", "{teacher}", "--out",
                                                             "{tmp}/t.pt"], "predicts 4 classes"),
    Case("train: unknown precision", [*TRAIN, "--precision", "fp16"], "precision"),
    Case("train: zero batch size", [*TRAIN, "--batch-size", "0"], "batch_size=0 is out of range"),
    Case("train: CUDA without CUDA", [*TRAIN, "--device", "cuda"], "no CUDA device is visible"),
    Case("train: unknown device", [*TRAIN, "--device", "tpu"], "is not a device"),
    Case("train: resume without a checkpoint", [*TRAIN, "--resume"], "does not exist"),
    Case("train: resume a finished teacher", ["train-teacher", "--dataset", "synthetic", "--out", "{teacher}",
                                              "--resume"], "finished run"),
    Case("train: batch not divisible by torchrun ranks", [*TRAIN, "--batch-size", "15"], "does not split evenly",
         env={"WORLD_SIZE": "2", "RANK": "0"}),
    # evaluate
    Case("evaluate: missing checkpoint", ["evaluate", "{tmp}/missing.pt"], "does not exist"),
    Case("evaluate: a 1-channel model on 3-channel data", ["evaluate", "{tmp}/t.pt"],
         "the model takes 1-channel images, but synthetic has 3", files={"t.pt": "TEACHER_ONE_CHANNEL"}),
    Case("evaluate: weights that do not fit the architecture", ["evaluate", "{tmp}/t.pt"],
         "size mismatch for fc.weight", files={"t.pt": "TEACHER_WEIGHTS_NOT_FITTING"}),
    Case("evaluate: truncated checkpoint", ["evaluate", "{tmp}/cut.pt"], "corrupt or truncated",
         files={"cut.pt": "TRUNCATED_TEACHER"}),
    Case("evaluate: JSON given as a checkpoint", ["evaluate", "{tmp}/p.json"], "corrupt or truncated",
         files={"p.json": "{}"}),
    Case("evaluate: checkpoint without arch", ["evaluate", "{tmp}/noarch.pt"], "arch entry is missing",
         files={"noarch.pt": "TEACHER_WITHOUT_ARCH"}),
    Case("evaluate: architecture is an untrusted .py file", ["evaluate", "{tmp}/pyarch.pt"], "--trust-model-code",
         files={"pyarch.pt": "TEACHER_NAMING_A_PY_FILE"}),
    Case("evaluate: --trust-model-code names no file", ["evaluate", "{teacher}", "--trust-model-code",
                                                        "{tmp}/none.py"], "no such file"),
    Case("evaluate: a GPU index that is not there", ["evaluate", "{teacher}", "--device", "cuda:7"], "CUDA"),
    # apply
    Case("apply: policy missing", ["apply", "--teacher", "{teacher}", "--policy", "{tmp}/none.json", "--out",
                                   "{tmp}/s.pt"], "does not exist"),
    policy_case("apply: policy is not JSON", "not valid JSON", "{keep: 0.5"),
    Case("apply: policy is not UTF-8", APPLY, "is not UTF-8 text (byte 0 is 0xff)",
         files={"p.json": b"\xff\xfe{\x00}\x00"}),
    Case("apply: policy is a folder", [*APPLY[:4], "{tmp}/pdir", *APPLY[5:]], "is a directory, not a file",
         files={"pdir/keep.txt": "kept"}),
    Case("apply: --out is a folder", [*APPLY[:6], "{tmp}/out"], "is a folder; name a file to write",
         files={"p.json": '{"schema_version": 1}', "out/keep.txt": "kept"}),
    policy_case("apply: policy is a JSON list", "JSON object", "[1, 2]"),
    policy_case("apply: keep ratio is a string", "keep_ratios must hold unit names with keep ratios",
                {"keep_ratios": {"conv1": "0.5"}}),
    policy_case("apply: keep ratio above 1", "must lie in (0, 1]", {"keep_ratios": {"conv1": 1.5}}),
    policy_case("apply: unknown unit", "unknown pruning unit", {"keep_ratios": {"nope": 0.5}}),
    policy_case("apply: unsupported schema", "not supported", '{"schema_version": 7}'),
    policy_case("apply: bits out of range", "use 2-8 or 32", {"bits": {"conv1": 9}}),
    policy_case("apply: sparsity of 1", "must lie in [0, 1)", {"sparsity": {"conv1": 1.0}}),
    policy_case("apply: block that cannot be removed", "not a removable block", {"removed_blocks": ["conv1"]}),
    policy_case("apply: a ViT's policy on a CNN", "policy is for vit_tiny, the teacher is resnet8",
                {"architecture": "vit_tiny", "keep_ratios": {"blocks.0.attn.qkv": 0.5}}),
    Case("apply: policy for another architecture", ["apply", "--teacher", "{other}", "--policy", "{policy}",
                                                    "--out", "{tmp}/s.pt"], "policy is for"),
    Case("apply: fingerprint removed, other architecture", ["apply", "--teacher", "{other}", "--policy",
                                                            "{tmp}/p.json", "--out", "{tmp}/s.pt"], "policy is for",
         files={"p.json": "POLICY_WITHOUT_FINGERPRINT"}),
    Case("apply: --out is the teacher", ["apply", "--teacher", "{teacher}", "--policy", "{policy}", "--out",
                                         "{teacher}"], "is also the --teacher"),
    Case("apply: --out is the policy", ["apply", "--teacher", "{teacher}", "--policy", "{policy}", "--out",
                                        "{policy}"], "is also the --policy"),
    # baseline
    Case("baseline: unknown method", ["baseline", "magic", "--teacher", "{teacher}", "--flops", "0.5", "--out",
                                      "{tmp}/p.json"], "unknown baseline"),
    Case("baseline: no budget", ["baseline", "uniform", "--teacher", "{teacher}", "--out", "{tmp}/p.json"], "budget"),
    Case("baseline: budget of 0", ["baseline", "uniform", "--teacher", "{teacher}", "--flops", "0", "--out",
                                   "{tmp}/p.json"], "flops=0 is out of range"),
    Case("baseline: budget above 1", ["baseline", "uniform", "--teacher", "{teacher}", "--flops", "1.5", "--out",
                                      "{tmp}/p.json"], "budget"),
    Case("baseline: impossible budget", ["baseline", "uniform", "--teacher", "{teacher}", "--flops", "0.0001",
                                         "--out", "{tmp}/p.json"], "cannot be met"),
    Case("baseline: unknown importance", ["baseline", "global", "--teacher", "{teacher}", "--flops", "0.5",
                                          "--importance", "magic", "--out", "{tmp}/p.json"], "importance"),
    Case("baseline: per-layer cap of 1.5", ["baseline", "global", "--teacher", "{teacher}", "--flops", "0.5",
                                            "--max-pruning-ratio", "1.5", "--out", "{tmp}/p.json"],
         "max_pruning_ratio=1.5 is out of range"),
    Case("baseline: --out is the teacher", ["baseline", "uniform", "--teacher", "{teacher}", "--flops", "0.5",
                                            "--out", "{teacher}"], "is also the --teacher"),
    # finetune
    Case("finetune: a teacher given as the student", ["finetune", "--student", "{other}", "--teacher", "{teacher}",
                                                      "--out", "{tmp}/s.pt"], "not a student checkpoint"),
    Case("finetune: student of another teacher", ["finetune", "--student", "{student}", "--teacher", "{other}",
                                                  "--out", "{tmp}/s.pt"], "was not compressed from"),
    Case("finetune: resume a finished fine-tune", ["finetune", "--student", "{student}", "--teacher", "{teacher}",
                                                   "--out", "{student}", "--resume"], "is also the --student"),
    Case("finetune: resume asked in a config file", ["finetune", "--student", "{student}", "--teacher", "{teacher}",
                                                     "--config", "{tmp}/c.yaml", "--out", "{tmp}/s.pt"],
         "pass --resume instead", files={"c.yaml": "epochs: 1\nresume: true\n"}),
    Case("finetune: unknown optimizer", ["finetune", "--student", "{student}", "--teacher", "{teacher}",
                                         "--optimizer", "adam", "--out", "{tmp}/s.pt"],
         "unknown optimizer 'adam'; use auto, sgd or adamw"),
    Case("finetune: zero epochs", ["finetune", "--student", "{student}", "--teacher", "{teacher}", "--epochs", "0",
                                   "--out", "{tmp}/s.pt"], "no steps"),
    # search
    Case("search: unknown agent", [*SEARCH, "--set", "agent=ppo"], "unknown agent"),
    Case("search: unknown config key", [*SEARCH, "--set", "episods=10"], "unknown config keys"),
    Case("search: fractional episodes", [*SEARCH, "--set", "episodes=1.7"], "episodes"),
    Case("search: episodes as a word", [*SEARCH, "--set", "episodes=many"], "episodes"),
    Case("search: --set without =", [*SEARCH, "--set", "episodes"], "key=value"),
    Case("search: unreadable budget", [*SEARCH, "--set", "budget=flops=half"], "cannot read budget"),
    Case("search: unknown budget resource", [*SEARCH, "--set", "budget=energy=0.5"], "unknown budget resource"),
    Case("search: unknown mode", [*SEARCH, "--set", "mode=prune-everything"], "mode"),
    Case("search: impossible budget", [*SEARCH, "--set", "budget=flops=0.001"], "impossible"),
    Case("search: no workers", [*SEARCH, "--set", "workers=0"], "workers"),
    Case("search: unknown backend", [*SEARCH, "--set", "backend=slurm"], "backend"),
    Case("search: config file missing", ["search", "--config", "{tmp}/none.yaml"], "does not exist"),
    Case("search: config file not UTF-8", ["search", "--config", "{tmp}/c.yaml"], "is not UTF-8 text",
         files={"c.yaml": b"episodes: 10\n# \xe9t\xe9\n"}),
    Case("search: YAML syntax error", ["search", "--config", "{tmp}/bad.yaml"], "YAML",
         files={"bad.yaml": "episodes: [1, 2\nbudget: flops=0.5\n"}),
    Case("search: YAML that is a list", ["search", "--config", "{tmp}/list.yaml"], "YAML mapping",
         files={"list.yaml": "- episodes\n- 10\n"}),
    Case("search: init_policy of another teacher", [*SEARCH, "--set", "teacher={other}", "--set",
                                                    "init_policy={policy}"], "made for another teacher"),
    Case("search: init_policy for TPE", [*SEARCH, "--set", "agent=tpe", "--set", "init_policy={policy}"],
         "drop init_policy"),
    Case("search: init_policy global with an unknown importance", [*SEARCH, "--set", "init_policy=global", "--set",
                                                                   "global_importance=fisher"], "unknown importance"),
    Case("search: init_policy global beside quantization", [*SEARCH, "--set", "init_policy=global", "--set",
                                                            "mode=channel+quantize"], "channel mode only"),
    Case("search: resume a folder that is no run", ["search", "--resume", "{tmp}"], "not a run folder"),
    Case("search: resume with a truncated search_state.json", ["search", "--resume", "{tmp}/run"], "search_state.json",
         files={"run/config.yaml": "RUN_CONFIG", "run/search_state.json": '{"recorder": {"episo'}),
    Case("search: resume with an SB3 agent.zip", ["search", "--resume", "{tmp}/run"], "agent.zip",
         files={"run/config.yaml": "RUN_CONFIG", "run/agent.zip": b"PK\x03\x04 pickles inside"}),
    Case("search: resume without the replay buffer", ["search", "--resume", "{tmp}/run"], "resume_without_buffer=true",
         files={"run/config.yaml": "RUN_CONFIG", "run/agent.pt": "RUN_FILE:agent.pt",
                "run/search_state.json": "RUN_FILE:search_state.json"}),
    Case("search: resume with other worker count", ["search", "--resume", "{run}", "--set", "workers=2"],
         "resume with --set workers=1"),
    # export, profile-latency, policy predict, report
    Case("export: unknown format", ["export", "{student}", "--format", "tflite", "--out", "{tmp}/s.tfl"],
         "unknown export format"),
    Case("export: --out is the student", ["export", "{student}", "--out", "{student}"], "is also the --student"),
    Case("profile-latency: unreadable input shape", ["profile-latency", "resnet8", "--input-shape", "3,x",
                                                     "--out", "{tmp}/lut.json"], "--input-shape"),
    Case("profile-latency: unknown model", ["profile-latency", "resnet21", "--out", "{tmp}/lut.json"], "unknown model"),
    Case("profile-latency: unknown runtime", ["profile-latency", "resnet8", "--runtime", "tensorflow", "--out",
                                              "{tmp}/lut.json"], "unknown runtime"),
    Case("profile-latency: int8 in eager PyTorch", ["profile-latency", "resnet8", "--runtime-precision", "int8",
                                                    "--out", "{tmp}/lut.json"], "eager PyTorch runs fp32 only"),
    # deployed latency
    Case("evaluate: unknown runtime", ["evaluate", "{teacher}", "--runtime", "tflite"], "unknown runtime"),
    Case("evaluate: unknown runtime precision", ["evaluate", "{teacher}", "--runtime", "onnxruntime",
                                                 "--runtime-precision", "int4"], "choose fp32 or int8"),
    Case("baseline: latency budget without a table", ["baseline", "uniform", "--teacher", "{teacher}", "--latency",
                                                      "0.5", "--out", "{tmp}/p.json"], "amc profile-latency TEACHER"),
    Case("baseline: an eager table for onnxruntime", ["baseline", "uniform", "--teacher", "{teacher}", "--latency",
                                                      "0.5", "--latency-table", "{tmp}/lut.json", "--runtime",
                                                      "onnxruntime", "--out", "{tmp}/p.json"],
         "timed in eager PyTorch, not onnxruntime fp32", files={"lut.json": json.dumps(
             {"format": "amc-latency-table", "batch_size": 1, "threads": 1, "calibration": 1.0, "teacher_ms": 1.0,
              "layers": {}})}),
    Case("baseline: a damaged runtime table", ["baseline", "uniform", "--teacher", "{teacher}", "--latency", "0.5",
                                               "--latency-table", "{tmp}/lut.json", "--runtime", "onnxruntime",
                                               "--out", "{tmp}/p.json"], "damaged runtime latency table",
         files={"lut.json": json.dumps({"format": "amc-runtime-latency", "layers": []})}),
    Case("baseline: round_to as a word", ["baseline", "uniform", "--teacher", "{teacher}", "--flops", "0.5",
                                          "--round-to", "eight", "--out", "{tmp}/p.json"], "whole number"),
    Case("search: round_to below 1", [*SEARCH, "--set", "round_to=0"], "at least 1"),
    Case("policy predict: a checkpoint that is no agent", ["policy", "predict", "--agent", "{teacher}", "--teacher",
                                                           "{teacher}", "--out", "{tmp}/p.json"], "not an amc agent"),
    Case("policy predict: agent missing", ["policy", "predict", "--agent", "{tmp}/agent.pt", "--teacher", "{teacher}",
                                           "--out", "{tmp}/p.json"], "does not exist"),
    Case("policy predict: --out is the teacher", ["policy", "predict", "--agent", "{run}/agent.pt", "--teacher",
                                                  "{teacher}", "--out", "{teacher}"], "is also the --teacher"),
    Case("report: run folder missing", ["report", "{tmp}/none"], "run folder"),
    # the command line (the same for every command)
    Case("cli: unknown flag", ["finetune", "--bogus", "1"], "unrecognized arguments"),
    Case("cli: flag of the wrong type", ["finetune", "--epochs", "1.5"], "not a valid int"),
    Case("cli: config key of the wrong type", ["baseline", "uniform", "--config", "{tmp}/c.yaml"],
         "not a valid float", files={"c.yaml": "teacher: t.pt\nflops: lots\n"}),
    Case("cli: config file not a mapping", ["finetune", "--config", "{tmp}/c.yaml"], "must hold a YAML mapping",
         files={"c.yaml": "- epochs\n"}),
    Case("cli: unknown config key", ["apply", "--config", "{tmp}/c.yaml"], "unknown config keys",
         files={"c.yaml": "recalibrate: 5\n"}),
    Case("cli: switch set to a non-boolean", [*APPLY, "--set", "force=maybe"], "not a valid bool"),
]  # fmt: skip


def workspace(root: Path) -> dict[str, str]:
    """A teacher, a policy, a student, a finished search and another architecture's teacher."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {k: str(root / n) for k, n in (("teacher", "teacher.pt"), ("policy", "policy.json"),
                                           ("student", "student.pt"), ("other", "other.pt"))}  # fmt: skip
    quiet = io.StringIO()
    with redirect_stdout(quiet), redirect_stderr(quiet):
        assert main(["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "1", "--precision",
                     "fp32", "--out", paths["teacher"]]) == 0  # fmt: skip
        assert main(["train-teacher", "--model", "plain20", "--dataset", "synthetic", "--epochs", "0",
                     "--out", paths["other"]]) == 0  # fmt: skip
        assert main(["baseline", "uniform", "--teacher", paths["teacher"], "--flops", "0.5", "--out",
                     paths["policy"]]) == 0  # fmt: skip
        assert main(["apply", "--teacher", paths["teacher"], "--policy", paths["policy"], "--out",
                     paths["student"]]) == 0  # fmt: skip
        assert main(["search", "--set", f"teacher={paths['teacher']}", "--set", f"out_dir={root / 'runs'}", "--set",
                     "episodes=2", "--set", "warmup_episodes=1", "--set", "eval_samples=32", "--set",
                     "report_samples=32", "--set", "report_latency_repeats=2"]) == 0  # fmt: skip
    paths["run"] = str(next((root / "runs").iterdir()))
    return paths


def special_file(marker: str, paths: dict[str, str], tmp: Path) -> bytes | str:
    """Files made from the workspace's own (a truncated checkpoint, one without arch, ...)."""
    teacher = Path(paths["teacher"])
    if marker == "TRUNCATED_TEACHER":
        return teacher.read_bytes()[:2000]
    if marker == "TEACHER_ONE_CHANNEL":  # the workspace's teacher, rebuilt for grayscale images
        blob = torch.load(teacher, weights_only=True)
        blob["arch"]["kwargs"]["in_channels"] = 1
        blob["state_dict"] = create_from_spec(blob["arch"]).state_dict()
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        return buffer.getvalue()
    if marker in ("TEACHER_WITHOUT_ARCH", "TEACHER_NAMING_A_PY_FILE", "TEACHER_WEIGHTS_NOT_FITTING"):
        blob = torch.load(teacher, weights_only=True)
        if marker == "TEACHER_WITHOUT_ARCH":
            blob.pop("arch")
        elif marker == "TEACHER_WEIGHTS_NOT_FITTING":
            blob["arch"]["num_classes"] += 3
        else:
            blob["arch"]["name"] = f"{tmp}/net.py:Net"
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        return buffer.getvalue()
    if marker == "POLICY_WITHOUT_FINGERPRINT":
        policy = json.loads(Path(paths["policy"]).read_text())
        policy["fingerprint"] = ""
        return json.dumps(policy)
    if marker == "RUN_CONFIG":
        return (Path(paths["run"]) / "config.yaml").read_text()
    if marker.startswith("RUN_FILE:"):  # a copy of one file of the finished search's run folder
        return (Path(paths["run"]) / marker.split(":", 1)[1]).read_bytes()
    return marker


def fill(text: str, paths: dict[str, str], tmp: Path) -> str:
    return text.format(tmp=tmp, **paths)


def snapshot(folders: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*"))
            if p.is_file()}  # fmt: skip


def run_case(case: Case, paths: dict[str, str], tmp: Path) -> tuple[int, str, dict, dict]:
    """Exit status, stderr, and the workspace's and case folder's files before and after."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name, content in case.files.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("SYMLINK:"):  # a link to {tmp}/<the rest>
            target.symlink_to(tmp / content.split(":", 1)[1])
            continue
        content = special_file(content, paths, tmp) if isinstance(content, str) else content
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    folders = [Path(paths["teacher"]).parent, tmp]
    before = snapshot(folders)
    saved_env = {k: os.environ.get(k) for k in case.env}
    os.environ.update(case.env)
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([fill(a, paths, tmp) for a in case.argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    finally:
        for key, value in saved_env.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    after = snapshot(folders)
    return code, err.getvalue(), before, after


def case_message(err: str, scratch: str) -> str:
    """A case's line as the page shows it: the scratch folder as `…`, a run folder's time as `<time>`."""
    message = err.strip().splitlines()[-1] if err.strip() else "(nothing)"
    return re.sub(r"search-\d{8}-\d{6}", "search-<time>", message.replace(scratch, "…")).replace("|", "\\|")


def page(answers: list[tuple[int, str]]) -> str:
    """docs/bad_inputs.md from each case's (exit status, message): the cases run in `<scratch>/case<i>`, beside
    the workspace in `<scratch>/work`."""
    from fuzz_inputs import FUZZ_MARKERS, fuzz_block

    rows = []
    for i, (case, (code, message)) in enumerate(zip(CASES, answers, strict=True)):
        command = " ".join(case.argv).replace("|", "\\|")
        rows.append(f"| {i + 1} | {case.id} | `amc {command}` | {code} | {message} |")
    return "\n".join([
        "# Bad inputs and what amc says", "",
        f"Generated by `python tests/bad_inputs.py` from the table in that file ({len(CASES)} cases);",
        "`tests/test_bad_inputs.py` checks every row: exit status 2, one line, and no file already there changed,",
        "and that this page is what the cases print.",
        "In commands, {teacher}, {policy}, {student}, {run} and {other} are made first (a ResNet-8 teacher, its",
        "uniform policy and student, a finished search, a Plain-20 teacher); {tmp} is the case's own folder.",
        "In messages, `…` stands for the scratch folder the cases ran in. The experiment scripts answer bad rows",
        "and flags the same way (`tests/test_experiment_scripts.py`).", "",
        "| # | case | command | exit | message |", "|---|---|---|---|---|", *rows, "",
        "## The fuzzer", "", FUZZ_MARKERS[0], "", *fuzz_block(fuzz_rows()), "", FUZZ_MARKERS[1],
    ]) + "\n"  # fmt: skip


def write_table(path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["AMC_CACHE"] = f"{scratch}/cache"
        paths = workspace(Path(scratch) / "work")
        answers = []
        for i, case in enumerate(CASES):
            code, err, _, _ = run_case(case, paths, Path(scratch) / f"case{i}")
            answers.append((code, case_message(err, scratch)))
    path.write_text(page(answers))


def fuzz_rows() -> list[dict]:
    path = Path(__file__).resolve().parents[1] / "experiments" / "results" / "fuzz.json"
    return json.loads(path.read_text()) if path.exists() else []


if __name__ == "__main__":
    write_table(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/bad_inputs.md"))
