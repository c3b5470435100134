"""Policies applied to teachers: real pruning, removal, sparsity and quantization, and their costs."""

import numpy as np
import pytest
import torch
from conftest import model_input, model_kwargs

from amc.compress.policy import CompressionPolicy, model_fingerprint
from amc.compress.pruning import kept_channels
from amc.compress.student import apply_policy, load_student, save_student
from amc.cost.budget import Budget
from amc.cost.measured import count_macs, count_params, flop_counter_macs, layer_macs, size_bytes
from amc.cost.predicted import CostModel
from amc.errors import AmcError
from amc.evaluate.baselines import global_pruning, random_policy, uniform
from amc.models import create_model, list_models


def _teacher(name):
    return create_model(name, num_classes=10, **model_kwargs(name)).eval()


@pytest.mark.parametrize("name", list_models())
def test_analytic_macs_agree_with_torch_flop_counter(name):
    model = _teacher(name)
    assert count_macs(model, model_input(name)) == flop_counter_macs(model, model_input(name))


@pytest.mark.parametrize("name", list_models())
def test_random_policy_gives_smaller_student_with_same_output(name):
    teacher, shape = _teacher(name).eval(), model_input(name)
    cost_model = CostModel(teacher, shape)
    policy = random_policy(cost_model, Budget(flops=0.6), np.random.default_rng(0))
    before = [p.clone() for p in teacher.parameters()]
    student = apply_policy(teacher, policy, shape).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert student(x).shape == teacher(x).shape
        torch.testing.assert_close(apply_policy(teacher, policy, shape).eval()(x), student(x), rtol=0, atol=0)
        keep_all = CompressionPolicy(architecture=policy.architecture)
        torch.testing.assert_close(apply_policy(teacher, keep_all, shape).eval()(x), teacher(x))
    assert count_macs(student, shape) < count_macs(teacher, shape)
    assert count_params(student) < count_params(teacher)
    assert count_macs(student, shape) == flop_counter_macs(student, shape)
    assert count_macs(student, shape) <= 0.6 * count_macs(teacher, shape)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True)), "teacher modified"


@pytest.mark.parametrize("name", ["resnet8", "plain20", "digits_cnn"])
def test_cost_model_predicts_the_built_student_exactly(name):
    teacher, shape = _teacher(name), model_input(name)
    cost_model = CostModel(teacher, shape)
    rng = np.random.default_rng(1)
    for _ in range(3):
        keep = {u.name: float(rng.uniform(0.2, 1.0)) for u in cost_model.units}
        removed = [
            str(b) for b in rng.choice(cost_model.removable, size=min(2, len(cost_model.removable)), replace=False)
        ]
        layer = cost_model.layers[-1].name
        policy = CompressionPolicy(keep_ratios=keep, removed_blocks=removed, bits={layer: 4}, round_to=2)
        student = apply_policy(teacher, policy, shape)
        predicted = cost_model.predict(keep, removed, policy.bits, round_to=2)
        assert round(predicted.macs) == count_macs(student, shape)
        assert round(predicted.params) == count_params(student)
        assert round(predicted.size_bytes) == size_bytes(student)


def test_applying_a_policy_twice_is_bit_identical(tiny_resnet):
    policy = CompressionPolicy(keep_ratios={"conv1": 0.5, "layer2.0.conv1": 0.3}, sparsity={"fc": 0.5})
    a = apply_policy(tiny_resnet, policy, (3, 32, 32))
    b = apply_policy(tiny_resnet, policy, (3, 32, 32))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_policy_json_round_trip_is_exact(tmp_path, tiny_resnet):
    policy = CompressionPolicy(
        keep_ratios={"conv1": 0.123456789},
        sparsity={"fc": 0.25},
        removed_blocks=["layer1.0"],
        bits={"fc": 4},
        architecture="resnet8",
        fingerprint=model_fingerprint(tiny_resnet),
        num_classes=4,
        metadata={"budget": 0.5},
    )
    policy.save(tmp_path / "policy.json")
    assert CompressionPolicy.load(tmp_path / "policy.json") == policy


