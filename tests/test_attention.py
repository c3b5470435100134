"""Transformers: whole attention heads leave q, k, v and the output projection together, the cost model
counts the attention matmuls and the position embedding, and a ViT student round-trips and exports."""

from __future__ import annotations

import pytest
import torch
from topologies import ZOO

from amc.compress.heads import attention_macs
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy, load_student, save_student
from amc.cost.measured import count_macs, flop_counter_macs
from amc.cost.predicted import CostModel
from amc.errors import AmcError
from amc.evaluate.evaluator import EvaluationSettings
from amc.models import create_model, model_spec

SHAPE = (3, 16, 16)
SMALL = {"image_size": 16, "dim": 32, "depth": 2, "num_heads": 4}


def small_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_tiny", num_classes=10, **SMALL).eval()


def test_a_head_unit_removes_whole_heads_from_q_k_v_and_the_projection():
    teacher = small_vit()
    cost_model = CostModel(teacher, SHAPE)
    heads = [u for u in cost_model.units if u.kind == "heads"]
    assert [u.name for u in heads] == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"] and heads[0].channels == 4
    policy = CompressionPolicy(keep_ratios={"blocks.0.attn.qkv": 0.5, "blocks.1.attn.qkv": 0.25}, round_to=8)
    student = apply_policy(teacher, policy, SHAPE)
    cost_model.check_student(student, policy)
    attn = student.blocks[0].attn
    assert (attn.num_heads, attn.head_dim, attn.qkv.out_features, attn.proj.in_features) == (2, 8, 48, 16)
    assert student.blocks[1].attn.num_heads == 1  # round_to does not apply to heads: a head is head_dim channels
    assert student(torch.randn(2, *SHAPE)).shape == (2, 10)
    predicted = cost_model.predict(policy.keep_ratios, round_to=policy.round_to).macs
    assert predicted == count_macs(student, SHAPE) == flop_counter_macs(student, SHAPE) < count_macs(teacher, SHAPE)


def test_the_kept_heads_are_the_largest_and_the_outputs_follow_from_them():
    teacher = small_vit()
    attn = teacher.blocks[0].attn
    with torch.no_grad():  # head 2 made the weakest
        attn.qkv.weight[[p * 32 + 16 + d for p in range(3) for d in range(8)]] *= 1e-3
    student = apply_policy(teacher, CompressionPolicy(keep_ratios={"blocks.0.attn.qkv": 0.75}), SHAPE)
    kept = student.blocks[0].attn.qkv.weight
    assert torch.equal(kept[:16], attn.qkv.weight[:16]) and torch.equal(kept[16:24], attn.qkv.weight[24:32])
    assert student.amc_structure["removed_heads"] == {"blocks.0.attn": [2]}


def test_attention_matmuls_position_embedding_and_class_token_are_costed():
    teacher = small_vit()
    cost_model = CostModel(teacher, SHAPE)
    assert attention_macs(teacher, SHAPE) == {f"blocks.{i}.attn": 2 * 17 * 17 * 32 for i in range(2)}
    free = {t.name: (t.channels, t.params_per_channel) for t in cost_model.tensors if t.dim is not None}
    assert free == {"cls_token": (32, 1), "pos_embed": (32, 17)}
    policy = CompressionPolicy(keep_ratios={"patch_embed": 0.5})
    student = apply_policy(teacher, policy, SHAPE)
    assert student.pos_embed.shape == (1, 17, 16) and student.cls_token.shape == (1, 1, 16)
    predicted = cost_model.predict(policy.keep_ratios)
    assert predicted.params == sum(p.numel() for p in student.parameters())


def test_a_vit_student_saves_and_reloads_with_its_heads_removed(tmp_path):
    teacher = small_vit()
    blob = {"arch": model_spec("vit_tiny", 10, **SMALL), "dataset": {"input_shape": list(SHAPE)}}
    policy = CompressionPolicy(keep_ratios={"blocks.1.attn.qkv": 0.5, "blocks.0.mlp.0": 0.5, "patch_embed": 0.75})
    student = apply_policy(teacher, policy, SHAPE)
    save_student(tmp_path / "student.pt", student, blob, policy)
    loaded = load_student(tmp_path / "student.pt")
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))
    assert loaded.blocks[1].attn.num_heads == 2


