"""NaN and inf: a diverging fine-tune or a NaN reward stops in one line and keeps the last good checkpoint."""

import itertools

import torch

import amc.train.distill
import envs.compression
from agents.cli import main
from amc.checkpoint import load_checkpoint
from amc.compress.policy import CompressionPolicy


def error_lines(err: str) -> list[str]:
    """stderr without the progress bars: what a user reads as the command's message."""
    assert "Traceback" not in err
    return [line for line in err.strip().splitlines() if "error:" in line]


def nan_from_call(real, first_bad: int):
    calls = itertools.count(1)

    def patched(*args, **kwargs):
        value = real(*args, **kwargs)
        return value * float("nan") if next(calls) >= first_bad else value

    return patched


def test_a_diverging_finetune_stops_in_one_line_and_keeps_the_last_good_epoch(teacher_path, tmp_path, capsys,
                                                                               monkeypatch):  # fmt: skip
    policy, student, tuned = tmp_path / "p.json", tmp_path / "s.pt", tmp_path / "s_ft.pt"
    assert main(["baseline", "uniform", "--teacher", str(teacher_path), "--flops", "0.5", "--out", str(policy)]) == 0
    assert main(["apply", "--teacher", str(teacher_path), "--policy", str(policy), "--out", str(student)]) == 0
    real = amc.train.distill.distillation_loss
    monkeypatch.setattr(amc.train.distill, "distillation_loss", lambda *a, **k: nan_from_call(real(*a, **k), 8))
    argv = ["finetune", "--student", str(student), "--teacher", str(teacher_path), "--epochs", "3", "--batch-size",
            "16", "--precision", "fp32", "--out", str(tuned)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "training loss became nan" in err[0]
    assert load_checkpoint(tuned)["train_state"]["epoch"] == 1  # six steps an epoch: the first epoch was good
    monkeypatch.setattr(amc.train.distill, "distillation_loss", real)
    assert main([*argv, "--resume"]) == 0


def test_a_nan_reward_stops_the_search_in_one_line_and_keeps_its_checkpoint(teacher_path, tmp_path, capsys,
                                                                             monkeypatch):  # fmt: skip
    real = envs.compression.get_reward
    monkeypatch.setattr(envs.compression, "get_reward", lambda name: nan_from_call(real(name), 4))
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", "--set", "episodes=6",
            "--set", "warmup_episodes=6", "--set", "eval_samples=32", "--set", "recalibrate_batches=1"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "reward came out nan" in err[0]
    (run_dir,) = tmp_path.glob("search-*")
    assert CompressionPolicy.load(run_dir / "policy.json").metadata["episode"] <= 3
    monkeypatch.setattr(envs.compression, "get_reward", real)
    assert main(["search", "--resume", str(run_dir)]) == 0
    assert torch.load(run_dir / "student.pt", weights_only=True)["kind"] == "student"