def test_policy_validation_names_the_offending_layer(tiny_resnet):
    shape = (3, 32, 32)
    with pytest.raises(AmcError, match="unknown pruning unit 'conv9'"):
        apply_policy(tiny_resnet, CompressionPolicy(keep_ratios={"conv9": 0.5}), shape)
    with pytest.raises(AmcError, match="keep ratio of 'conv1' is 1.5"):
        apply_policy(tiny_resnet, CompressionPolicy(keep_ratios={"conv1": 1.5}), shape)
    with pytest.raises(AmcError, match="bits of 'fc' is 9"):
        apply_policy(tiny_resnet, CompressionPolicy(bits={"fc": 9}), shape)
    with pytest.raises(AmcError, match="not a removable block"):
        apply_policy(tiny_resnet, CompressionPolicy(removed_blocks=["layer2.0"]), shape)
    other = CompressionPolicy(architecture="resnet20", fingerprint=model_fingerprint(create_model("resnet20")))
    with pytest.raises(AmcError, match="another architecture"):
        apply_policy(tiny_resnet, other, shape)


def test_block_removal_removes_exactly_the_blocks_flops():
    teacher, shape = _teacher("resnet20"), (3, 32, 32)
    removed = ["layer1.1", "layer3.2"]
    student = apply_policy(teacher, CompressionPolicy(removed_blocks=removed), shape)
    per_layer = layer_macs(teacher, shape)
    block_macs = sum(v for k, v in per_layer.items() if k.startswith(("layer1.1.", "layer3.2.")))
    assert block_macs > 0
    assert count_macs(student, shape) == count_macs(teacher, shape) - block_macs
    x = torch.randn(2, *shape)
    assert student(x).shape == (2, 10)


def test_4_bit_quantization_is_about_an_eighth_of_float32():
    teacher = _teacher("resnet20")
    layers = [n for n, m in teacher.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    student = apply_policy(teacher, CompressionPolicy(bits={n: 4 for n in layers}), (3, 32, 32))
    ratio = size_bytes(student) / size_bytes(teacher)
    assert 0.125 < ratio < 0.15  # 1/8 plus per-channel scales and float BatchNorm
    weight = dict(student.named_modules())["layer2.0.conv1"].weight
    assert all(len(torch.unique(row)) <= 15 for row in weight.flatten(1))  # 2^4 - 1 levels per channel


def test_sparsity_is_permanent_and_cheaper_to_store(synthetic):
    teacher = create_model("resnet8", num_classes=4).eval()
    student = apply_policy(teacher, CompressionPolicy(sparsity={"layer3.0.conv2": 0.9}), (3, 16, 16))
    conv = dict(student.named_modules())["layer3.0.conv2"]
    assert (conv.weight == 0).float().mean().item() == pytest.approx(0.9, abs=1e-3)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    student.train()
    student(torch.randn(4, 3, 16, 16)).sum().backward()
    optimizer.step()
    assert (conv.weight == 0).float().mean().item() == pytest.approx(0.9, abs=1e-3)
    assert size_bytes(student) < size_bytes(teacher)


def test_student_save_load_gives_equal_predictions(tmp_path, tiny_resnet):
    policy = CompressionPolicy(
        keep_ratios={"conv1": 0.5, "layer3.0.conv1": 0.25},
        removed_blocks=["layer1.0"],
        sparsity={"fc": 0.5},
        bits={"layer2.0.conv2": 4},
    )
    student = apply_policy(tiny_resnet, policy, (3, 32, 32))
    teacher_blob = {
        "arch": {"name": "resnet8", "num_classes": 4, "kwargs": {}},
        "dataset": {"input_shape": [3, 32, 32]},
    }
    save_student(tmp_path / "s.pt", student, teacher_blob, policy)
    with torch.no_grad():  # as inference code loads it; the pruning replay still traces
        loaded = load_student(tmp_path / "s.pt")
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(student(x), loaded(x))
    assert size_bytes(loaded) == size_bytes(student)


def test_uniform_meets_the_budget_tightly():
    cost_model = CostModel(_teacher("resnet20"), (3, 32, 32))
    for resource in ("flops", "params", "size"):
        policy = uniform(cost_model, Budget(**{resource: 0.5}))
        assert len(set(policy.keep_ratios.values())) == 1
        achieved = cost_model.ratios(cost_model.predict(policy.keep_ratios))[resource]
        assert 0.47 <= achieved <= 0.5


def test_random_policies_differ_but_all_meet_the_budget():
    cost_model = CostModel(_teacher("resnet20"), (3, 32, 32))
    rng = np.random.default_rng(0)
    policies = [random_policy(cost_model, Budget(flops=0.5), rng) for _ in range(5)]
    assert len({tuple(p.keep_ratios.values()) for p in policies}) == 5
    for p in policies:
        assert cost_model.ratios(cost_model.predict(p.keep_ratios))["flops"] <= 0.5


@pytest.mark.parametrize("importance", ["l1", "l1-normalized", "lamp"])
def test_global_pruning_honours_the_per_layer_cap_and_stays_tight(importance):
    teacher = _teacher("resnet20")
    cost_model = CostModel(teacher, (3, 32, 32))
    smallest = {}
    for cap in (0.5, 0.9):
        policy = global_pruning(teacher, (3, 32, 32), cost_model, Budget(flops=0.3), importance=importance,
                                max_pruning_ratio=cap)  # fmt: skip
        for unit in cost_model.units:  # never more than the cap of any unit removed
            assert round(policy.keep_ratios[unit.name] * unit.channels) >= (1 - cap) * unit.channels - 1e-6
        flops = cost_model.ratios(cost_model.predict(policy.keep_ratios))["flops"]
        assert 0.28 <= flops <= 0.3  # the fewest channels removed that meet the budget
        smallest[cap] = min(policy.keep_ratios.values())
    assert smallest[0.5] >= 0.5 and smallest[0.9] < smallest[0.5]  # the cap binds, and lifting it changes the cut


def test_impossible_budget_is_refused():
    cost_model = CostModel(_teacher("resnet8"), (3, 32, 32))
    with pytest.raises(AmcError, match="cannot be met"):
        uniform(cost_model, Budget(flops=0.001))
    with pytest.raises(AmcError, match="must be a ratio"):
        Budget(flops=1.5)


def test_kept_channels_rounding():
    assert kept_channels(64, 0.5) == 32
    assert kept_channels(64, 0.5, round_to=8) == 32
    assert kept_channels(64, 0.01, round_to=8) == 8
    assert kept_channels(10, 0.01) == 1


def test_least_squares_reconstruction_brings_outputs_closer_to_the_teacher(synthetic):
    from amc.compress.reconstruction import reconstruct

    teacher = create_model("resnet8", num_classes=4).eval()
    policy = CompressionPolicy(keep_ratios={"layer1.0.conv1": 0.5, "layer3.0.conv1": 0.5})
    shape = (3, 16, 16)
    student = apply_policy(teacher, policy, shape)
    x = next(iter(synthetic.batches("val", 32)))[0]

    def layer_error(model):
        out = {}
        handles = [m.register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o))
                   for n, m in model.named_modules() if n == "layer3.0.conv2"]  # fmt: skip
        model(x)
        handles[0].remove()
        return out["layer3.0.conv2"]

    target = layer_error(teacher)
    before = (layer_error(student) - target).pow(2).mean().item()
    refit = reconstruct(student, teacher, synthetic, student.amc_structure["pruning_history"], shape, batches=2)
    after = (layer_error(student) - target).pow(2).mean().item()
    assert refit == ["layer1.0.conv2", "layer3.0.conv2"]
    assert after < 0.5 * before


