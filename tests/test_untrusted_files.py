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