def test_a_pruned_vit_exports_to_onnx_with_the_same_outputs(tmp_path):
    pytest.importorskip("onnx")
    from amc.compress.export import export_onnx

    teacher = small_vit()
    student = apply_policy(teacher, CompressionPolicy(keep_ratios={"blocks.0.attn.qkv": 0.5, "patch_embed": 0.5}),
                           SHAPE)  # fmt: skip
    assert export_onnx(student, SHAPE, tmp_path / "student.onnx") < 1e-4


def test_attention_whose_forward_fixes_its_width_is_kept_whole_and_says_why():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"attention blocks\.0\.attn: heads kept whole, its forward fails"):
        cost_model = CostModel(ZOO["FixedWidthViT"]().eval(), SHAPE)
    assert {u.kind for u in cost_model.units} == {"linear"}  # the MLPs; the embedding is tied to the heads


def test_a_head_count_that_does_not_divide_the_width_is_refused_in_one_line():
    with pytest.raises(AmcError, match=r"^vit: 5 heads do not divide the width 32; choose a head count"):
        create_model("vit_tiny", num_classes=10, **(SMALL | {"num_heads": 5}))


@pytest.mark.parametrize("mode", ["channel", "removal+channel"])
def test_a_vit_search_meets_its_budget_and_its_policy_reapplies_bit_for_bit(mode, tmp_path, capsys):
    import json
    from pathlib import Path

    from agents.cli import main

    teacher = tmp_path / "teacher.pt"
    model = f"{Path(__file__).parent / 'topologies.py'}:TinyViT"
    assert main(["train-teacher", "--model", model, "--dataset", "synthetic", "--epochs", "0", "--out",
                 str(teacher)]) == 0  # fmt: skip
    argv = ["search", "--set", f"teacher={teacher}", "--set", f"out_dir={tmp_path}", "--set", "budget=flops=0.5",
            "--set", f"mode={mode}", "--set", "episodes=3", "--set", "warmup_episodes=2",
            "--set", "recalibrate_batches=1", "--set", "eval_samples=32", "--set", "report_samples=32",
            "--set", "report_latency_repeats=2", "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["flops_ratio"] <= 0.5
    run_dir = Path(results["run_dir"])
    policy = CompressionPolicy.load(run_dir / "policy.json")
    assert any(name.endswith("attn.qkv") for name in policy.keep_ratios)
    assert main(["apply", "--teacher", str(teacher), "--policy", str(run_dir / "policy.json"), "--out",
                 str(tmp_path / "again.pt")]) == 0  # fmt: skip
    original = torch.load(run_dir / "student.pt", weights_only=True)["state_dict"]
    again = torch.load(tmp_path / "again.pt", weights_only=True)["state_dict"]
    assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)
    if mode != "channel":
        return  # the rest of the chain once is enough
    assert main(["finetune", "--student", str(tmp_path / "again.pt"), "--teacher", str(teacher), "--epochs", "1",
                 "--batch-size", "16", "--out", str(tmp_path / "ft.pt")]) == 0  # fmt: skip
    assert main(["export", str(tmp_path / "ft.pt"), "--format", "onnx"]) == 0
    assert main(["policy", "predict", "--agent", str(run_dir / "agent.pt"), "--teacher", str(teacher), "--budget",
                 "flops=0.4", "--out", str(tmp_path / "predicted.json")]) == 0  # fmt: skip
    capsys.readouterr()
    assert CompressionPolicy.load(tmp_path / "predicted.json").metadata["achieved"]["flops"] <= 0.4 + 1e-9


@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_computes_what_multihead_attention_does(batch_first):
    from amc.attention import SelfAttention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    swapped = SelfAttention.from_multihead(mha).eval()
    x = torch.randn(2, 5, 32) if batch_first else torch.randn(5, 2, 32)
    mask = torch.rand(5, 5) > 0.7
    mask.fill_diagonal_(False)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[0, -1] = True
    for options in ({}, {"attn_mask": mask}, {"key_padding_mask": padding}, {"average_attn_weights": False},
                    {"need_weights": False}):  # fmt: skip
        expected, expected_weights = mha(x, x, x, **options)
        out, weights = swapped(x, x, x, **options)
        torch.testing.assert_close(out, expected)
        assert (weights is None) == (expected_weights is None)
        if weights is not None:
            torch.testing.assert_close(weights, expected_weights)


