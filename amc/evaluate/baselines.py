"""Baseline policies, each meeting a budget: one uniform keep ratio, random per-unit ratios, or the per-unit
ratios of global pruning by a Torch-Pruning importance."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from amc.compress.policy import CompressionPolicy
from amc.compress.pruning import Layer, build_graph, execution_order, index_mappings_unchanged
from amc.cost.budget import Budget
from amc.cost.latency import require_latency_table
from amc.cost.predicted import CostModel
from amc.data import DataSplits
from amc.errors import AmcError


def _ratios_for(cost_model: CostModel, keep_ratios: dict[str, float], round_to: int) -> dict[str, float]:
    return cost_model.policy_ratios(CompressionPolicy(keep_ratios=keep_ratios, round_to=round_to))


def _largest_meeting(budget: Budget, make_ratios, cost_model: CostModel, round_to: int, low: float, high: float):
    """Bisection for the largest scalar whose keep ratios meet the budget (cost is monotone in it)."""
    if not budget.met_by(_ratios_for(cost_model, make_ratios(low), round_to)):
        raise AmcError(f"budget {budget} cannot be met even at the smallest keep ratios; relax the budget")
    for _ in range(40):
        mid = 0.5 * (low + high)
        if budget.met_by(_ratios_for(cost_model, make_ratios(mid), round_to)):
            low = mid
        else:
            high = mid
    return make_ratios(low)


def uniform(cost_model: CostModel, budget: Budget, *, round_to: int = 1, min_keep: float = 0.05) -> CompressionPolicy:
    """One keep ratio for every unit, the largest that meets the budget (latency with the cost model's table)."""
    require_latency_table(budget, cost_model.latency_table)
    names = [u.name for u in cost_model.units]
    keep = _largest_meeting(budget, lambda r: {n: r for n in names}, cost_model, round_to, min_keep, 1.0)
    return CompressionPolicy(keep_ratios=keep, round_to=round_to, metadata={"method": "uniform"})


def random_policy(
    cost_model: CostModel,
    budget: Budget,
    rng: np.random.Generator,
    *,
    round_to: int = 1,
    min_keep: float = 0.2,
    max_keep: float = 1.0,
) -> CompressionPolicy:
    """Random per-unit keep ratios in [min_keep, max_keep], scaled down together until the budget is met."""
    names = [u.name for u in cost_model.units]
    draws = rng.uniform(min_keep, max_keep, size=len(names))

    def scaled(factor: float) -> dict[str, float]:
        return {n: float(np.clip(d * factor, min_keep, max_keep)) for n, d in zip(names, draws, strict=True)}

    keep = _largest_meeting(budget, scaled, cost_model, round_to, 0.0, max_keep / draws.min())
    return CompressionPolicy(keep_ratios=keep, round_to=round_to, metadata={"method": "random"})


GLOBAL_IMPORTANCES = ("l1", "l1-normalized", "lamp", "taylor")
"""`l1`: raw group L1 magnitude; `l1-normalized`: divided by its group's mean; `lamp`: LAMP scores;
`taylor`: first-order Taylor (|weight x gradient|), from the cross-entropy on a few training batches."""


def check_global_settings(importance: str, max_pruning_ratio: float) -> None:
    if importance not in GLOBAL_IMPORTANCES:
        raise AmcError(f"unknown importance {importance!r}; choose one of {', '.join(GLOBAL_IMPORTANCES)}")
    if not 0.0 < max_pruning_ratio < 1.0:
        raise AmcError(f"max_pruning_ratio is {max_pruning_ratio}; it must lie in (0, 1)")


def _tp_importance(name: str):
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    if name == "l1-normalized":
        return tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2, group_reduction="mean")
    if name == "taylor":
        return tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None)
    raise AmcError(f"unknown importance {name!r}; choose one of {', '.join(GLOBAL_IMPORTANCES)}")


def _with_gradients(teacher: nn.Module, data: DataSplits | None, batches: int) -> nn.Module:
    """A copy of the teacher holding the cross-entropy gradients of `batches` training batches (for Taylor)."""
    if data is None:
        raise AmcError("the taylor importance needs training data; pass the data set (or use l1, lamp)")
    model = copy.deepcopy(teacher).train()
    device = next(model.parameters()).device
    for x, y in itertools.islice(data.batches("train", 128, generator=torch.Generator().manual_seed(0)), batches):
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
    return model.eval()


