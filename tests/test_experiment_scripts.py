"""Experiment scripts answer bad input the way the CLI does: one line, exit 2, before any work starts."""

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import HANG_GUARD_SECONDS

from amc.errors import AmcError

EXPERIMENTS = Path(__file__).parents[1] / "experiments"

CASES = [
    (["compare_searchers_c10.py", "run", "--rows", "ddpg:0", "ddpg:x"], "must be METHOD:SEED"),
    (["compare_searchers_c10.py", "run", "--rows", "dqn:0"], "must be METHOD:SEED"),
    (["compare_searchers_c10.py", "rn"], "invalid choice"),
    (["benchmark_cifar10.py", "run", "--rows", "resnet20:ddpg-chanel"], "must be MODEL:METHOD"),
    (["deploy_c10.py", "run", "--rows", "teacher:openvino-int8-b64", "ddpg:openvino-int4"], "RUNTIME-PRECISION-bBATCH"),
    (["deploy_c10.py", "run", "--rows", "amc:openvino-int8-b64"], "METHOD must be one of"),
    (["deploy_c10.py", "run", "--rows", "uniform:openvino-int8-b64:half"], "METHOD:TARGET[:BUDGET[:SEED]]"),
    (["deploy_c10.py", "run", "--rows", "uniform:tflite-int8-b1:0.5"], "RUNTIME-PRECISION-bBATCH"),
    (["mixed_precision_c10.py", "run", "--targets", "openvino-fp32-b64"], "starts from an int8 target"),
    (["mixed_precision_c10.py", "run", "--targets", "openvino-int8-64"], "RUNTIME-PRECISION-bBATCH"),
    (["candidate_cost.py", "run", "--cases", "vgg16:uniform30"], "unknown case 'vgg16:uniform30'"),
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


def _row(method, seed, after, before=0.6):
    return {"method": method, "seed": seed, "acc_test_ft": after, "acc_test_noft": before, "candidates": 400,
            "search_minutes": 30.0, "budget": "flops=0.3", "folder": f"{method}-{seed}"}  # fmt: skip


def test_searcher_report_ranks_methods_and_pairs_attempts_with_ddpg(tmp_path):
    rows = [_row("ddpg", 0, 0.850), _row("ddpg", 1, 0.852), _row("global-taylor", 0, 0.860),
            _row("global-taylor", 1, 0.858), _row("ddpg-normreward", 0, 0.870), _row("td3", 1, 0.840)]  # fmt: skip
    results, readme = tmp_path / "searchers.json", tmp_path / "README.md"
    results.write_text(json.dumps(rows))
    readme.write_text("intro\n<!-- searchers: written by experiments/compare_searchers_c10.py report -->\nold\n"
                      "<!-- /searchers -->\nrest\n")  # fmt: skip
    page = _report(results, readme, behind=True)  # the report writes its pages, then its check fails
    main, attempts = page.split("## Attempts to make DDPG win")
    assert "credit_assignment.md" in attempts
    assert "against global-taylor" in main and "ddpg-normreward" not in main  # one seed: no contender yet
    assert "| ddpg-normreward | 1, +2.00 | 1, +1.00 |" in attempts  # paired by seed with ddpg and the best
    assert "| td3 | 1, -1.20 | 1, -1.80 |" in attempts
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "| global-taylor | 2 | 85.90 ± 0.14 |" in text
    assert "searches with ddpg, not global-taylor: the config is behind the evidence." in text
    assert "Ddpg lies within the noise of it." in text  # 2 pairs: +0.80, 95% interval ±2.54

    rows += [_row("ddpg-normreward", 1, 0.869), _row("ddpg-normreward", 2, 0.871)]  # all planned seeds: it competes
    results.write_text(json.dumps(rows))
    main = _report(results, readme, behind=True).split("## Attempts to make DDPG win")[0]
    assert "against ddpg-normreward" in main and "| ddpg-normreward | 3 | 87.00 ± 0.10 |" in readme.read_text()


def _report(results, readme, behind=False):
    """The report's page; `behind`: the shipped config (ddpg) is not the rows' best, so the report exits 1."""
    config = EXPERIMENTS / "configs" / "resnet20_c10_flops30.yaml"
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "compare_searchers_c10.py"), "report", "--results",
                           str(results), "--readme", str(readme), "--config", str(config)], capture_output=True,
                          text=True, cwd=results.parent, timeout=HANG_GUARD_SECONDS)  # fmt: skip
    assert done.returncode == (1 if behind else 0), done.stderr[-1500:]
    if behind:
        assert "searches with ddpg, but" in done.stderr and "point the config at" in done.stderr
    return results.with_suffix(".md").read_text()


