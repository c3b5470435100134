"""Paired differences over seeds, with Student's t 95% intervals (the comparisons' measure of noise)."""

from __future__ import annotations

import statistics


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width (Student's t) of paired differences; the half-width is nan for one pair."""
    from scipy import stats

    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, float("nan")
    return mean, stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5


def paired(mine: dict[int, float], others: dict[int, float]) -> tuple[int, float, float] | None:
    """`mine` minus `others` over their shared seeds: (pairs, mean, 95% half-width), or None without a pair."""
    seeds = sorted(set(mine) & set(others))
    if not seeds:
        return None
    return len(seeds), *t_interval([mine[s] - others[s] for s in seeds])


def interval_text(mean: float, half: float) -> str:
    """'[low, high]' in signed points, or '–' for a single pair."""
    return "–" if half != half else f"[{mean - half:+.2f}, {mean + half:+.2f}]"
