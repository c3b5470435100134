"""The deployed model: runtimes, the timing protocol, int8 QDQ files, latency tables measured in a runtime, and
latency budgets met where the student runs. Tiny models only; speeds are benchmarks' business, not tests'."""

import builtins
import json
import warnings

import numpy as np
import pytest
import torch
from qdq_reference import fake_quantized_outputs

from agents.cli import main
from amc.compress.export import relative_difference
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy
from amc.cost.budget import Budget
from amc.cost.latency import load_latency_table, resolve_round_to
from amc.cost.predicted import CostModel
from amc.cost.runtime_latency import build_runtime_table
from amc.data import load_synthetic
from amc.deploy.deployment import at_batch, calibration_images, deploy, runtime_accuracy, time_deployed
from amc.deploy.runtimes import Target, require
from amc.deploy.timing import example_batch, time_alternated
from amc.errors import AmcError
from amc.evaluate.baselines import uniform
from amc.models import create_model
from amc.train.loop import evaluate_accuracy

SHAPE = (3, 16, 16)
RUNTIMES = ["eager", "onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def data():
    return load_synthetic(num_classes=4, image_size=16, per_class=40)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=4).eval()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp32_deployment_gives_pytorchs_outputs(runtime, teacher, tmp_path):
    deployed = deploy(teacher, SHAPE, Target(runtime, "fp32", batch=4), tmp_path)
    x = example_batch(SHAPE, 4, seed=3)
    with torch.no_grad():
        reference = teacher(torch.from_numpy(x)).numpy()
    assert relative_difference(deployed.run(x), reference) < 1e-4
    assert relative_difference(at_batch(deployed, 2).run(x[:2]), reference[:2]) < 1e-4


def test_openvino_leaves_its_threads_unpinned_so_parallel_timers_use_different_cores(teacher, tmp_path):
    from amc.deploy.runtimes import openvino_compiled

    deployed = deploy(teacher, SHAPE, Target("onnxruntime", "fp32", batch=2), tmp_path)
    compiled = openvino_compiled(deployed.onnx_path, Target("openvino", "fp32", batch=2, threads=1))
    assert compiled.get_property("ENABLE_CPU_PINNING") is False  # OpenVINO's default on Linux is True
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_file_stays_close_to_fp32_and_both_runtimes_run_it_alike(runtime, teacher, data, tmp_path):
    calibration = calibration_images(data, 64)
    deployed = deploy(teacher, SHAPE, Target(runtime, "int8", batch=8), tmp_path, calibration=calibration,
                      activation_type="uint8")  # fmt: skip
    assert deployed.onnx_path.name == "model.int8.onnx" and deployed.activation_type == "uint8"
    x = calibration[:8]
    with torch.no_grad():
        reference = teacher(torch.from_numpy(x)).numpy()
    # stated tolerance: 8-bit weights and activations keep logits within 10% of the largest logit
    assert relative_difference(deployed.run(x), reference) < 0.1
    other = "openvino" if runtime == "onnxruntime" else "onnxruntime"
    from amc.deploy.runtimes import onnx_runner

    same_file = onnx_runner(deployed.onnx_path, Target(other, "int8", batch=8))
    assert relative_difference(same_file(x), deployed.run(x)) < 0.05


@pytest.mark.parametrize("activation_type", ["uint8", "int8"])
def test_int8_kernels_match_pytorchs_fake_quantized_graph(activation_type, teacher, data, tmp_path):
    """Stated tolerances: ONNX Runtime's integer kernels reproduce the fake-quantized graph to float rounding
    (1e-4 of the largest logit); OpenVINO requantizes its own way, so its logits may move by quantization steps
    (within 5% of the largest logit)."""
    calibration = calibration_images(data, 64)
    deployed = deploy(teacher, SHAPE, Target("onnxruntime", "int8", batch=8), tmp_path, calibration=calibration,
                      activation_type=activation_type)  # fmt: skip
    x = calibration[:8]
    reference = fake_quantized_outputs(deployed.onnx_path, x)
    assert relative_difference(deployed.run(x), reference) < 1e-4
    from amc.deploy.runtimes import onnx_runner

    openvino = onnx_runner(deployed.onnx_path, Target("openvino", "int8", batch=8))(x)
    assert relative_difference(openvino, reference) < 0.05