def test_latency_table_round_trip_and_predictions(tmp_path):
    from amc.cost.latency import LatencyTable, build_latency_table

    teacher = create_model("resnet8", num_classes=4).eval()
    table = build_latency_table(teacher, (3, 16, 16), grid_points=2, repeats=2)
    table.save(tmp_path / "lut.json")
    loaded = LatencyTable.load(tmp_path / "lut.json")
    assert loaded.predict_model(teacher) == pytest.approx(table.predict_model(teacher))
    assert table.predict_model(teacher) == pytest.approx(table.teacher_ms, rel=1e-6)  # overhead closes the gap
    student = apply_policy(teacher, CompressionPolicy(keep_ratios={"layer3.0.conv1": 0.25}), (3, 16, 16))
    assert set(table.layers) == {
        n for n, m in teacher.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    assert table.predict_model(student) > 0
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(AmcError, match="not an amc latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_latency_entry_never_extrapolates_below_its_grid():
    from amc.cost.latency import LayerEntry

    noisy = LayerEntry("conv", [4, 8], [4, 8], [[0.9, 1.0], [0.5, 1.2]])  # timing noise: 8x4 faster than 4x4
    assert noisy.predict(1, 1) == pytest.approx(0.9)  # the smallest timed shape, not a negative extrapolation
    assert noisy.predict(16, 16) == pytest.approx(1.2)
    assert noisy.predict(6, 6) == pytest.approx((0.9 + 1.0 + 0.5 + 1.2) / 4)
