"""Experiment scripts answer bad input the way the CLI does: one line, exit 2, before any work starts."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD_SECONDS

EXPERIMENTS = Path(__file__).parents[1] / "experiments"

CASES = [
    (["compare_searchers_c10.py", "run", "--rows", "ddpg:0", "ddpg:x"], "must be METHOD:SEED"),
    (["compare_searchers_c10.py", "run", "--rows", "dqn:0"], "must be METHOD:SEED"),
    (["compare_searchers_c10.py", "rn"], "invalid choice"),
    (["benchmark_cifar10.py", "--rows", "resnet20:ddpg-chanel"], "must be MODEL:METHOD"),
]


@pytest.mark.parametrize("argv, expect", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_rows_are_one_line_and_exit_2(argv, expect, tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(EXPERIMENTS / argv[0]), *argv[1:], "--results", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-1500:]
    assert len(lines) == 1 and expect in lines[0], done.stderr[-1500:]
    assert not out.exists() and not (tmp_path / "runs").exists()  # nothing ran
