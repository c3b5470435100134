"""Hand-crafted policies: one uniform keep ratio, or random per-unit ratios, each meeting a budget."""

from __future__ import annotations

import numpy as np

from amc.budget import Budget
from amc.cost_model import CostModel
from amc.errors import AmcError
from amc.policy import CompressionPolicy


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