def test_an_attempt_row_is_its_agent_with_one_setting_changed(monkeypatch):
    monkeypatch.chdir(EXPERIMENTS.parent)
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from compare_searchers_c10 import Args, Row

    args = Args("run")
    plain, tuned = Row.parse("ddpg:1", args), Row.parse("ddpg-normreward:1", args)
    assert (tuned.searcher, tuned.config().agent.algorithm, tuned.config().agent.seed) == ("ddpg", "ddpg", 1)
    assert tuned.config().agent.normalize_reward and not plain.config().agent.normalize_reward
    assert tuned.folder != plain.folder  # never reuses plain DDPG's search
    assert Row.parse("ddpg-warmup200:0", args).config().agent.warmup_episodes == 200
    warm = Row.parse("ddpg+global-lamp:0", args).config()
    assert (warm.agent.algorithm, warm.agent.init_policy, warm.agent.global_importance) == ("ddpg", "global", "lamp")


@pytest.mark.parametrize("method", ["ddpg", "tpe", "ddpg-normreward", "ddpg-warmup200", "ddpg+global-taylor"])
def test_a_config_reads_back_as_the_method_it_runs(method, monkeypatch):
    monkeypatch.chdir(EXPERIMENTS.parent)
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from compare_searchers_c10 import Args, Row, method_of

    assert method_of(Row.parse(f"{method}:0", Args("run")).config()) == method


def test_a_global_pruning_config_reads_back_as_its_importance(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from compare_searchers_c10 import method_of

    from agents.config import load_config

    assert method_of(load_config(None, ["agent=global", "global_importance=lamp"])) == "global-lamp"


def test_transfer_rows_keep_the_saved_part_whose_runs_are_not_here(tmp_path, monkeypatch):
    budget = {"scratch": {"episodes": 400, "best_reward": 0.61, "best_episode": 300, "episodes_to_scratch_best": 300,
                          "mean_first_50": 0.4}}  # fmt: skip
    model = {
        "model": "plain20",
        "teacher_accuracy": 0.9,
        "predict_seconds": 1.0,
        **{k: {"flops_ratio": 0.5, "val_accuracy": 0.5, "test_accuracy": 0.5} for k in ("greedy", "uniform")},
    }
    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "runs" / "transfer").mkdir(parents=True)
    saved = tmp_path / "experiments" / "results" / "transfer_resnet20.json"
    saved.write_text(json.dumps({"budget_transfer": budget, "model_transfer": []}))
    (tmp_path / "runs" / "transfer" / "model_transfer.json").write_text(json.dumps([model]))
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    monkeypatch.chdir(tmp_path)
    import transfer

    transfer.collect_rows(saved, "agent.pt")
    summary = json.loads(saved.read_text())
    assert summary["budget_transfer"] == budget and summary["model_transfer"] == [model]
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "transfer.py"), "report", "--results", str(saved)],
                          capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    page = saved.with_suffix(".md").read_text()
    assert "| scratch | 0.6100 | 300 | 300 | 0.4000 |" in page and "| plain20 | 90.00 |" in page


def _deployed(method, budget, seed, acc, ms, **extra):
    return {"method": method, "budget": budget, "seed": seed, "runtime": "openvino", "precision": "int8", "batch": 64,
            "threads": 1, "folder": f"{method}-{budget}-{seed}", "acc_test": acc, "acc_test_pytorch_fp32": acc,
            "latency_ms": ms, "teacher_fp32_latency_ms": 0.5, "teacher_latency_ms": 0.08,
            "speedup_vs_fp32_teacher": 0.5 / ms, "latency_vs_teacher": ms / 0.08, "flops_ratio": 0.5,
            "cpu": "A CPU", "cpu_flags": ["avx2"], **extra}  # fmt: skip


