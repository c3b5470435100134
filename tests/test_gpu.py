"""Every command on CUDA with tiny models (`pytest -m gpu`; skipped without CUDA).

AMC_GPU_TEST_DEVICE=cpu runs the same tests on the CPU, to check the tests themselves on a machine without
a GPU; it proves nothing about CUDA.
"""

import json
import os

import pytest
import torch

from agents.cli import main
from amc.compress.quantization import sparsify
from amc.models import create_model

DEVICE = os.environ.get("AMC_GPU_TEST_DEVICE") or "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"),
]
BUDGETS = {"channel": "flops=0.6", "fine-grained": "size=0.5", "removal": "flops=0.8", "removal+channel": "flops=0.5",
           "quantize": "size=0.3", "channel+quantize": "size=0.2"}  # fmt: skip


def run(argv, capsys) -> dict:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "teacher.pt"
    assert main(["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "2", "--lr", "0.05",
                 "--device", DEVICE, "--out", str(path)]) == 0  # fmt: skip
    return path


@pytest.mark.parametrize("mode", sorted(BUDGETS))
def test_every_search_mode_runs_on_the_device(mode, teacher, tmp_path, capsys):
    budget = BUDGETS[mode]
    results = run(["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path}", "--set", f"mode={mode}",
                   "--set", f"budget={budget}", "--set", "episodes=3", "--set", "warmup_episodes=2",
                   "--set", f"device={DEVICE}", "--set", "finetune_steps=2", "--set", "eval_samples=32",
                   "--set", "report_samples=32", "--set", "report_latency_repeats=2"], capsys)  # fmt: skip
    resource, limit = budget.split("=")
    key = {"flops": "flops_ratio", "size": "size_bytes_ratio"}[resource]
    assert results[key] <= float(limit) + 1e-6
    assert results["device"] == str(torch.device(DEVICE if ":" in DEVICE or DEVICE == "cpu" else "cuda:0"))


def test_two_workers_share_the_device(teacher, tmp_path, capsys):
    results = run(["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path}", "--set", "workers=2",
                   "--set", "episodes=4", "--set", "warmup_episodes=2", "--set", f"device={DEVICE}",
                   "--set", "eval_samples=32", "--set", "report_samples=32", "--set", "report_latency_repeats=2"],
                  capsys)  # fmt: skip
    assert results["workers"] == 2 and results["flops_ratio"] <= 0.5 + 1e-6


def test_apply_finetune_evaluate_export_on_the_device(teacher, tmp_path, capsys):
    policy, student, tuned = tmp_path / "p.json", tmp_path / "s.pt", tmp_path / "s_ft.pt"
    run(["baseline", "global", "--teacher", str(teacher), "--flops", "0.5", "--importance", "taylor",
         "--device", DEVICE, "--out", str(policy)], capsys)  # fmt: skip
    applied = run(["apply", "--teacher", str(teacher), "--policy", str(policy), "--out", str(student),
                   "--recalibrate-bn", "2", "--reconstruct", "--device", DEVICE], capsys)  # fmt: skip
    assert applied["flops_ratio"] <= 0.5 + 1e-6
    run(["finetune", "--student", str(student), "--teacher", str(teacher), "--epochs", "1", "--device", DEVICE,
         "--out", str(tuned)], capsys)  # fmt: skip
    report = run(["evaluate", str(tuned), "--speedup-over", str(teacher), "--latency-repeats", "3",
                  "--device", DEVICE], capsys)  # fmt: skip
    assert report["device"].startswith(DEVICE.split(":")[0]) and report["speedup_b1"] > 0
    for fmt in ("torchscript", "packed"):
        exported = run(["export", str(tuned), "--format", fmt, "--device", DEVICE, "--out",
                        str(tmp_path / f"s.{fmt}")], capsys)  # fmt: skip
        assert exported["relative_diff"] <= 1e-4


def test_fine_grained_masks_live_on_the_weights_device():
    model = create_model("resnet8", num_classes=4).to(DEVICE)
    sparsify(model, {"conv1": 0.5})
    assert model.conv1.parametrizations.weight[0].mask.device == model.conv1.weight.device
    assert float((model.conv1.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_latency_table_profiles_on_the_device(tmp_path, capsys):
    table = run(["profile-latency", "resnet8", "--input-shape", "3,16,16", "--grid-points", "2", "--check", "2",
                 "--device", DEVICE, "--out", str(tmp_path / "lut.json")], capsys)  # fmt: skip
    assert table["device"].startswith(DEVICE.split(":")[0]) and table["teacher_ms"] > 0