def test_multihead_attention_in_a_user_model_is_swapped_and_pruned_by_heads():
    from pathlib import Path

    model = create_model(f"{Path(__file__).parent / 'topologies.py'}:MultiheadViT", num_classes=10).eval()
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    cost_model = CostModel(model, SHAPE)
    assert [u.kind for u in cost_model.units].count("heads") == 2
    policy = CompressionPolicy(keep_ratios={u.name: 0.5 for u in cost_model.units})
    student = apply_policy(model, policy, SHAPE)
    cost_model.check_student(student, policy)
    assert student.blocks[0].attn.num_heads == 2 and student.pos_embed.shape == (16, 1, 16)
    predicted = cost_model.predict(policy.keep_ratios).macs
    assert predicted == count_macs(student, SHAPE) == flop_counter_macs(student, SHAPE)


def test_torchvision_vit_keeps_its_embedding_whole_and_says_why():
    from pathlib import Path

    model = create_model(f"{Path(__file__).parent / 'topologies.py'}:TorchvisionViT", num_classes=10).eval()
    with pytest.warns(UserWarning, match=r"unit conv_proj: kept whole, the model's forward fails once it is cut"):
        cost_model = CostModel(model, SHAPE)
    assert "conv_proj" not in [u.name for u in cost_model.units]
    assert {u.kind for u in cost_model.units} == {"heads", "linear"}


def test_an_unfollowed_multihead_attention_is_refused_in_one_line():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 32), torch.nn.Unflatten(1, (1, 32)))
    model.append(torch.nn.MultiheadAttention(32, 4, kdim=16, vdim=16))
    with pytest.raises(AmcError, match=r"^attention 3: an nn.MultiheadAttention with separate key/value widths"):
        CostModel(model, SHAPE)


def test_a_runtime_latency_table_times_attention_as_a_group_of_its_own(tmp_path):
    pytest.importorskip("onnxruntime")
    from amc.cost.latency import load_latency_table
    from amc.cost.runtime_latency import build_runtime_table
    from amc.deploy.runtimes import Target

    teacher = small_vit()
    table = build_runtime_table(teacher, SHAPE, Target("onnxruntime", "fp32", batch=4), students=10, check=4,
                                rounds=2, round_to=1)  # fmt: skip
    qkv = table.layers["blocks.0.attn.qkv"]
    assert qkv.attention_macs == 2 * 17 * 17 * 32 and qkv.attention_group in table.groups
    table.save(tmp_path / "lut.json")
    loaded = load_latency_table(tmp_path / "lut.json", "onnxruntime", "fp32")
    full = {name: spec.channels for name, spec in loaded.layers.items()}
    assert loaded.predict(full) == pytest.approx(table.predict(full))
    parts = loaded.layer_ms(full)
    assert set(parts) == set(full) and all(ms >= 0 for ms in parts.values())


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_pruned_vit_deploys_in_each_runtime_in_fp32_and_int8(runtime, tmp_path):
    pytest.importorskip(runtime)
    import numpy as np

    from amc.deploy.deployment import deploy
    from amc.deploy.runtimes import Target

    student = apply_policy(small_vit(), CompressionPolicy(keep_ratios={"blocks.0.attn.qkv": 0.5, "patch_embed": 0.5}),
                           SHAPE).eval()  # fmt: skip
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        expected = student(x).numpy()
    fp32 = deploy(student, SHAPE, Target(runtime, "fp32", 4, 1), tmp_path, name="fp32")
    np.testing.assert_allclose(fp32.run(x.numpy()), expected, atol=1e-4)
    calibration = np.random.default_rng(0).standard_normal((16, *SHAPE)).astype(np.float32)
    int8 = deploy(student, SHAPE, Target(runtime, "int8", 4, 1), tmp_path, name="int8", calibration=calibration)
    assert int8.run(x.numpy()).shape == (4, 10)


