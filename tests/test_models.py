import pytest
import torch
from conftest import HANG_GUARD_SECONDS, model_input, model_kwargs

from amc.errors import AmcError
from amc.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_gives_the_right_output_shape(name):
    model = create_model(name, num_classes=7, **model_kwargs(name)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *model_input(name)))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_user_model_from_file(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(12, num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
    )
    model = create_model(f"{tmp_path / 'net.py'}:Net", num_classes=3)
    assert model(torch.randn(1, 3, 2, 2)).shape == (1, 3)
    with pytest.raises(AmcError, match="has no class 'Missing'"):
        create_model(f"{tmp_path / 'net.py'}:Missing")


def test_unknown_model_names_are_refused():
    with pytest.raises(AmcError, match="unknown model"):
        create_model("resnet21")
    with pytest.raises(AmcError, match="unknown torchvision model"):
        create_model("tv:not_a_model")


def test_core_imports_without_gymnasium_sb3_or_ray():
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, amc\n"
        "for m in pkgutil.walk_packages(amc.__path__, 'amc.'): importlib.import_module(m.name)\n"
        "bad = [m for m in ('gymnasium', 'stable_baselines3', 'ray', 'envs', 'agents') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG_GUARD_SECONDS)
