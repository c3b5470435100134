"""The `amc` command end to end, in-process, on the synthetic data set."""

import json
import sys

import pytest
import torch

import amc.train.loop
from agents.cli import COMMANDS, build_parser, main
from agents.cli_config import leaves
from amc.checkpoint import load_checkpoint
from amc.compress.student import model_from_checkpoint
from amc.cost.measured import flop_counter_macs
from amc.errors import AmcError

TRAIN = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--lr", "0.05", "--precision", "fp32"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def teacher_path(tmp_path, capsys):
    path = tmp_path / "teacher.pt"
    code, _, _ = run([*TRAIN, "--epochs", "2", "--out", str(path)], capsys)
    assert code == 0
    return path


def test_teacher_checkpoint_round_trip(teacher_path):
    blob = torch.load(teacher_path, weights_only=True)
    assert blob["arch"] == {"name": "resnet8", "num_classes": 4, "kwargs": {"in_channels": 3}}
    assert blob["dataset"]["name"] == "synthetic"
    assert set(blob["metrics"]) >= {"accuracy", "val_accuracy"}
    assert set(blob["versions"]) >= {"amc", "torch"}
    assert "train_state" not in blob
    model = model_from_checkpoint(load_checkpoint(teacher_path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, blob["state_dict"][key])


def test_evaluate_json_reports_every_key_and_flops_match_flop_counter(teacher_path, capsys):
    code, out, _ = run(["evaluate", str(teacher_path), "--json", "--latency-repeats", "3"], capsys)
    assert code == 0
    report = last_json(out)
    keys = {"accuracy", "val_accuracy", "flops", "params", "size_bytes", "latency_ms_b1", "latency_ms_b128", "device"}
    assert set(report) == keys
    model = model_from_checkpoint(load_checkpoint(teacher_path))
    assert report["flops"] == flop_counter_macs(model, (3, 16, 16))
    assert report["latency_ms_b1"] > 0 and 0 <= report["accuracy"] <= 1 and report["device"] == "cpu"


def test_train_teacher_resumes_after_interruption(tmp_path, capsys, monkeypatch):
    straight = tmp_path / "straight.pt"
    assert run([*TRAIN, "--epochs", "3", "--out", str(straight)], capsys)[0] == 0

    interrupted = tmp_path / "interrupted.pt"
    real_evaluate = amc.train.loop.evaluate_accuracy
    calls = {"n": 0}

    def evaluate_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # during epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(amc.train.loop, "evaluate_accuracy", evaluate_then_interrupt)
    code, _, err = run([*TRAIN, "--epochs", "3", "--out", str(interrupted)], capsys)
    assert code == 130 and "--resume" in err
    assert load_checkpoint(interrupted)["train_state"]["epoch"] == 1
    monkeypatch.setattr(amc.train.loop, "evaluate_accuracy", real_evaluate)
    assert run([*TRAIN, "--epochs", "3", "--out", str(interrupted), "--resume"], capsys)[0] == 0
    assert "resume:" not in (tmp_path / "interrupted.config.yaml").read_text()  # what ran, not how

    a, b = load_checkpoint(straight)["state_dict"], load_checkpoint(interrupted)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_a_transformer_trains_with_adamw_label_smoothing_and_a_teacher_to_distill_from(teacher_path, tmp_path,
                                                                                       capsys):  # fmt: skip
    out = tmp_path / "vit.pt"
    argv = ["train-teacher", "--model", "vit_tiny", "--dataset", "synthetic", "--epochs", "1", "--optimizer", "adamw",
            "--lr", "0.001", "--weight-decay", "0.05", "--label-smoothing", "0.1", "--distill-from", str(teacher_path),
            "--batch-size", "32", "--precision", "fp32", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert f"distilling from {teacher_path} (resnet8)" in capsys.readouterr().out
    blob = torch.load(out, weights_only=True)
    assert blob["arch"]["name"] == "vit_tiny" and blob["arch"]["kwargs"]["image_size"] == 16
    assert blob["train_config"]["optimizer"] == "adamw" and blob["train_config"]["label_smoothing"] == 0.1
    assert 0.0 <= blob["metrics"]["accuracy"] <= 1.0


def test_json_and_resume_are_flags_of_every_command_never_config_keys(teacher_path, tmp_path, capsys):
    """--json on every command, --resume where a command can continue; a config that an earlier version resolved
    (`resume: false`, `json: false`) still reads, and one that asks for either is refused in one line."""
    parser = build_parser()
    for name, command in COMMANDS.items():
        argv = [*name.split(), "--help"]
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        shown = capsys.readouterr().out
        assert "--json" in shown and ("--resume" in shown) == bool(command.resume), name
        assert not {"json", "resume"} & set(leaves(command.config)), name
    earlier, asking = tmp_path / "earlier.yaml", tmp_path / "asking.yaml"
    earlier.write_text("budget: flops=0.5\nresume: false\njson: false\n")
    asking.write_text("budget: flops=0.5\njson: true\n")
    common = ["baseline", "uniform", "--teacher", str(teacher_path)]
    assert run([*common, "--config", str(earlier), "--out", str(tmp_path / "p.json")], capsys)[0] == 0
    code, _, err = run([*common, "--config", str(asking), "--out", str(tmp_path / "q.json")], capsys)
    assert code == 2 and "pass --json instead" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q.json").exists()


def test_every_command_takes_the_budget_one_way_and_earlier_spellings_too(teacher_path, tmp_path, capsys):
    """`--budget flops=0.5` as in search and policy predict; `--flops 0.5` and `--importance` still read."""
    one, earlier = tmp_path / "one.json", tmp_path / "earlier.json"
    common = ["baseline", "global", "--teacher", str(teacher_path)]
    assert run([*common, "--budget", "flops=0.5", "--global-importance", "l1", "--out", str(one)], capsys)[0] == 0
    assert run([*common, "--flops", "0.5", "--importance", "l1", "--out", str(earlier)], capsys)[0] == 0
    assert json.loads(one.read_text())["keep_ratios"] == json.loads(earlier.read_text())["keep_ratios"]
    code, _, err = run([*common, "--budget", "flops=0.5", "--flops", "0.4", "--out", str(tmp_path / "x.json")], capsys)
    assert code == 2 and "give the budget once" in err and len(err.strip().splitlines()) == 1


def test_baseline_apply_finetune_evaluate(teacher_path, tmp_path, capsys):
    policy, student, tuned = tmp_path / "p.json", tmp_path / "s.pt", tmp_path / "s_ft.pt"
    code, out, _ = run(
        ["baseline", "uniform", "--teacher", str(teacher_path), "--flops", "0.5", "--out", str(policy), "--json"],
        capsys,
    )
    assert code == 0 and 0.45 <= last_json(out)["flops_ratio"] <= 0.5
    code, out, _ = run(
        [
            "apply",
            "--teacher",
            str(teacher_path),
            "--policy",
            str(policy),
            "--out",
            str(student),
            "--recalibrate-bn",
            "2",
            "--json",
        ],
        capsys,
    )
    applied = last_json(out)
    assert code == 0 and 0.45 <= applied["flops_ratio"] <= 0.5
    code, out, _ = run(
        [
            "finetune",
            "--student",
            str(student),
            "--teacher",
            str(teacher_path),
            "--epochs",
            "1",
            "--out",
            str(tuned),
            "--precision",
            "fp32",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and "accuracy_before_finetune" in last_json(out)
    code, out, _ = run(["evaluate", str(tuned), "--json", "--latency-repeats", "3"], capsys)
    assert code == 0 and last_json(out)["flops"] == applied["flops"]
    code, out, _ = run(["evaluate", str(tuned), "--speedup-over", str(teacher_path), "--latency-repeats", "3",
                        "--rounds", "2", "--json"], capsys)  # fmt: skip
    report = last_json(out)
    assert code == 0 and report["speedup_b1"] > 0 and report["speedup_b128"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "missing.pt"], "does not exist"),
        (["train-teacher", "--model", "resnet21", "--dataset", "synthetic"], "unknown model"),
        (["train-teacher", "--model", "nofile.py:Net", "--dataset", "synthetic"], "does not exist"),
        (["train-teacher", "--dataset", "cifar10", "--data-dir", "/no/such/dir"], "not found"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_truncated_checkpoint_is_refused(teacher_path, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(teacher_path.read_bytes()[:2000])
    code, _, err = run(["evaluate", str(broken)], capsys)
    assert code == 2 and "corrupt or truncated" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "importance, budget",
    [("l1", ["--flops", "0.5"]), ("l1-normalized", ["--flops", "0.5"]), ("lamp", ["--flops", "0.5"]),
     ("taylor", ["--flops", "0.5"]), ("lamp", ["--params", "0.4"])],
)  # fmt: skip
def test_global_pruning_policy_meets_the_budget_when_built(importance, budget, teacher_path, tmp_path, capsys):
    policy, student = tmp_path / "p.json", tmp_path / "s.pt"
    argv = ["baseline", "global", "--teacher", str(teacher_path), *budget, "--importance", importance, "--out",
            str(policy), "--json"]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    resource, limit = budget[0][2:], float(budget[1])
    saved = json.loads(policy.read_text())
    assert saved["metadata"]["method"] == f"global-{importance}" and len(set(saved["keep_ratios"].values())) > 1
    code, out, _ = run(["apply", "--teacher", str(teacher_path), "--policy", str(policy), "--out", str(student),
                        "--json"], capsys)  # fmt: skip
    assert code == 0 and last_json(out)[f"{resource}_ratio"] <= limit + 1e-9


@pytest.mark.parametrize(
    "extra, message",
    [(["--importance", "hessian"], "unknown importance"), (["--max-pruning-ratio", "1.0"], "must lie in (0, 1)"),
     (["--max-pruning-ratio", "0.05"], "raise max_pruning_ratio")],
)  # fmt: skip
def test_global_pruning_bad_settings_are_one_line(extra, message, teacher_path, tmp_path, capsys):
    argv = ["baseline", "global", "--teacher", str(teacher_path), "--flops", "0.3", "--out", str(tmp_path / "p.json"),
            *extra]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("command", ["apply", "baseline", "finetune", "export"])
def test_out_equal_to_an_input_is_refused_and_the_input_is_untouched(command, teacher_path, tmp_path, capsys):
    before = teacher_path.read_bytes()
    policy = tmp_path / "p.json"
    policy.write_text('{"schema_version": 1, "keep_ratios": {}}')
    argv = {
        "apply": ["apply", "--teacher", str(teacher_path), "--policy", str(policy), "--out", str(teacher_path)],
        "baseline": ["baseline", "uniform", "--teacher", str(teacher_path), "--flops", "0.5", "--out",
                     str(teacher_path)],
        "finetune": ["finetune", "--student", str(teacher_path), "--teacher", str(teacher_path), "--out",
                     str(teacher_path)],
        "export": ["export", str(teacher_path), "--out", str(teacher_path)],
    }[command]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"--out {teacher_path} is also the" in err
    assert teacher_path.read_bytes() == before


def test_a_search_that_fails_before_its_first_episode_leaves_no_run_folder(teacher_path, tmp_path, capsys):
    code, _, err = run(["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path / 'runs'}",
                        "--set", "budget=flops=0.001"], capsys)  # fmt: skip
    assert code == 2 and "impossible" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_every_command_reads_a_config_file_then_flags_then_set(teacher_path, tmp_path, capsys):
    """One dialect: `--config` YAML < `--flags` < `--set`, for a core command as for the search."""
    config = tmp_path / "baseline.yaml"
    config.write_text(f"teacher: {teacher_path}\nflops: 0.7\nout: {tmp_path / 'from_file.json'}\n")
    assert main(["baseline", "uniform", "--config", str(config), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["flops_ratio"] <= 0.7
    assert (tmp_path / "from_file.json").exists()
    argv = ["baseline", "uniform", "--config", str(config), "--flops", "0.5", "--out", str(tmp_path / "flag.json")]
    assert main([*argv, "--json"]) == 0
    assert 0.45 < last_json(capsys.readouterr().out)["flops_ratio"] <= 0.5  # the flag beats the file
    assert main([*argv, "--set", "flops=0.3", "--set", f"out={tmp_path / 'set.json'}", "--json"]) == 0
    assert last_json(capsys.readouterr().out)["flops_ratio"] <= 0.3  # --set beats the flag
    config.write_text(f"teacher: {teacher_path}\nflops: lots\n")
    assert main(["baseline", "uniform", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flops='lots'" in err and "not a valid float" in err


def test_long_commands_write_a_resolved_config_that_reproduces_them(tmp_path, capsys):
    first = tmp_path / "t1.pt"
    argv = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "1", "--precision", "fp32"]
    assert main([*argv, "--out", str(first)]) == 0
    resolved = tmp_path / "t1.config.yaml"
    assert "epochs: 1\n" in resolved.read_text() and "model: resnet8\n" in resolved.read_text()
    assert main(["train-teacher", "--config", str(resolved), "--out", str(tmp_path / "t2.pt")]) == 0
    a, b = load_checkpoint(first)["state_dict"], load_checkpoint(tmp_path / "t2.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run, bit for bit
    capsys.readouterr()
    assert main(["train-teacher", "--config", str(resolved), "--out", str(tmp_path / "t1.pt")]) == 2
    assert "would be overwritten" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["finetune", "--bogus", "1"], ["apply", "--force", "maybe"], ["baseline"] * 3,
                                  ["policy"], ["evaluate", "--latency-repeats", "many"]])  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_an_error_starts_on_its_own_line_while_a_progress_bar_holds_one(monkeypatch, capsys):
    from tqdm import tqdm

    import agents.cli

    def fails_mid_bar(name, args):
        bar = tqdm(total=10, desc="search", file=sys.stderr)
        bar.update(3)
        raise AmcError("worker died twice; see the worker's log")

    monkeypatch.setattr(agents.cli, "_run", fails_mid_bar)
    assert main(["evaluate", "x.pt"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "amc evaluate: error: worker died twice; see the worker's log"
    assert "search:  30%" in err.splitlines()[-2]  # the bar, closed where it stood