def test_a_timm_vit_is_told_its_image_size_and_pruned_by_heads_exactly():
    pytest.importorskip("timm")
    from amc.models import input_kwargs

    shape = (3, 32, 32)
    torch.manual_seed(0)
    model = create_model("timm:vit_tiny_patch16_224", num_classes=10,
                         **input_kwargs("timm:vit_tiny_patch16_224", shape)).eval()  # fmt: skip
    assert tuple(model.patch_embed.img_size) == (32, 32)
    cost_model = CostModel(model, shape)
    policy = CompressionPolicy(keep_ratios={u.name: 0.5 for u in cost_model.units})
    student = apply_policy(model, policy, shape)
    cost_model.check_student(student, policy)
    assert student.blocks[0].attn.num_heads == 2 and student.blocks[0].attn.attn_dim == 128
    assert cost_model.predict(policy.keep_ratios).macs == count_macs(student, shape)
    cnn = create_model("timm:resnet18", num_classes=10, **input_kwargs("timm:resnet18", shape)).eval()
    assert cnn(torch.randn(1, *shape)).shape == (1, 10)  # a model without an image size is built without one


@pytest.mark.parametrize("importance", ["l1", "taylor"])
@pytest.mark.parametrize("model", ["vit", "swin"])
def test_global_pruning_ranks_whole_heads_and_meets_the_budget(importance, model):
    from pathlib import Path

    from amc.cost.budget import Budget
    from amc.data import load_dataset
    from amc.evaluate.baselines import global_pruning

    torch.manual_seed(0)
    data = load_dataset("synthetic", seed=0) if importance == "taylor" else None
    classes = 4 if data is not None else 10  # synthetic data has 4 classes
    if model == "vit":
        teacher = create_model("vit_tiny", num_classes=classes, **SMALL).eval()
    else:  # its heads sit inside a module torch-pruning takes whole
        teacher = create_model(f"{Path(__file__).parent / 'topologies.py'}:TorchvisionSwin", num_classes=classes)
    cost_model = CostModel(teacher.eval(), SHAPE)
    policy = global_pruning(teacher, SHAPE, cost_model, Budget(flops=0.5), importance=importance, data=data)
    heads = [u for u in cost_model.units if u.kind == "heads"]
    assert all(policy.keep_ratios[u.name] * u.channels == round(policy.keep_ratios[u.name] * u.channels) for u in heads)
    student = apply_policy(teacher, policy, SHAPE)
    assert count_macs(student, SHAPE) <= 0.5 * count_macs(teacher, SHAPE)