def global_pruning(
    teacher: nn.Module,
    input_shape: tuple[int, ...],
    cost_model: CostModel,
    budget: Budget,
    *,
    importance: str = "l1",
    max_pruning_ratio: float = 0.8,
    data: DataSplits | None = None,
    gradient_batches: int = 4,
    round_to: int = 1,
) -> CompressionPolicy:
    """Global pruning: every channel of every coupled group (Torch-Pruning's dependency graph) scored by
    Torch-Pruning's `importance` and ranked against all others; the lowest-ranked go first, but no unit loses
    more than `max_pruning_ratio` of its channels. The fewest channels removed that meet the budget
    (bisection over the ranking, exact because the cost only falls as more go) give the keep ratios.
    Which channels a unit keeps is then amc's choice (L1), as for every policy.

    The ranking is done here, not by TP's `MetaPruner(global_pruning=True)`: in one step that pruner ignores
    `max_pruning_ratio` and skips any group it would empty, so its cuts jump about as the ratio grows.
    Raw magnitudes are not comparable across layers, so `l1` piles its cuts on a few layers, which the cap
    then stops; the normalized importances (`l1-normalized`, `lamp`) spread them."""
    require_latency_table(budget, cost_model.latency_table)
    check_global_settings(importance, max_pruning_ratio)
    scorer = _tp_importance(importance)
    source = _with_gradients(teacher, data, gradient_batches) if importance == "taylor" else teacher.eval()
    scores = _unit_scores(source, input_shape, cost_model, scorer)
    floor = {name: max(1, math.ceil((1.0 - max_pruning_ratio) * len(s) - 1e-9)) for name, s in scores.items()}
    ranked = torch.cat([s for s in scores.values()]).sort().values

    def keep_ratios(removed: int) -> dict[str, float]:
        """Keep ratios when the `removed` lowest-scored channels overall go, each unit held at its floor."""
        if removed == 0:
            return {name: 1.0 for name in scores}
        threshold = ranked[removed - 1]
        return {name: max(int((s > threshold).sum()), floor[name]) / len(s) for name, s in scores.items()}

    def meets(removed: int) -> bool:
        return budget.met_by(_ratios_for(cost_model, keep_ratios(removed), round_to))

    low, high = 0, len(ranked)
    if not meets(high):
        raise AmcError(f"global pruning cannot meet {budget} with at most {max_pruning_ratio:.0%} of each layer "
                       "removed; raise max_pruning_ratio or relax the budget")  # fmt: skip
    while high - low > 1:  # meets(high) holds throughout
        mid = (low + high) // 2
        low, high = (low, mid) if meets(mid) else (mid, high)
    metadata = {"method": f"global-{importance}", "global_pruning_ratio": high / len(ranked),
                "max_pruning_ratio": max_pruning_ratio}  # fmt: skip
    return CompressionPolicy(keep_ratios=keep_ratios(high), round_to=round_to, metadata=metadata)


def _unit_scores(source: nn.Module, input_shape, cost_model: CostModel, scorer) -> dict[str, torch.Tensor]:
    """Each pruning unit's per-channel importance (indexed by its root's output channels), from TP's groups."""
    graph = build_graph(source, input_shape)
    names = {module: name for name, module in source.named_modules()}
    classifier = source.get_submodule(execution_order(source, input_shape)[-1])  # its outputs are the classes
    unit_of_root = {unit.root: unit.name for unit in cost_model.units}
    scores = {}
    with index_mappings_unchanged(graph):
        for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=Layer):
            name = unit_of_root.get(names.get(group[0].dep.target.module))
            if name is not None:
                score = scorer(group)
                if score is not None:
                    scores[name] = score.detach().float().cpu()
    for unit in cost_model.units:  # heads inside a module torch-pruning takes whole (Swin's): their qkv alone
        if unit.kind == "heads" and unit.name not in scores:
            score = scorer(_lone_layer_group(source.get_submodule(unit.root)))
            if score is not None:
                scores[unit.name] = score.detach().float().cpu()
    missing = [unit.name for unit in cost_model.units if unit.name not in scores]
    if missing:
        raise AmcError(f"the importance gives no scores for unit {missing[0]}; use another --importance")
    for unit in cost_model.units:
        if unit.kind == "heads":  # torch-pruning scores the qkv rows; a head is ranked by its rows' mean
            heads = torch.tensor(list(unit.out_index[unit.root].values()))
            rows = scores[unit.name]
            scores[unit.name] = torch.stack([rows[heads == h].mean() for h in range(unit.channels)])
    return {unit.name: scores[unit.name] for unit in cost_model.units}  # forward order, as every policy


def _lone_layer_group(layer: nn.Linear):
    """torch-pruning's group of one linear layer's output rows, traced on the layer alone (its weights, and their
    gradients for Taylor, are the model's own)."""
    graph = build_graph(layer, (layer.in_features,))
    return graph.get_pruning_group(layer, tp.prune_linear_out_channels, list(range(layer.out_features)))
