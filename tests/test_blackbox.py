"""Optuna's TPE and CMA-ES through the search runner: same env, wall, logging, checkpoints and resume."""

import json
import sys

import pytest

from agents.cli import main

TINY = ["--set", "warmup_episodes=2", "--set", "eval_samples=32", "--set", "recalibrate_batches=2",
        "--set", "precision=fp32"]  # fmt: skip


def search(teacher_path, out_dir, agent, *extra):
    return ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={out_dir}", "--set", f"agent={agent}",
            *TINY, *extra]  # fmt: skip


@pytest.mark.parametrize("agent", ["tpe", "cmaes"])
def test_blackbox_searchers_meet_the_budget_and_log_every_trial(agent, teacher_path, tmp_path, capsys):
    assert main([*search(teacher_path, tmp_path, agent, "--set", "episodes=6", "--set", "workers=2"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["episodes"] == 6 and results["flops_ratio"] <= 0.5 + 1e-6
    run_dir = next(tmp_path.iterdir())
    state = json.loads((run_dir / "search_state.json").read_text())
    assert len(state["trials"]) == 6 and len({json.dumps(t["params"]) for t in state["trials"]}) == 6
    assert max(t["reward"] for t in state["trials"]) == results["best_reward"]


def test_tpe_resumes_with_its_trials(teacher_path, tmp_path, capsys, interrupt_third_episode):
    assert main(search(teacher_path, tmp_path, "tpe", "--set", "episodes=5")) == 130
    run_dir = next(tmp_path.iterdir())
    assert len(json.loads((run_dir / "search_state.json").read_text())["trials"]) == 3  # told, then interrupted
    interrupt_third_episode()  # undo
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 5
    assert len(json.loads((run_dir / "search_state.json").read_text())["trials"]) == 6


def test_missing_optuna_says_how_to_install_it(teacher_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    out = tmp_path / "runs"
    assert main(search(teacher_path, out, "tpe")) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'amc[optuna]'" in err and len(err.splitlines()) == 1
    assert not out.exists()
