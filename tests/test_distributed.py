"""`torchrun --nproc_per_node=2 amc train-teacher|finetune`: two gloo processes on the CPU train one model."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import HANG_GUARD_SECONDS

from agents.cli import main
from amc.checkpoint import load_checkpoint
from amc.compress.student import load_student, model_from_checkpoint

TRAIN = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--lr", "0.05", "--precision", "fp32",
         "--batch-size", "16"]  # fmt: skip


def torchrun(args, cwd, processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "agents.cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)


@pytest.fixture(scope="module")
def two_process_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    done = torchrun([*TRAIN, "--epochs", "3", "--out", str(root / "teacher.pt")], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


def test_two_processes_train_a_teacher_whose_loss_falls(two_process_teacher):
    root, done = two_process_teacher
    blob = load_checkpoint(root / "teacher.pt")
    losses = [epoch["loss"] for epoch in blob["history"]]
    assert blob["world_size"] == 2 and len(losses) == 3 and losses[-1] < losses[0]
    assert done.stdout.count("accuracy") >= 1 and "torchrun: 2 processes, 8 images each per step" in done.stdout


def test_the_two_process_checkpoint_loads_like_a_one_process_one(two_process_teacher, tmp_path, capsys):
    root, _ = two_process_teacher
    assert main([*TRAIN, "--epochs", "1", "--out", str(tmp_path / "single.pt")]) == 0
    single, distributed = load_checkpoint(tmp_path / "single.pt"), load_checkpoint(root / "teacher.pt")
    assert single["state_dict"].keys() == distributed["state_dict"].keys()  # no DDP "module." prefix
    assert all(single["state_dict"][k].shape == v.shape for k, v in distributed["state_dict"].items())
    assert model_from_checkpoint(distributed)(torch.zeros(2, 3, 16, 16)).shape == (2, 4)


def test_two_processes_fine_tune_a_student(two_process_teacher, capsys):
    root, _ = two_process_teacher
    teacher, policy, student, tuned = (root / n for n in ("teacher.pt", "p.json", "s.pt", "s_ft.pt"))
    assert main(["baseline", "uniform", "--teacher", str(teacher), "--flops", "0.5", "--out", str(policy)]) == 0
    assert main(["apply", "--teacher", str(teacher), "--policy", str(policy), "--out", str(student)]) == 0
    done = torchrun(["finetune", "--student", str(student), "--teacher", str(teacher), "--epochs", "3",
                     "--batch-size", "16", "--precision", "fp32", "--out", str(tuned), "--json"], cwd=root)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])  # rank 0 alone prints
    assert result["world_size"] == 2
    assert "train_state" not in load_checkpoint(tuned)  # finished
    assert load_student(tuned)(torch.zeros(2, 3, 16, 16)).shape == (2, 4)


def test_a_batch_that_does_not_split_among_the_ranks_is_one_line(tmp_path, capsys, monkeypatch):
    """What each torchrun rank does (torchrun itself then reports the failed ranks)."""
    for rank in ("0", "1"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        assert main(["train-teacher", "--dataset", "synthetic", "--batch-size", "15", "--out",
                     str(tmp_path / "t.pt")]) == 2  # fmt: skip
        err = capsys.readouterr().err
        expected = ["amc train-teacher: error: --batch-size 15 does not split evenly among 2 torchrun processes; "
                    "pass a multiple of 2"] if rank == "0" else []  # fmt: skip
        assert err.strip().splitlines() == expected
