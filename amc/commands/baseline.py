"""`amc baseline`: a one-shot policy (uniform, global pruning by importance, random) under a
budget, without a search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amc.checkpoint import input_shape_of, load_checkpoint
from amc.commands.common import load_data_for
from amc.compress.policy import model_fingerprint
from amc.compress.student import model_from_checkpoint
from amc.config import data_dir_field, device_field, doc, teacher_field
from amc.cost.budget import Budget
from amc.cost.latency import load_latency_table, resolve_round_to
from amc.cost.predicted import CostModel
from amc.device import resolve_device
from amc.errors import AmcError
from amc.evaluate.baselines import global_pruning, random_policy, uniform
from amc.files import refuse_overwriting_inputs


@dataclass
class BaselineConfig:
    """Write a baseline policy that meets a budget: uniform, random, or Torch-Pruning's global pruning."""

    method: str = doc("uniform", "uniform, random or global", positional=True)
    teacher: str = teacher_field()
    budget: str | None = doc(None, "budget as ratios of the teacher: flops=0.5, size=0.1, latency=0.6 (with a table)")
    flops: float | None = doc(None, "earlier spelling of --budget flops=X")
    params: float | None = doc(None, "earlier spelling of --budget params=X")
    size: float | None = doc(None, "earlier spelling of --budget size=X")
    latency: float | None = doc(None, "earlier spelling of --budget latency=X")
    latency_table: str | None = doc(None, "latency table from `amc profile-latency` (for --latency)")
    runtime: str = doc("eager", "the runtime the latency table must be measured in: eager, onnxruntime or openvino")
    runtime_precision: str = doc("fp32", "the precision the latency table must be measured at: fp32 or int8")
    round_to: str = doc("auto", "round kept channels to a multiple of this; auto: the latency table's fastest, else 1")
    seed: int = doc(0, "seed of the random policy")
    embedding: bool = doc(False, "transformers: prune the embedding width (the residual stream) too")
    global_importance: str = doc("taylor", "global: channel importance, l1, l1-normalized, lamp or taylor (needs data)")
    max_pruning_ratio: float = doc(0.8, "global: the most of any one layer's channels that may be removed")
    data_dir: str | None = data_dir_field("global with taylor: data folder or .tar.gz (default: the teacher's)")
    out: str = doc("policy.json", "policy JSON to write")
    device: str = device_field()


def budget_of(cfg: BaselineConfig) -> Budget:
    """`--budget flops=0.5`, or the earlier `--flops 0.5` (and its kin); both at once may not disagree."""
    earlier = {k: v for k, v in {"flops": cfg.flops, "params": cfg.params, "size": cfg.size,
                                 "latency": cfg.latency}.items() if v is not None}  # fmt: skip
    given = dict(Budget.parse(cfg.budget).items()) if cfg.budget else {}
    clash = {k for k in earlier if k in given and given[k] != earlier[k]}
    if clash:
        raise AmcError(f"--budget says {cfg.budget} but --{sorted(clash)[0]} says otherwise; give the budget once")
    if not given and not earlier:
        raise AmcError("no budget given; pass --budget flops=0.5 (or params=, size=, latency= with a table)")
    return Budget(**{**earlier, **given})


def baseline_command(cfg: BaselineConfig) -> dict:
    refuse_overwriting_inputs(cfg.out, teacher=cfg.teacher)
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.teacher)
    teacher = model_from_checkpoint(blob).to(device)
    budget = budget_of(cfg)
    table = load_latency_table(cfg.latency_table, cfg.runtime, cfg.runtime_precision) if cfg.latency_table else None
    round_to = resolve_round_to(cfg.round_to, table)
    cost_model = CostModel(teacher, input_shape_of(blob), embedding=cfg.embedding)
    if table is not None:
        cost_model.with_latency(table)
    if cfg.method == "uniform":
        policy = uniform(cost_model, budget, round_to=round_to)
    elif cfg.method == "random":
        policy = random_policy(cost_model, budget, np.random.default_rng(cfg.seed), round_to=round_to)
    elif cfg.method == "global":
        data = (
            load_data_for(blob, None, cfg.data_dir, None, checkpoint=cfg.teacher)
            if cfg.global_importance == "taylor"
            else None
        )
        policy = global_pruning(teacher, input_shape_of(blob), cost_model, budget, importance=cfg.global_importance,
                                max_pruning_ratio=cfg.max_pruning_ratio, data=data, round_to=round_to)  # fmt: skip
    else:
        raise AmcError(f"unknown baseline {cfg.method!r}; use uniform, random or global")
    predicted = cost_model.policy_ratios(policy)
    policy.architecture = blob["arch"]["name"]
    policy.num_classes = blob["arch"]["num_classes"]
    policy.fingerprint = model_fingerprint(teacher)
    policy.metadata.update({"budget": dict(budget.items()), "predicted": predicted, "seed": cfg.seed})
    policy.save(cfg.out)
    return {"out": cfg.out, **{f"{k}_ratio": v for k, v in predicted.items()}}
