import pytest
import torch

from amc.data import load_synthetic
from amc.models import create_model


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AMC_CACHE", str(tmp_path / "cache"))
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
