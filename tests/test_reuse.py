"""Reuse of what a search produced: policies re-applied, standalone students, deployment exports,
warm-started and greedy agents, and `amc report`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD_SECONDS

from agents.checkpoint import load_agent, read_replay_buffer
from agents.cli import main
from agents.config import load_config
from agents.search import build_env
from amc.checkpoint import load_checkpoint
from amc.compress.export import bake, load_packed, relative_difference, save_packed
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy, model_from_checkpoint
from amc.cost.measured import size_bytes
from amc.models import create_model

TINY = ["--set", "eval_samples=32", "--set", "recalibrate_batches=2", "--set", "precision=fp32",
        "--set", "batch_size=8", "--set", "hidden=[16, 16]"]  # fmt: skip


def run(argv, capsys) -> dict:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def train(model: str, path, capsys) -> None:
    argv = ["train-teacher", "--model", model, "--dataset", "synthetic", "--epochs", "1", "--lr", "0.05",
            "--precision", "fp32", "--out", str(path)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()


def search(teacher, out_dir, capsys, *extra) -> dict:
    argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={out_dir}", "--set", "episodes=4",
            "--set", "warmup_episodes=2", *TINY, *extra]  # fmt: skip
    return run(argv, capsys)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny DDPG search on a ResNet-8 teacher: (teacher path, run folder)."""
    root = tmp_path_factory.mktemp("searched")
    teacher = root / "teacher.pt"
    argv = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "1", "--lr", "0.05",
            "--precision", "fp32", "--out", str(teacher)]  # fmt: skip
    assert main(argv) == 0
    argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={root}", "--set", "episodes=4",
            "--set", "warmup_episodes=2", *TINY]  # fmt: skip
    assert main(argv) == 0
    return teacher, next(p.parent for p in root.glob("*/config.yaml"))


def test_policy_json_records_the_documented_schema(searched):
    _, run_dir = searched
    data = json.loads((run_dir / "policy.json").read_text())
    assert data["schema_version"] == 1
    assert data["architecture"] == "resnet8" and data["num_classes"] == 4 and len(data["fingerprint"]) == 16
    meta = data["metadata"]
    assert meta["mode"] == "channel" and meta["budget"] == {"flops": 0.5} and meta["reward"] == "acc"
    assert set(meta["achieved"]) >= {"flops", "params", "size"} and "episode_reward" in meta
    assert set(meta["measured"]) >= {"val_accuracy", "test_accuracy", "flops_ratio"}
    assert meta["search_config"]["episodes"] == 4 and set(meta["versions"]) >= {"amc", "torch"}
    assert CompressionPolicy.from_json(json.dumps(data)).to_dict() == data


def test_apply_reproduces_the_search_student_bit_for_bit(searched, tmp_path, capsys):
    teacher, run_dir = searched
    run(["apply", "--teacher", str(teacher), "--policy", str(run_dir / "policy.json"), "--out",
         str(tmp_path / "again.pt")], capsys)  # fmt: skip
    original = torch.load(run_dir / "student.pt", weights_only=True)["state_dict"]
    again = torch.load(tmp_path / "again.pt", weights_only=True)["state_dict"]
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)  # BatchNorm statistics included