def test_deploy_report_is_made_from_rows_alone(tmp_path):
    unreachable = {"method": "uniform", "budget": 0.5, "seed": 0, "runtime": "openvino", "precision": "int8",
                   "batch": 64, "folder": "u", "error": "cannot", "least_predicted_latency": 0.73, "cpu": "A CPU",
                   "cpu_flags": ["avx2"]}  # fmt: skip
    rows = [_deployed("teacher", 1.0, 0, 0.876, 0.08, acc_test_pytorch_fp32=0.878),
            _deployed("floor", 1.0, 0, None, 0.06), _deployed("ddpg-removal", 0.5, 0, 0.84, 0.04),
            _deployed("ddpg-removal", 0.5, 1, 0.86, 0.042), unreachable, _deployed("global-taylor", 0.5, 0, 0.83, 0.05),
            _deployed("global-taylor", 0.5, 1, 0.84, 0.05), _deployed("ddpg-removal", 0.8, 0, 0.872, 0.06)]  # fmt: skip
    results, readme = tmp_path / "deploy.json", tmp_path / "README.md"
    results.write_text(json.dumps(rows))
    readme.write_text(
        "intro\n<!-- deploy: written by experiments/deploy_c10.py report -->\nold\n<!-- /deploy -->\nend\n"
    )
    argv = [sys.executable, str(EXPERIMENTS / "deploy_c10.py"), "report", "--results", str(results), "--readme",
            str(readme)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-1500:]
    page = (tmp_path / "deploy.md").read_text()
    assert "| ddpg-removal | 0.5 | 2 | 85.00 ± 1.41 |" in page  # mean ± sd over the seeds
    assert "uniform cannot reach 0.5 here: every unit at its least keeps 0.730" in page
    assert "| global-taylor | 0.5 | 2 | +1.50 | [-4.85, +7.85] | 0.512 vs 0.625 |" in page  # paired by seed, t(1)
    assert "| openvino int8, batch 64 | ddpg-removal at 0.8 (1 seed) | 87.20% | 8.33× | 4.0× (met) |" in page
    assert (tmp_path / "deploy_pareto.png").read_bytes()[:4] == b"\x89PNG"
    block = readme.read_text()
    assert "old" not in block and block.startswith("intro") and block.endswith("end\n")
    assert "| openvino int8, batch 64 | int8 teacher | 87.60% |" in block
    assert "| openvino int8, batch 64 | amc ddpg-removal at 0.5 (2 seeds) | 85.00 ± 1.41% | 0.512 | 12.20× |" in block


def test_fastnas_peer_meets_the_budget_with_its_own_weights_in_an_amc_student(monkeypatch, tmp_path):
    pytest.importorskip("modelopt.torch.prune")
    import torch

    from amc.compress.student import load_student, save_student
    from amc.cost.budget import Budget
    from amc.cost.measured import count_macs
    from amc.cost.predicted import CostModel
    from amc.data import load_synthetic
    from amc.models import create_model, model_spec

    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from fastnas_peer import FastNAS, as_amc_student, fastnas_student

    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=4).eval()
    data = load_synthetic(num_classes=4, image_size=16, per_class=20)
    cost_model = CostModel(teacher, data.input_shape)
    subnet = FastNAS(teacher, data, divisor=4, score_samples=40).prune(0.7)
    student, policy = as_amc_student(teacher, subnet, data.input_shape)
    x = torch.randn(2, *data.input_shape)
    with torch.no_grad():
        assert torch.allclose(student(x), subnet(x), atol=1e-5)  # FastNAS's weights, in amc's student
    assert cost_model.policy_ratios(policy)["flops"] < 0.8
    student, policy, record = fastnas_student(teacher, data, cost_model, Budget(flops=0.75), divisor=4, steps=4)
    assert record["predicted"]["flops"] <= 0.75 and len(record["bisection"]) == 4
    macs = count_macs(teacher, data.input_shape)
    timed = []  # a stand-in for the runtime's timer: the bisection meets what it measures, not the table

    def measured(model):
        timed.append(count_macs(model, data.input_shape) / macs)
        return timed[-1]

    _, _, record = fastnas_student(teacher, data, cost_model, Budget(latency=0.75), divisor=4, steps=3,
                                   measured_latency=measured)  # fmt: skip
    assert [t["latency"] for t in record["bisection"] if "latency" in t] == timed and record["predicted"][
        "latency"
    ] <= 0.75
    blob = {"arch": model_spec("resnet8", 4), "dataset": data.describe()}
    save_student(tmp_path / "s.pt", student, blob, policy)
    with torch.no_grad():
        assert torch.allclose(load_student(tmp_path / "s.pt")(x), student(x), atol=1e-5)