def test_the_envs_observation_gives_head_units_their_heads_and_tokens_and_leaves_convolutions_alone():
    from amc.data import load_synthetic
    from envs.compression import OBSERVATION_FEATURES, CompressionEnv

    data = load_synthetic(image_size=16)
    env = CompressionEnv(small_vit(), data, {"flops": 0.5}, evaluation=EvaluationSettings(eval_samples=8),
                         embedding=True)  # fmt: skip
    steps = {s.name: s for s in env.steps}
    tokens = 1 + (16 // 4) ** 2  # the class token and 4 x 4 patches
    heads, mlp = steps["blocks.0.attn.qkv"], steps["blocks.0.mlp.0"]
    assert (heads.type_code, heads.stride, heads.kernel, heads.out_channels) == (0.75, 4, tokens, 32)
    assert (mlp.type_code, mlp.stride, mlp.kernel, mlp.out_channels) == (0.0, 1, tokens, 64)
    assert steps["patch_embed"].kernel == 4 and steps["patch_embed"].stride == 4  # a convolution, as before
    observation, _ = env.reset()
    assert observation.shape == (len(OBSERVATION_FEATURES),)  # the same features: saved agents still fit


@pytest.mark.parametrize("size", [(14, 14), (10, 13), (7, 7)])
@pytest.mark.parametrize("shift", [[0, 0], [3, 3]])
def test_window_attention_computes_what_torchvisions_swin_attention_does(size, shift):
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    from amc.window_attention import WindowAttention

    torch.manual_seed(0)
    theirs = ShiftedWindowAttention(32, [7, 7], shift, num_heads=4).eval()
    ours = WindowAttention(ShiftedWindowAttention(32, [7, 7], shift, num_heads=4)).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, *size, 32)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_a_swin_loses_heads_stage_widths_and_mlp_widths_exactly(tmp_path):
    from pathlib import Path

    pytest.importorskip("onnx")
    from amc.compress.export import export_onnx

    torch.manual_seed(0)
    model = create_model(f"{Path(__file__).parent / 'topologies.py'}:TorchvisionSwin", num_classes=10).eval()
    cost_model = CostModel(model, SHAPE)
    kinds = [u.kind for u in cost_model.units]
    assert kinds.count("heads") == 4 and "features.0.0" in cost_model.by_name  # the first stage's width too
    policy = CompressionPolicy(keep_ratios={u.name: 0.5 for u in cost_model.units})
    student = apply_policy(model, policy, SHAPE)
    cost_model.check_student(student, policy)
    attention = student.features[3][0].attn
    assert attention.num_heads == 2 and attention.relative_position_bias_table.shape == (25, 2)
    assert student.features[2].reduction.in_features == 4 * 8  # patch merging: each kept channel four times
    predicted = cost_model.predict(policy.keep_ratios)
    assert predicted.macs == count_macs(student, SHAPE) == flop_counter_macs(student, SHAPE)
    assert predicted.params == sum(p.numel() for p in student.parameters())
    assert export_onnx(student, SHAPE, tmp_path / "student.onnx") < 1e-4


def test_swin_v2_attention_is_refused_in_one_line():
    from functools import partial

    import torchvision
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

    model = torchvision.models.SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2], num_heads=[2],
                                               window_size=[4, 4], block=SwinTransformerBlockV2,
                                               downsample_layer=partial(PatchMergingV2)).eval()  # fmt: skip
    with pytest.raises(AmcError, match=r"^attention features\.1\.0\.attn \(ShiftedWindowAttentionV2\): the cost "):
        CostModel(model, SHAPE)


def test_the_embedding_width_is_searched_only_where_the_user_allows_it():
    from amc.data import load_synthetic
    from envs.compression import CompressionEnv

    teacher, data = small_vit(), load_synthetic(num_classes=10, image_size=16, per_class=4)
    settings = EvaluationSettings(eval_samples=8, recalibrate_batches=0)
    names = {}
    for embedding in (False, True):
        env = CompressionEnv(teacher, data, {"flops": 0.6}, evaluation=settings, embedding=embedding)
        names[embedding] = [u.name for u in env.cost_model.units]
        env.reset()
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step([-1.0])
        assert ("patch_embed" in CompressionPolicy.from_dict(info["policy"]).keep_ratios) == embedding
    assert "patch_embed" in names[True] and "patch_embed" not in names[False]
    assert set(names[True]) - set(names[False]) == {"patch_embed"}
    cost_model = CostModel(teacher, SHAPE, embedding=False)  # still exact: the embedding kept whole
    policy = CompressionPolicy(keep_ratios={u.name: 0.5 for u in cost_model.units})
    student = apply_policy(teacher, policy, SHAPE)
    assert cost_model.predict(policy.keep_ratios).macs == count_macs(student, SHAPE)
    assert student.patch_embed.out_channels == teacher.patch_embed.out_channels


def test_a_cnns_policy_on_a_vit_is_refused_in_one_line(tmp_path, capsys):
    from agents.cli import main

    teacher = tmp_path / "vit.pt"
    assert main(["train-teacher", "--model", "vit_tiny", "--dataset", "synthetic", "--epochs", "0", "--out",
                 str(teacher)]) == 0  # fmt: skip
    policy = tmp_path / "policy.json"
    CompressionPolicy(keep_ratios={"conv1": 0.5}, architecture="resnet8").save(policy)
    capsys.readouterr()
    argv = ["apply", "--teacher", str(teacher), "--policy", str(policy), "--out", str(tmp_path / "s.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "policy is for resnet8, the teacher is vit_tiny" in err
    assert not (tmp_path / "s.pt").exists()