def test_policy_for_another_model_is_refused_unless_forced(searched, tmp_path, capsys):
    _, run_dir = searched
    other = tmp_path / "resnet20.pt"
    train("resnet20", other, capsys)
    argv = ["apply", "--teacher", str(other), "--policy", str(run_dir / "policy.json"), "--out", str(tmp_path / "s.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "policy is for resnet8, the teacher is resnet20" in err and "--force" in err and len(err.splitlines()) == 1
    assert main([*argv, "--force", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "amc apply: warning: policy is for resnet8" in err and "applying anyway" in err  # once it has succeeded
    assert json.loads(out.strip().splitlines()[-1])["flops_ratio"] < 1.0  # the units both models share were pruned


def test_student_loads_standalone_without_search_code(searched, tmp_path):
    _, run_dir = searched
    student = model_from_checkpoint(load_checkpoint(run_dir / "student.pt"))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "y": student(x).detach()}, tmp_path / "io.pt")
    code = f"""
import sys, torch, amc
student = amc.load_student({str(run_dir / "student.pt")!r})
io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
assert torch.equal(student(io["x"]), io["y"])
assert not any(m in sys.modules for m in ("gymnasium", "stable_baselines3", "envs", "agents"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-1500:]


def _quantized_student():
    teacher = create_model("resnet8", num_classes=4).eval()
    layers = [n for n, m in teacher.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    bits = {n: 2 + i % 7 for i, n in enumerate(layers)}  # every width from 2 to 8
    policy = CompressionPolicy(keep_ratios={"layer2.0.conv1": 0.5}, bits=bits, sparsity={"fc": 0.6})
    return apply_policy(teacher, policy, (3, 32, 32))


def test_packed_file_is_as_small_as_reported_and_restores_the_weights(tmp_path):
    student = _quantized_student()
    written = save_packed(student, tmp_path / "s.amcpack")
    assert abs(written / size_bytes(student) - 1.0) < 0.10
    assert written < 0.25 * size_bytes(create_model("resnet8", num_classes=4))
    baked = bake(student)
    baked.load_state_dict(load_packed(tmp_path / "s.amcpack"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(baked(x), student(x), atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "packed"])
def test_export_matches_pytorch(searched, tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    _, run_dir = searched
    out = tmp_path / f"student.{fmt}"
    result = run(["export", str(run_dir / "student.pt"), "--format", fmt, "--out", str(out)], capsys)
    assert out.is_file() and result["bytes"] == out.stat().st_size
    assert result["relative_diff"] <= 1e-4


def test_export_check_is_relative_to_the_output_scale():
    """Logits around 1e-6 that are wrong by 100% pass any absolute 1e-5 check; the relative one catches them."""
    reference = torch.tensor([[1e-6, -2e-6]])
    assert relative_difference(reference * 2, reference) == pytest.approx(1.0)
    assert relative_difference(reference * 1000 + 1e-9, reference * 1000) < 1e-5


def test_export_refuses_an_unknown_format(searched, capsys):
    _, run_dir = searched
    assert main(["export", str(run_dir / "student.pt"), "--format", "tflite"]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err


def policy_weights(run_dir) -> dict:
    return load_agent(Path(run_dir) / "agent.pt")["parameters"]["policy"]


def test_init_agent_starts_from_the_saved_actor_and_critic(searched, tmp_path, capsys):
    teacher, run_dir = searched
    # warm-up covers every episode, so the new agent never trains: what it saves is what it started from
    results = search(teacher, tmp_path, capsys, "--init-agent", str(run_dir / "agent.pt"), "--set",
                     "budget=flops=0.4", "--set", "episodes=2", "--set", "warmup_episodes=2")  # fmt: skip
    saved, started = policy_weights(run_dir), policy_weights(results["run_dir"])
    for key, value in saved.items():
        assert torch.equal(value, started[key]), key
    fresh = search(teacher, tmp_path / "fresh", capsys, "--set", "episodes=2", "--set", "warmup_episodes=2")
    assert not torch.equal(policy_weights(fresh["run_dir"])["actor.mu.0.weight"], saved["actor.mu.0.weight"])


def test_init_agent_works_on_another_model(searched, tmp_path, capsys):
    _, run_dir = searched
    other = tmp_path / "plain20.pt"
    train("plain20", other, capsys)
    results = search(other, tmp_path, capsys, "--init-agent", str(run_dir / "agent.pt"), "--set", "episodes=2",
                     "--set", "warmup_episodes=2")  # fmt: skip
    started = policy_weights(results["run_dir"])["actor.mu.0.weight"]
    assert torch.equal(started, policy_weights(run_dir)["actor.mu.0.weight"])
    assert results["flops_ratio"] <= 0.5 + 1e-6


def test_init_agent_with_other_network_sizes_is_one_line(searched, tmp_path, capsys):
    teacher, run_dir = searched
    argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path}", *TINY, "--set",
            "hidden=[8, 8]", "--set", f"init_agent={run_dir / 'agent.pt'}"]  # fmt: skip
    assert main(argv) == 2
    assert "set hidden to the saved agent's" in capsys.readouterr().err


@pytest.mark.parametrize("given_as", ["file", "keyword"])
def test_init_policy_is_the_first_episode_played(searched, tmp_path, capsys, given_as):
    teacher, _ = searched
    start = tmp_path / "global.json"
    run(["baseline", "global", "--teacher", str(teacher), "--flops", "0.5", "--importance", "l1-normalized",
         "--out", str(start)], capsys)  # fmt: skip
    keyword = ["--set", "init_policy=global", "--set", "global_importance=l1-normalized"]
    init = ["--set", f"init_policy={start}"] if given_as == "file" else keyword
    results = search(teacher, tmp_path, capsys, *init, "--set", "episodes=2")
    run_dir = Path(results["run_dir"])
    buffer = read_replay_buffer(run_dir / "replay_buffer.npz")
    steps = len(CompressionPolicy.load(start).keep_ratios)
    env = build_env(load_config(run_dir / "config.yaml"), load_checkpoint(teacher))
    expected = env.values_to_actions([CompressionPolicy.load(start).keep_ratios[s.name] for s in env.steps])
    assert np.allclose(buffer["actions"][:steps, 0, 0], expected)  # env 0's first episode is the policy's
    assert not np.allclose(buffer["actions"][steps : 2 * steps, 0, 0], expected)  # then the search's own
    agent_argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path}", "--set", "agent=tpe",
                  "--set", f"init_policy={start}"]  # fmt: skip
    assert main(agent_argv) == 2 and "drop init_policy" in capsys.readouterr().err


def test_greedy_policy_predict_is_deterministic_and_meets_a_new_budget(searched, tmp_path, capsys):
    teacher, run_dir = searched
    policies = []
    for name in ("a.json", "b.json"):
        result = run(["policy", "predict", "--agent", str(run_dir / "agent.pt"), "--teacher", str(teacher),
                      "--budget", "flops=0.3", "--out", str(tmp_path / name)], capsys)  # fmt: skip
        assert result["flops_ratio"] <= 0.3 + 1e-6
        policies.append(CompressionPolicy.load(tmp_path / name))
    assert policies[0].keep_ratios == policies[1].keep_ratios
    assert policies[0].fingerprint == json.loads((run_dir / "policy.json").read_text())["fingerprint"]
    applied = run(["apply", "--teacher", str(teacher), "--policy", str(tmp_path / "a.json"), "--out",
                   str(tmp_path / "s.pt")], capsys)  # fmt: skip
    assert applied["flops_ratio"] <= 0.3 + 1e-6


def test_report_writes_markdown_and_plots(searched, tmp_path, capsys):
    _, run_dir = searched
    result = run(["report", str(run_dir), "--out", str(tmp_path / "report")], capsys)
    text = (tmp_path / "report" / "report.md").read_text()
    assert [p.split("/")[-1] for p in result["pngs"]] == ["reward_curve.png", "policy.png", "channels.png"]
    for png in result["pngs"]:
        assert open(png, "rb").read(4) == b"\x89PNG"
    assert "![reward](reward_curve.png)" in text and "| test accuracy |" in text and "layer1.0.conv1" in text
    assert "![channels](channels.png)" in text and "no latency table" in text  # a FLOPs budget: channels alone
    assert main(["report", str(tmp_path)]) == 2
