import subprocess
import sys

import pytest
import torch

import agents.callbacks
from agents.cli import main
from amc.data import load_synthetic
from amc.models import create_model

HANG_GUARD_SECONDS = 1800
"""Timeout of the tests' subprocesses: a guard against a hang only, never a speed check (a loaded machine is slow)."""


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AMC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AMC_TRUST_MODEL_CODE", "")  # model files trusted by one test stay out of the next
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))  # SB3's default logger folder, else one per learn() in /tmp
    torch.manual_seed(0)


@pytest.fixture
def synthetic():
    return load_synthetic(num_classes=4, image_size=16, per_class=40)


@pytest.fixture
def tiny_resnet():
    """ResNet-8 (one block per stage): residual coupling at test speed."""
    return create_model("resnet8", num_classes=4).eval()


def model_input(name: str) -> tuple[int, int, int]:
    return (1, 8, 8) if name == "digits_cnn" else (3, 32, 32)


def model_kwargs(name: str) -> dict:
    if name == "digits_cnn":
        return {"in_channels": 1}
    if name.startswith("tv:"):
        return {"small_input": True}
    return {}


KILL_AT_SIXTH_EPISODE = """
import os, signal, sys
import agents.callbacks
from agents.cli import main
real = agents.callbacks.EpisodeRecorder.on_episode
def kill_at_sixth(self, info, sigma=None):
    if self.episodes == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, info, sigma)
agents.callbacks.EpisodeRecorder.on_episode = kill_at_sixth
main(sys.argv[1:])
"""


@pytest.fixture
def search_killed_at_sixth_episode():
    """Runs `amc ARGV` in a subprocess that SIGKILLs itself when its sixth episode ends (a hard kill)."""

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", KILL_AT_SIXTH_EPISODE, *argv], capture_output=True, timeout=HANG_GUARD_SECONDS
        )

    return run


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A ResNet-8 teacher trained for two epochs on the synthetic data, once per test module."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    argv = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "2", "--lr", "0.05",
            "--precision", "fp32", "--out", str(path)]  # fmt: skip
    assert main(argv) == 0
    return path


@pytest.fixture
def interrupt_third_episode(monkeypatch):
    """The next search raises KeyboardInterrupt (as Ctrl-C would) in its third episode; call the returned
    function to let later searches run undisturbed."""
    real = agents.callbacks.EpisodeRecorder.on_episode

    def interrupt_at_third(self, info, sigma=None):
        if self.episodes == 2:
            raise KeyboardInterrupt
        real(self, info, sigma)

    monkeypatch.setattr(agents.callbacks.EpisodeRecorder, "on_episode", interrupt_at_third)
    return lambda: monkeypatch.setattr(agents.callbacks.EpisodeRecorder, "on_episode", real)