def test_layers_named_float_stay_fp32_in_the_int8_file(teacher, data, tmp_path):
    import onnx

    calibration = calibration_images(data, 32)
    deployed = deploy(teacher, SHAPE, Target("onnxruntime", "int8", batch=8), tmp_path, calibration=calibration,
                      activation_type="uint8", float_layers=["conv1", "layer2.0.downsample.0"])  # fmt: skip
    graph = onnx.load(str(deployed.onnx_path)).graph
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    weights = {n.name: n.input[1] for n in graph.node if n.op_type == "Conv"}
    assert weights["/conv1/Conv"] in floats and weights["/layer2/layer2.0/downsample/downsample.0/Conv"] in floats
    assert weights["/layer1/layer1.0/conv1/Conv"] not in floats  # the rest stays int8 (a DequantizeLinear output)
    x = calibration[:8]  # float convs sum in another order, which may move a value across a rounding step
    assert relative_difference(deployed.run(x), fake_quantized_outputs(deployed.onnx_path, x)) < 0.05
    with pytest.raises(AmcError, match="no exported layer is named 'layer9.conv1'"):
        deploy(teacher, SHAPE, Target("onnxruntime", "int8", batch=8), tmp_path, calibration=calibration,
               activation_type="uint8", float_layers=["layer9.conv1"])  # fmt: skip


def test_runtime_accuracy_is_the_runtimes_own_and_matches_pytorch_in_fp32(teacher, data, tmp_path):
    deployed = deploy(teacher, SHAPE, Target("onnxruntime", "fp32", batch=1), tmp_path)
    assert runtime_accuracy(deployed, data, "test") == pytest.approx(evaluate_accuracy(teacher, data, "test"))
    broken = type(deployed)(deployed.target, lambda x: np.zeros((len(x), 4), np.float32))
    assert runtime_accuracy(broken, data, "test") == pytest.approx((data.test.labels == 0).float().mean().item())


def test_alternated_timing_times_every_runner_in_alternating_order():
    calls = []
    runners = {"a": lambda x: calls.append("a"), "b": lambda x: calls.append("b")}
    timings = time_alternated(runners, np.zeros((2, 1), np.float32), rounds=3, runs_per_round=2, warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] + ["b", "b", "a", "a"] + ["a", "a", "b", "b"]
    assert {t.runs for t in timings.values()} == {6}
    assert all(t.q1_ms <= t.median_ms <= t.q3_ms for t in timings.values())


def test_timing_refuses_models_compiled_for_different_batches(teacher, tmp_path):
    one = deploy(teacher, SHAPE, Target("onnxruntime", batch=1), tmp_path)
    with pytest.raises(ValueError, match="different batch sizes"):
        time_deployed({"a": one, "b": at_batch(one, 2)}, SHAPE)


def test_target_and_missing_runtime_are_one_line(monkeypatch):
    with pytest.raises(AmcError, match="unknown runtime 'tensorflow'"):
        Target("tensorflow")
    with pytest.raises(AmcError, match="eager PyTorch runs fp32 only"):
        Target("eager", "int8")
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.setattr("importlib.import_module", lambda name: no_openvino(name))
    with pytest.raises(AmcError, match=r"openvino is not installed; `pip install 'openvino==") as error:
        require("openvino")
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def runtime_table(teacher, tmp_path_factory):
    table = build_runtime_table(teacher, SHAPE, Target("onnxruntime", "fp32", batch=4), students=14, check=6,
                                rounds=2, round_to=4)  # fmt: skip
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    table.save(path)
    return table, path


def test_runtime_table_round_trip_records_its_target_and_error(runtime_table, teacher):
    table, path = runtime_table
    loaded = load_latency_table(path, "onnxruntime", "fp32")
    shapes = {name: spec.channels for name, spec in table.layers.items()}
    assert loaded.predict(shapes) == pytest.approx(table.predict(shapes)) and table.predict(shapes) > 0
    assert loaded.target["runtime"] == "onnxruntime" and loaded.target["runtime_version"]
    assert loaded.target["precision"] == "fp32" and loaded.target["batch"] == 4 and "cpu_flags" in loaded.target
    assert loaded.round_to == 4 and loaded.metadata["check"]["students"] == 6
    assert loaded.metadata["check"]["median_error"] >= 0