def test_mixed_precision_report_weighs_each_fp32_layer_against_all_int8(tmp_path):
    def row(layer, acc, ratio):
        return {"folder": layer, "model": "t.pt", "layer": layer, "runtime": "openvino", "batch": 64, "acc_val": acc,
                "latency_vs_int8": ratio, "cpu": "A CPU", "cpu_flags": ["avx2"]}  # fmt: skip

    rows = [row("(none: all int8)", 0.870, 1.0), row("(all: fp32 model)", 0.872, 5.0), row("conv1", 0.8712, 1.08),
            row("fc", 0.869, 1.01)]  # fmt: skip
    results = tmp_path / "mixed_precision.json"
    results.write_text(json.dumps(rows))
    argv = [sys.executable, str(EXPERIMENTS / "mixed_precision_c10.py"), "report", "--results", str(results)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-1500:]
    page = results.with_suffix(".md").read_text()
    assert "| conv1 | 87.12 | +0.12 | 1.080 |" in page and "| fc | 86.90 | -0.10 | 1.010 |" in page
    assert "All of the model in fp32 wins back +0.20 points at 5.00× the int8 latency" in page
    assert "the best single fp32 layer (conv1) +0.12 points at 1.08×, with 1 of 2 layers gaining any image" in page


def test_candidate_cost_report_sets_each_part_against_its_floor(tmp_path):
    row = {"folder": "r-kd30", "case": "resnet20:uniform30", "reward": "kd30", "precision": "fp32", "cpu": "A CPU",
           "cpu_flags": ["avx2"], "candidate_seconds": 4.0, "candidate_seconds_before": 8.0, "floor_seconds": 2.0,
           "dense_rates_gmac_s": {"forward": 40.0, "train": 30.0},
           "parts": {"build": {"seconds": 0.02, "floor_seconds": 0.0},
                     "student_plain_steps": {"seconds": 3.2, "floor_seconds": 1.6}}}  # fmt: skip
    results = tmp_path / "candidate_cost.json"
    results.write_text(json.dumps([row]))
    argv = [sys.executable, str(EXPERIMENTS / "candidate_cost.py"), "report", "--results", str(results)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-1500:]
    page = results.with_suffix(".md").read_text()
    assert "**4.00 s** now, 8.00 s before; floor 2.00 s (2.00× it)" in page
    assert "against the plain training steps it contains: 1.25× (3.20 s)" in page
    assert "| student_plain_steps | 3.200 | 1.600 | 2.00 |" in page


def test_a_scripts_help_shows_each_fields_docstring_and_default():
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "benchmark_cifar10.py"), "--help"], capture_output=True,
                          text=True, timeout=HANG_GUARD_SECONDS)  # fmt: skip
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "The same KD fine-tune for every row" in text and "(default: 15)" in text


