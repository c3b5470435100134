"""Search rewards, looked up by name in a registry (never `eval`).

Each reward maps an episode's outcome to a float. `accuracy` and `teacher_accuracy` are fractions on the
same validation subset; `ratios` holds the student's cost ratios against the teacher; `flops` is absolute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from amc.errors import AmcError


@dataclass(frozen=True)
class Outcome:
    accuracy: float
    teacher_accuracy: float
    ratios: dict[str, float]
    flops: float


RewardFn = Callable[[Outcome], float]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    def decorator(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return decorator


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        raise AmcError(f"unknown reward {name!r}; choose one of {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


@register_reward("acc")
def accuracy_reward(o: Outcome) -> float:
    """AMC's default under a hard budget: the validation accuracy."""
    return o.accuracy


@register_reward("err_log_flops")
def error_log_flops_reward(o: Outcome) -> float:
    """AMC's R_FLOPs = -error * log(FLOPs): trades accuracy against absolute FLOPs."""
    return -(1.0 - o.accuracy) * math.log(max(o.flops, 1.0))


@register_reward("n2n")
def n2n_reward(o: Outcome) -> float:
    """N2N's R_a * R_c with R_a = acc / teacher acc, C = 1 - params ratio and R_c = C (2 - C)."""
    compression = 1.0 - o.ratios["params"]
    return (o.accuracy / max(o.teacher_accuracy, 1e-8)) * compression * (2.0 - compression)


@register_reward("haq")
def haq_reward(o: Outcome) -> float:
    """HAQ's accuracy delta against the teacher (the budget is enforced by the action wall)."""
    return o.accuracy - o.teacher_accuracy