def test_a_table_that_misses_its_error_aim_says_so():
    from amc.commands.profile_latency import warn_if_inaccurate

    with pytest.warns(UserWarning, match="72% median and 77% at the 90th percentile"):
        warn_if_inaccurate({"students": 4, "median_error": 0.72, "p90_error": 0.77}, students=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_inaccurate({"students": 30, "median_error": 0.03, "p90_error": 0.09}, students=90)


def test_runtime_table_predicts_fewer_channels_as_faster(runtime_table):
    table, _ = runtime_table
    full = {name: spec.channels for name, spec in table.layers.items()}
    halved = {name: (max(1, i // 2) if i > 3 else i, o if name == "fc" else max(1, o // 2))
              for name, (i, o) in full.items()}  # fmt: skip
    assert table.predict(halved) <= table.predict(full)


@pytest.mark.parametrize(
    ("runtime", "precision", "edit", "message"),
    [
        ("openvino", "fp32", None, "measured for runtime 'onnxruntime', not 'openvino'"),
        ("onnxruntime", "int8", None, "measured for precision 'fp32', not 'int8'"),
        ("eager", "fp32", None, "measured for runtime 'onnxruntime', not 'eager'"),
        ("onnxruntime", "fp32", {"cpu": "Another CPU"}, "measured for cpu 'Another CPU'"),
        ("onnxruntime", "fp32", {"cpu_flags": ["avx2"]}, "CPU with flags ['avx2']"),
    ],
)
def test_a_table_for_another_runtime_precision_or_cpu_is_refused_in_one_line(
    runtime_table, tmp_path, runtime, precision, edit, message
):
    _, path = runtime_table
    blob = json.loads(path.read_text())
    blob["target"].update(edit or {})
    other = tmp_path / "other.json"
    other.write_text(json.dumps(blob))
    with pytest.raises(AmcError, match=message.replace("(", r"\(").replace("[", r"\[")) as error:
        load_latency_table(other, runtime, precision)
    assert "\n" not in str(error.value) and "amc profile-latency" in str(error.value)


def test_round_to_auto_follows_the_table_and_a_conflict_is_refused(runtime_table):
    table, _ = runtime_table
    assert resolve_round_to("auto", table) == 4 and resolve_round_to("auto") == 1 and resolve_round_to(8) == 8
    with pytest.raises(AmcError, match="fitted for students rounded to 4"):
        resolve_round_to("8", table)
    with pytest.raises(AmcError, match="whole number"):
        resolve_round_to("eight")


def test_a_latency_budget_in_the_runtime_is_met_when_the_student_runs_there(runtime_table, teacher, tmp_path):
    table, _ = runtime_table
    cost_model = CostModel(teacher, SHAPE).with_latency(table)
    smallest = cost_model.policy_ratios(CompressionPolicy(dict.fromkeys(cost_model.channels, 0.05), round_to=4))
    budget = (1.0 + smallest["latency"]) / 2  # reachable whatever the tiny model's overhead
    policy = uniform(cost_model, Budget(latency=budget), round_to=table.round_to)
    assert cost_model.policy_ratios(policy)["latency"] <= budget + 1e-9
    student = apply_policy(teacher, policy, SHAPE)
    target = Target("onnxruntime", "fp32", batch=4)
    models = {"teacher": deploy(teacher, SHAPE, target, tmp_path, name="t"),
              "student": deploy(student, SHAPE, target, tmp_path, name="s")}  # fmt: skip
    timings = time_deployed(models, SHAPE, rounds=6, runs_per_round=10)
    assert timings["student"].median_ms / timings["teacher"].median_ms <= budget * 1.5  # generous: a shared machine


def test_a_latency_budget_without_a_table_says_how_to_build_one(teacher):
    with pytest.raises(AmcError, match="amc profile-latency TEACHER --runtime openvino"):
        uniform(CostModel(teacher, SHAPE), Budget(latency=0.5))


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    argv = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "1", "--precision", "fp32",
            "--out", str(path)]  # fmt: skip
    assert main(argv) == 0
    return path


def test_evaluate_in_a_runtime_reports_accuracy_and_speed_there(teacher_file, capsys):
    argv = ["evaluate", str(teacher_file), "--runtime", "openvino", "--runtime-precision", "int8", "--speedup-over",
            str(teacher_file), "--rounds", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["runtime"] == "openvino" and report["precision"] == "int8" and report["threads"] == 1
    assert report["activation_type"] in ("uint8", "int8") and report["cpu"] and "runtime_version" in report
    assert 0 <= report["accuracy"] <= 1
    for batch in (1, 64):
        assert report[f"latency_ms_b{batch}"] > 0
        assert report[f"speedup_b{batch}"] > 0 and report[f"speedup_vs_fp32_b{batch}"] > 0


def test_baseline_and_search_take_a_runtime_latency_budget(teacher_file, runtime_table, tmp_path, capsys):
    from amc.checkpoint import load_checkpoint
    from amc.compress.student import model_from_checkpoint

    teacher = model_from_checkpoint(load_checkpoint(teacher_file))
    table = build_runtime_table(teacher, SHAPE, Target("onnxruntime", "fp32", batch=1), students=12, check=4,
                                rounds=2, round_to=2)  # fmt: skip
    # latency in proportion to the MACs run: a 12-student fit timed on a loaded machine can be too flat to reach 0.7
    table.coefficients = [0.0] + [1.0] * len(table.groups) + [0.0] * len(table.groups)
    table.save(tmp_path / "lut.json")
    lut, policy = str(tmp_path / "lut.json"), str(tmp_path / "p.json")
    argv = ["baseline", "uniform", "--teacher", str(teacher_file), "--latency", "0.7", "--latency-table", lut,
            "--runtime", "onnxruntime", "--out", policy, "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["latency_ratio"] <= 0.7 + 1e-9
    assert json.loads((tmp_path / "p.json").read_text())["round_to"] == 2  # auto: the table's multiple
    assert main([*argv[:-3], "--runtime", "openvino", "--out", str(tmp_path / "q.json")]) == 2
    assert "measured for runtime 'onnxruntime', not 'openvino'" in capsys.readouterr().err
    search = ["search", "--teacher", str(teacher_file), "--budget", "latency=0.7", "--latency-table",
              str(tmp_path / "lut.json"), "--runtime", "onnxruntime", "--episodes", "3", "--warmup-episodes", "2",
              "--eval-samples", "40", "--recalibrate-batches", "1", "--report-samples", "40",
              "--report-latency-repeats", "2", "--out-dir", str(tmp_path / "runs"), "--json"]  # fmt: skip
    assert main(search) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_dir = next((tmp_path / "runs").iterdir())
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["deployed"]["runtime"] == "onnxruntime" and saved["deployed"]["speedup_b1"] > 0
    assert results["predicted"]["latency"] <= 0.7 + 1e-9
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report" / "report.md").read_text()
    assert (run_dir / "report" / "channels.png").stat().st_size > 0
    assert (run_dir / "report" / "candidates.png").stat().st_size > 0 and "every episode" in report
    assert "## Deployed: onnxruntime fp32" in report and "latency predicted by" in report


def test_the_reward_can_score_candidates_as_the_runtime_runs_them(teacher, data):
    from amc.evaluate.evaluator import CandidateEvaluator, EvaluationSettings

    policy = CompressionPolicy(keep_ratios={"layer2.0.conv1": 0.5})
    eager = CandidateEvaluator(teacher, data, EvaluationSettings(eval_samples=40, recalibrate_batches=1,
                                                                 precision="fp32")).evaluate(policy)  # fmt: skip
    fp32 = CandidateEvaluator(teacher, data, EvaluationSettings(eval_samples=40, recalibrate_batches=1,
                                                                precision="fp32", runtime="onnxruntime"))  # fmt: skip
    assert fp32.evaluate(policy).accuracy == pytest.approx(eager.accuracy)  # same numerics up to float rounding
    int8 = CandidateEvaluator(teacher, data, EvaluationSettings(eval_samples=40, recalibrate_batches=1,
                                                                precision="fp32", runtime="openvino",
                                                                runtime_precision="int8"))  # fmt: skip
    assert abs(int8.evaluate(policy).accuracy - eager.accuracy) <= 0.2


def test_fastest_rounding_times_every_candidate_multiple(teacher):
    from amc.cost.runtime_latency import fastest_rounding

    cost_model = CostModel(teacher, SHAPE)
    chosen, scores = fastest_rounding(teacher, SHAPE, Target("onnxruntime", batch=2), cost_model, candidates=(1, 8),
                                      calibration=None, activation_type="uint8", rounds=1)  # fmt: skip
    assert set(scores) == {"1", "8"} and chosen in (1, 8) and scores[str(chosen)] == min(scores.values())
    assert all(score > 0 for score in scores.values())
