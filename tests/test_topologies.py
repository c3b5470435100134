"""The budget is a guarantee on any topology torch-pruning prunes: the cost model predicts the built student
exactly, and every random policy's student meets the budget."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from topologies import ZOO

from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy
from amc.cost.budget import Budget
from amc.cost.measured import count_macs, count_params, size_bytes
from amc.cost.predicted import CostModel
from amc.errors import AmcError
from amc.evaluate.baselines import random_policy, uniform
from amc.models import create_model
from amc.train.distill import kd_loss, recalibrate_bn_on

TORCHVISION = ("tv:densenet121", "tv:googlenet", "tv:mobilenet_v3_small")
SHAPES = {name: (3, 16, 16) for name in ZOO} | {name: (3, 32, 32) for name in TORCHVISION}
TOPOLOGIES = str(Path(__file__).parent / "topologies.py")
FLOPS_BUDGET = {"FixedWidthViT": 0.7}  # only its MLPs can narrow (timm's forward ties heads and embedding)


@cache
def teacher_and_costs(name: str) -> tuple[torch.nn.Module, CostModel]:
    torch.manual_seed(0)
    # Through create_model, as a user's file.py:Class is built (its nn.MultiheadAttention swapped for amc's).
    teacher = create_model(f"{TOPOLOGIES}:{name}" if name in ZOO else name, num_classes=10).eval()
    return teacher, CostModel(teacher, SHAPES[name])


def assert_predicted_exactly(name: str, policy: CompressionPolicy) -> torch.nn.Module:
    teacher, cost_model = teacher_and_costs(name)
    shape = SHAPES[name]
    student = apply_policy(teacher, policy, shape)
    cost_model.check_student(student, policy)
    predicted = cost_model.predict(policy.keep_ratios, policy.removed_blocks, policy.bits, round_to=policy.round_to)
    assert round(predicted.macs) == count_macs(student, shape)
    assert round(predicted.params) == count_params(student)
    assert round(predicted.size_bytes) == size_bytes(student)
    assert student(torch.randn(2, *shape)).shape == (2, 10)
    return student


def policies(name: str):
    units = [u.name for u in teacher_and_costs(name)[1].units]
    ratios = st.lists(st.floats(0.05, 1.0), min_size=len(units), max_size=len(units))
    return st.builds(
        lambda keep, round_to: CompressionPolicy(keep_ratios=dict(zip(units, keep, strict=True)), round_to=round_to),
        ratios,
        st.sampled_from([1, 2, 4]),
    )


@pytest.mark.parametrize("name", [*sorted(ZOO), *TORCHVISION])
def test_prediction_equals_the_built_student(name):
    examples = 12 if name in ZOO else 2  # torchvision models take seconds each

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(policies(name))
    def check(policy):
        assert_predicted_exactly(name, policy)

    check()


@pytest.mark.parametrize("name", [*sorted(ZOO), *TORCHVISION])
def test_random_and_uniform_policies_meet_the_budget(name):
    teacher, cost_model = teacher_and_costs(name)
    flops, shape = FLOPS_BUDGET.get(name, 0.5), SHAPES[name]
    budget, rng = Budget(flops=flops), np.random.default_rng(0)
    draws = [random_policy(cost_model, budget, rng) for _ in range(2 if name in ZOO else 1)]
    for policy in [uniform(cost_model, budget), *draws]:
        student = assert_predicted_exactly(name, policy)
        assert count_macs(student, shape) <= flops * count_macs(teacher, shape)


@pytest.mark.parametrize("name", [*sorted(ZOO), *TORCHVISION])
def test_pruned_students_train_too(name):
    """Training-mode forwards (BN recalibration, a fine-tune step) on the pruned student, where heads that run
    only in training would show: torchvision's GoogLeNet is built without its auxiliary classifiers."""
    teacher, cost_model = teacher_and_costs(name)
    shape = SHAPES[name]
    student = apply_policy(teacher, uniform(cost_model, Budget.parse("flops=0.5")), shape)
    recalibrate_bn_on(student, [torch.randn(4, *shape)])
    student.train()
    logits = student(torch.randn(4, *shape))
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 10)
    kd_loss(logits, torch.randn(4, 10), torch.randint(0, 10, (4,))).backward()


def test_concatenated_branches_each_keep_their_share():
    """The mixed model's concat of two 8-channel branches, gated by SE, is one unit of two pieces."""
    teacher, cost_model = teacher_and_costs("MixedBlock")
    unit = next(u for u in cost_model.units if "pointwise.0" in u.out_layers)
    assert [len(p) for p in unit.pieces] == [8, 8] and {"plain.0", "excite"} <= set(unit.out_layers)
    student = assert_predicted_exactly("MixedBlock", CompressionPolicy(keep_ratios={unit.name: 0.5}))
    assert student.pointwise[0].out_channels == student.plain[0].out_channels == 4
    assert student.excite.out_channels == student.post[0].in_channels == 8


def test_split_halves_are_pruned_alike():
    teacher, cost_model = teacher_and_costs("SplitBranches")
    student = assert_predicted_exactly("SplitBranches", CompressionPolicy(keep_ratios={"stem.0": 0.25}))
    assert student.stem[0].out_channels == 4 and student.left[0].in_channels == student.right[0].in_channels == 2


def test_grouped_convolutions_are_left_whole():
    teacher, cost_model = teacher_and_costs("GroupedConv")
    touched = {layer for u in cost_model.units for layer in u.out_layers + u.in_layers}
    assert "grouped.0" not in touched and "stem.0" not in [u.name for u in cost_model.units]
    student = assert_predicted_exactly("GroupedConv", CompressionPolicy(keep_ratios={"post.0": 0.5}))
    assert student.grouped[0].groups == 4 and student.grouped[0].out_channels == 32


def test_a_student_that_differs_from_the_prediction_is_an_error_naming_the_layer():
    teacher, cost_model = teacher_and_costs("TwoBranchConcat")
    policy = CompressionPolicy(keep_ratios={"a.0": 0.5})
    student = apply_policy(teacher, policy, SHAPES["TwoBranchConcat"])
    wrong = copy.deepcopy(student)
    wrong.b[0] = torch.nn.Conv2d(16, 11, 1)
    with pytest.raises(AmcError, match=r"layer b\.0: predicted \(in, out\) channels \(16, 12\), built \(16, 11\)"):
        cost_model.check_student(wrong, policy)


def test_a_search_on_a_user_model_with_concat_se_and_residual_meets_the_budget(tmp_path, capsys):
    """The report's model, as a user brings it (file.py:Class, untrained): the searched student's measured
    FLOPs and params are what its policy.json claims, and within the budget."""
    from agents.cli import main

    model = f"{Path(__file__).parent / 'topologies.py'}:MixedBlock"
    teacher = tmp_path / "teacher.pt"
    assert main(["train-teacher", "--model", model, "--dataset", "synthetic", "--epochs", "0", "--out",
                 str(teacher)]) == 0  # fmt: skip
    argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path}", "--set", "budget=flops=0.5",
            "--set", "episodes=3", "--set", "warmup_episodes=2", "--set", "recalibrate_batches=1",
            "--set", "eval_samples=32", "--set", "report_samples=32", "--set", "report_latency_repeats=2",
            "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    claimed = CompressionPolicy.load(Path(results["run_dir"]) / "policy.json").metadata
    assert results["flops_ratio"] <= 0.5
    assert results["flops_ratio"] == pytest.approx(claimed["measured"]["flops_ratio"])
    assert results["flops_ratio"] == pytest.approx(claimed["achieved"]["flops"], abs=1e-9)
