"""Baseline policies, each meeting a budget: one uniform keep ratio, random per-unit ratios, or the per-unit
ratios that Torch-Pruning's global pruning arrives at."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from amc.budget import Budget
from amc.data import DataSplits
from amc.errors import AmcError
from amc.policy import CompressionPolicy
from amc.predicted_cost import CostModel
from amc.pruning import execution_order


def _ratios_for(cost_model: CostModel, keep_ratios: dict[str, float], round_to: int) -> dict[str, float]:
    return cost_model.ratios(cost_model.predict(keep_ratios, round_to=round_to))


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
    """One keep ratio for every unit, the largest that meets the budget (flops, params or size)."""
    if budget.latency is not None:
        raise AmcError("uniform() solves flops, params and size budgets; predict latency with a LatencyTable")
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


GLOBAL_GRID = 32
"""Global pruning ratios tried, evenly spaced up to `max_pruning_ratio`, before the bisection."""


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
    """Torch-Pruning's global pruning (`MetaPruner(global_pruning=True)`): every channel of every coupled group
    ranked against all others by `importance`, at most `max_pruning_ratio` of any layer removed. The
    smallest global pruning ratio whose per-unit channel counts meet the budget (grid, then bisection) gives the
    policy's keep ratios. Which channels a unit keeps is then amc's choice (L1), as for every policy.
    Raw magnitudes are not comparable across layers, so `l1` tends to strip some layers bare; the cap
    and the normalized importances (`l1-normalized`, `lamp`) counter that."""
    if budget.latency is not None:
        raise AmcError("global pruning solves flops, params and size budgets; predict latency with a LatencyTable")
    if not 0.0 < max_pruning_ratio < 1.0:
        raise AmcError(f"max_pruning_ratio is {max_pruning_ratio}; it must lie in (0, 1)")
    scorer = _tp_importance(importance)
    source = _with_gradients(teacher, data, gradient_batches) if importance == "taylor" else teacher.eval()
    example = torch.randn(1, *input_shape, device=next(teacher.parameters()).device)
    classifier = execution_order(teacher, input_shape)[-1]  # its outputs are the classes: never pruned

    def keep_ratios(ratio: float) -> dict[str, float]:
        model = copy.deepcopy(source)
        for copied, original in zip(model.parameters(), source.parameters(), strict=True):
            copied.grad = None if original.grad is None else original.grad.clone()
        pruner = tp.pruner.MetaPruner(model, example, importance=scorer, global_pruning=True, pruning_ratio=ratio,
                                      max_pruning_ratio=max_pruning_ratio,
                                      ignored_layers=[model.get_submodule(classifier)])  # fmt: skip
        pruner.step()
        kept = {}
        for unit in cost_model.units:
            root = model.get_submodule(unit.root)
            kept[unit.name] = (root.out_channels if isinstance(root, nn.Conv2d) else root.out_features) / unit.channels
        return kept

    def meets(keep: dict[str, float]) -> bool:
        return budget.met_by(_ratios_for(cost_model, keep, round_to))

    # TP's per-unit channel counts need not shrink monotonically as the global ratio grows (raw magnitudes
    # can move the threshold across groups), so scan a grid for the first ratio that meets the budget, then
    # bisect between it and the grid point before.
    grid = [max_pruning_ratio * k / GLOBAL_GRID for k in range(1, GLOBAL_GRID + 1)]
    found = next(((r, keep) for r in grid if meets(keep := keep_ratios(r))), None)
    if found is None:
        raise AmcError(f"global pruning cannot meet {budget} with at most {max_pruning_ratio:.0%} of each layer "
                       "removed; raise max_pruning_ratio or relax the budget")  # fmt: skip
    high, best = found
    low = high - max_pruning_ratio / GLOBAL_GRID
    for _ in range(8):
        mid = 0.5 * (low + high)
        keep = keep_ratios(mid)
        if meets(keep):
            high, best = mid, keep
        else:
            low = mid
    metadata = {"method": f"global-{importance}", "global_pruning_ratio": high, "max_pruning_ratio": max_pruning_ratio}
    return CompressionPolicy(keep_ratios=best, round_to=round_to, metadata=metadata)