@dataclass
class _ScriptArgs:
    command: str
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds."""
    set: list[str] = field(default_factory=list)
    threads: int = 1


def test_a_script_reads_its_flags_with_the_checks_of_amc_config_keys(monkeypatch):
    """Lists take several values and their flag may repeat (`--set a=1 --set b=2`, as in amc); a value of the
    wrong type or out of its setting's range is one AmcError naming the flag."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    from script_args import args_from, build_parser

    parser = build_parser(_ScriptArgs, "doc", ["run"])
    args = args_from(
        _ScriptArgs, parser.parse_args(["run", "--set", "a=1", "--set", "b=2", "c=3", "--seeds", "1", "2"])
    )
    assert (args.set, args.seeds, args.threads) == (["a=1", "b=2", "c=3"], [1, 2], 1)
    assert "Seeds. (default: [0])" in " ".join(parser.format_help().split())
    with pytest.raises(AmcError, match="--threads 0 is out of range"):
        args_from(_ScriptArgs, parser.parse_args(["run", "--threads", "0"]))
    with pytest.raises(AmcError, match="--seeds 1 x is not a valid int"):
        args_from(_ScriptArgs, parser.parse_args(["run", "--seeds", "1", "x"]))


def test_a_teacher_stored_in_fp16_is_measured_again_and_nothing_is_overwritten(teacher_path, tmp_path):
    import torch

    from amc.checkpoint import load_checkpoint
    from amc.compress.student import model_from_checkpoint

    out = tmp_path / "half.pt"
    script = [sys.executable, str(EXPERIMENTS / "teacher_half_weights.py"), "--source", str(teacher_path)]
    done = subprocess.run([*script, "--out", str(out)], capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-1500:]
    blob = load_checkpoint(out)
    assert {v.dtype for v in blob["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    assert blob["metrics"]["weights"] == "fp16" and 0.0 <= blob["metrics"]["accuracy"] <= 1.0
    assert blob["metrics"]["fp32_accuracy"] == load_checkpoint(teacher_path)["metrics"]["accuracy"]
    assert model_from_checkpoint(blob).conv1.weight.dtype == torch.float32  # loaded into the fp32 model
    written = out.read_bytes()
    again = subprocess.run([*script, "--out", str(out)], capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert again.returncode == 2 and "exists; choose a new --out" in again.stderr and out.read_bytes() == written


def test_the_transformer_rows_run_end_to_end_and_resume_as_finished(tmp_path):
    pytest.importorskip("openvino")
    from agents.cli import main

    teacher, results = tmp_path / "vit.pt", tmp_path / "transformers.json"
    assert main(["train-teacher", "--model", "vit_tiny", "--dataset", "synthetic", "--epochs", "1", "--optimizer",
                 "adamw", "--lr", "0.001", "--out", str(teacher)]) == 0  # fmt: skip
    argv = [sys.executable, str(EXPERIMENTS / "transformers_c10.py"), "run", "--rows", "uniform:0", "ddpg-channel:0",
            "--teacher", str(teacher), "--config", str(EXPERIMENTS / "configs" / "vit_tiny_c10_flops50.yaml"),
            "--finetune-epochs", "1", "--out-dir", str(tmp_path / "runs"), "--results",
            str(results), "--set", "episodes=3", "warmup_episodes=2", "eval_samples=32", "report_samples=32",
            "report_latency_repeats=2", "data_dir=null"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(results.read_text())}
    assert set(rows) == {"uniform", "ddpg-channel"}
    for row in rows.values():
        assert row["flops_ratio"] <= 0.5 + 1e-9 and row["finetune_settings"]["optimizer"] == "adamw"
        assert 0.0 <= row["acc_test"] <= 1.0 and row["latency_ms"] > 0
    assert "| uniform | 1 |" in (tmp_path / "transformers.md").read_text()
    again = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert again.returncode == 0 and "epoch 1/1" not in again.stderr  # finished rows are read, not run again


def test_the_pinning_benchmark_times_one_and_two_processes_pinned_and_not(teacher_path, tmp_path):
    pytest.importorskip("openvino")
    results = tmp_path / "pinning.json"
    argv = [sys.executable, str(EXPERIMENTS / "benchmark_pinning.py"), "run", "--teachers", str(teacher_path),
            "--runs", "3", "--results", str(results)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(results.read_text())
    assert [len(row[k]) for k in ("pinned_1", "unpinned_1", "pinned_2", "unpinned_2")] == [1, 1, 2, 2]
    assert all(ms > 0 for k in ("pinned_1", "unpinned_1", "pinned_2", "unpinned_2") for ms in row[k])
    assert "| teacher.pt |" in (tmp_path / "pinning.md").read_text()
