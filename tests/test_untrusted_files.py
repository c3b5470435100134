"""Files a search reads back (agents, replay buffers) never run code, however they were crafted."""

import os
import shutil

import numpy as np
import pytest
import torch

from agents.cli import main

TINY = ["--set", "episodes=2", "--set", "warmup_episodes=1", "--set", "eval_samples=32", "--set",
        "recalibrate_batches=2", "--set", "precision=fp32", "--set", "batch_size=8"]  # fmt: skip


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("searched")
    teacher = root / "teacher.pt"
    argv = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "1", "--precision", "fp32",
            "--out", str(teacher)]  # fmt: skip
    assert main(argv) == 0
    assert main(["search", "--set", f"teacher={teacher}", "--set", f"out_dir={root / 'runs'}", *TINY]) == 0
    return teacher, next((root / "runs").iterdir())


def crafted_agent(path, marker) -> None:
    torch.save({"format": "amc-agent/1", "parameters": Payload(marker)}, path)


def crafted_buffer(path, marker) -> None:
    with open(path, "wb") as f:
        np.savez(f, observations=np.array([Payload(marker)], dtype=object))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("option", ["init-agent", "predict"])
def test_a_crafted_agent_runs_nothing(option, searched, tmp_path, capsys):
    teacher, _ = searched
    evil, marker = tmp_path / "agent.pt", tmp_path / "ran"
    crafted_agent(evil, marker)
    if option == "init-agent":
        argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path / 'runs'}", *TINY,
                "--init-agent", str(evil)]  # fmt: skip
    else:
        argv = ["policy", "predict", "--agent", str(evil), "--teacher", str(teacher), "--out", str(tmp_path / "p.json")]
    assert main(argv) == 2
    assert "not an amc agent" in one_line_error(capsys)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["agent", "buffer"])
def test_a_crafted_file_in_a_run_folder_runs_nothing_on_resume(kind, searched, tmp_path, capsys):
    _, run_dir = searched
    copy, marker = tmp_path / "run", tmp_path / "ran"
    shutil.copytree(run_dir, copy)
    if kind == "agent":
        crafted_agent(copy / "agent.pt", marker)
    else:
        crafted_buffer(copy / "replay_buffer.npz", marker)
    assert main(["search", "--resume", str(copy)]) == 2
    assert "not an amc" in one_line_error(capsys)
    assert not marker.exists()


def test_an_sb3_agent_zip_is_refused_unopened(searched, tmp_path, capsys):
    teacher, _ = searched
    legacy = tmp_path / "agent.zip"
    legacy.write_bytes(b"PK\x03\x04 anything")
    argv = ["policy", "predict", "--agent", str(legacy), "--teacher", str(teacher), "--out", str(tmp_path / "p.json")]
    assert main(argv) == 2
    assert "amc no longer reads" in one_line_error(capsys)


def test_agent_and_buffer_round_trip_through_resume(searched, tmp_path, capsys):
    _, run_dir = searched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with np.load(copy / "replay_buffer.npz", allow_pickle=False) as before:
        old = np.roll(before["observations"], -int(before["pos"]), axis=0) if before["full"] else before["observations"]
    assert main(["search", "--resume", str(copy), "--set", "episodes=3"]) == 0  # a longer buffer than saved
    with np.load(copy / "replay_buffer.npz", allow_pickle=False) as after:
        assert np.array_equal(after["observations"][: len(old)], old)  # the earlier episodes kept, oldest first
        assert len(after["observations"]) == len(old) * 3 // 2 and np.isfinite(float(after["baseline"]))


MODEL_FILE = """
import pathlib
pathlib.Path({marker!r}).touch()  # what a malicious model file could do on import
import torch.nn as nn
class Net(nn.Sequential):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__(nn.Conv2d(in_channels, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))
"""


@pytest.fixture
def checkpoint_naming_a_model_file(tmp_path):
    """A teacher checkpoint whose architecture is a user's .py file, and a marker that file would create."""
    marker, model_file = tmp_path / "ran", tmp_path / "net.py"
    model_file.write_text(MODEL_FILE.format(marker=str(marker)))
    teacher = tmp_path / "teacher.pt"
    assert main(["train-teacher", "--model", f"{model_file}:Net", "--dataset", "synthetic", "--epochs", "0",
                 "--out", str(teacher)]) == 0  # fmt: skip
    marker.unlink()  # naming the file as --model trusted it; a later command starts without that
    os.environ["AMC_TRUST_MODEL_CODE"] = ""
    return teacher, model_file, marker


@pytest.mark.parametrize("command", ["evaluate", "apply", "baseline", "search", "export"])
def test_a_checkpoint_naming_a_model_file_runs_nothing_without_consent(command, checkpoint_naming_a_model_file,
                                                                        tmp_path, capsys):  # fmt: skip
    teacher, model_file, marker = checkpoint_naming_a_model_file
    policy, student = str(tmp_path / "p.json"), str(tmp_path / "s.pt")
    argv = {
        "evaluate": ["evaluate", str(teacher)],
        "apply": ["apply", "--teacher", str(teacher), "--policy", policy, "--out", student],
        "baseline": ["baseline", "uniform", "--teacher", str(teacher), "--flops", "0.5", "--out", policy],
        "search": ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path / 'runs'}", *TINY],
        "export": ["export", str(teacher), "--out", str(tmp_path / "t.ts")],
    }[command]  # fmt: skip
    if command == "apply":
        (tmp_path / "p.json").write_text('{"schema_version": 1, "keep_ratios": {}}')
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pass --trust-model-code {model_file}" in err[0]
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_trust_model_code_names_the_file_and_then_it_loads(checkpoint_naming_a_model_file, capsys):
    teacher, model_file, marker = checkpoint_naming_a_model_file
    assert main(["evaluate", str(teacher), "--latency-repeats", "2", "--trust-model-code", str(model_file)]) == 0
    assert marker.exists()
    assert main(["evaluate", str(teacher), "--trust-model-code", str(model_file.with_name("other.py"))]) == 2
    assert "--trust-model-code" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "finetune"])
def test_a_crafted_checkpoint_runs_nothing(command, searched, tmp_path, capsys):
    teacher, _ = searched
    marker, crafted = tmp_path / "ran", tmp_path / "crafted.pt"
    torch.save({"format": "amc-checkpoint", "state_dict": Payload(marker)}, crafted)
    argv = {"evaluate": ["evaluate", str(crafted)],
            "finetune": ["finetune", "--student", str(crafted), "--teacher", str(teacher), "--out",
                         str(tmp_path / "s.pt")]}[command]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or truncated" in err[0]
    assert not marker.exists()


def test_a_crafted_yaml_config_runs_nothing(tmp_path, capsys):
    marker, config = tmp_path / "ran", tmp_path / "search.yaml"
    config.write_text(f"episodes: !!python/object/apply:os.system ['touch {marker}']\n")
    capsys.readouterr()
    assert main(["search", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML" in err[0]
    assert not marker.exists()
