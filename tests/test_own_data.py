"""A user's own images go in as they are: grayscale stays one channel, sizes are kept, and the model is told."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from agents.cli import main
from amc.checkpoint import load_checkpoint
from amc.compress.student import model_from_checkpoint
from amc.data import load_imagefolder
from amc.errors import AmcError


def write_images(root, *, mode="L", size=(12, 12), classes=2, per_class=6, odd_one=None):
    """An ImageFolder of generated images: each class a brightness level plus noise."""
    rng = np.random.default_rng(0)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(60 + 120 * c + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    if odd_one is not None:
        Image.new("L", odd_one).save(root / "train" / "class0" / "odd.png")
    return root


def test_grayscale_images_keep_their_channel_and_size(tmp_path):
    data = load_imagefolder(write_images(tmp_path / "gray"))
    assert data.input_shape == (1, 12, 12) and data.num_classes == 2 and len(data.mean) == 1


def test_image_size_and_channels_are_options(tmp_path):
    data = load_imagefolder(write_images(tmp_path / "gray"), image_size=16, channels=3)
    assert data.input_shape == (3, 16, 16)
    assert load_imagefolder(write_images(tmp_path / "rgb", mode="RGB", size=(20, 14))).input_shape == (3, 14, 20)


def test_images_of_different_sizes_ask_for_image_size(tmp_path):
    root = write_images(tmp_path / "mixed", odd_one=(9, 9))
    with pytest.raises(AmcError, match=r"differ in size .* pass --image-size"):
        load_imagefolder(root)
    assert load_imagefolder(root, image_size=12).input_shape == (1, 12, 12)


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model", ["resnet8", "tv:mobilenet_v3_small"])
def test_a_grayscale_teacher_trains_and_compresses(model, tmp_path, capsys):
    root, teacher, policy = write_images(tmp_path / "gray"), tmp_path / "t.pt", tmp_path / "p.json"
    code, out, err = run(["train-teacher", "--model", model, "--dataset", "imagefolder", "--data-dir", str(root),
                          "--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--out", str(teacher)],
                         capsys)  # fmt: skip
    assert code == 0, err
    assert "inputs: grayscale 12x12" in out
    assert ("small_input: on" in out) == model.startswith("tv:")
    blob = load_checkpoint(teacher)
    assert blob["dataset"]["input_shape"] == [1, 12, 12]
    assert model_from_checkpoint(blob)(torch.zeros(2, 1, 12, 12)).shape == (2, 2)
    code, out, err = run(["baseline", "uniform", "--teacher", str(teacher), "--flops", "0.5", "--out", str(policy),
                          "--json"], capsys)  # fmt: skip
    assert code == 0, err
    code, out, err = run(["apply", "--teacher", str(teacher), "--policy", str(policy), "--out",
                          str(tmp_path / "s.pt"), "--recalibrate-bn", "1", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["flops_ratio"] <= 0.5


def test_a_user_model_without_in_channels_gets_one_line(tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(8, num_classes))\n"
    )
    root = write_images(tmp_path / "gray")
    code, _, err = run(["train-teacher", "--model", f"{tmp_path / 'net.py'}:Net", "--dataset", "imagefolder",
                        "--data-dir", str(root), "--epochs", "1", "--out", str(tmp_path / "t.pt")], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "takes no in_channels argument" in err and "--channels 3" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "synthetic", "--image-size", "16"], "apply to --dataset imagefolder only"),
        (["--dataset", "synthetic", "--epochs", "-1"], "epochs=-1 is out of range"),
    ],
)
def test_bad_image_options_get_one_line(argv, message, tmp_path, capsys):
    code, _, err = run(["train-teacher", "--model", "resnet8", *argv, "--out", str(tmp_path / "t.pt")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_epochs_zero_writes_an_untrained_teacher(tmp_path, capsys):
    code, out, err = run(["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "0",
                          "--out", str(tmp_path / "t.pt")], capsys)  # fmt: skip
    assert code == 0, err
    assert "untrained" in out
    assert load_checkpoint(tmp_path / "t.pt")["metrics"]["epochs"] == 0


def test_a_teachers_data_is_found_wherever_the_command_runs(tmp_path, capsys, monkeypatch):
    """The teacher names its data relative to itself: moved together, run from elsewhere, they still meet."""
    project = tmp_path / "project"
    write_images(project / "data", mode="RGB")
    monkeypatch.chdir(project)
    code, _, err = run(["train-teacher", "--model", "digits_cnn", "--dataset", "imagefolder", "--data-dir", "data",
                        "--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--out", "t.pt"],
                       capsys)  # fmt: skip
    assert code == 0, err
    assert load_checkpoint(project / "t.pt")["dataset"]["source_from_checkpoint"] == "data"

    moved = project.rename(tmp_path / "moved")  # the absolute path is stale now; the relative one is not
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run(["evaluate", str(moved / "t.pt"), "--json"], capsys)
    assert code == 0, err

    (moved / "data").rename(moved / "gone")
    code, _, err = run(["evaluate", str(moved / "t.pt"), "--json"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is not here" in err and "--data-dir" in err


def test_a_bundled_data_set_is_named_as_it_is_not_as_a_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train-teacher", "--model", "digits_cnn", "--dataset", "digits", "--epochs", "0", "--out",
                        "t.pt"], capsys)  # fmt: skip
    assert code == 0, err
    assert "source_from_checkpoint" not in load_checkpoint(tmp_path / "t.pt")["dataset"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run(["evaluate", str(tmp_path / "t.pt"), "--latency-repeats", "1", "--json"], capsys)
    assert code == 0, err
