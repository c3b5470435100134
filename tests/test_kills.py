"""The hard-kill script, briefly (`pytest -m slow`; the full run is `python experiments/kill_test.py`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_GUARD_SECONDS


@pytest.mark.slow
def test_search_finetune_and_train_teacher_survive_random_kills(tmp_path):
    out = tmp_path / "kills.json"
    script = Path(__file__).parents[1] / "experiments" / "kill_test.py"
    done = subprocess.run([sys.executable, str(script), "--kills", "3", "--episodes", "20", "--epochs", "8",
                           "--out", str(out)], capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text())
    for name in ("search", "finetune", "train-teacher"):
        assert results[name]["kills"] == 3 and results[name]["max_lost"] <= 1 and results[name]["completed"]
