"""The one timing protocol behind every deployed latency: fixed threads (the runner's), warm-up, the models timed
in alternating rounds (the order reversed every other round, so drift of a shared machine hits all alike), and
the median per image with its interquartile spread. A speed-up is only ever a ratio of two medians from one call.

`time.perf_counter` is the clock (what `timeit` and `torch.utils.benchmark` use on the CPU); the runners here
are plain callables over NumPy arrays, which neither of those drives in alternation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

ROUNDS = {1: (20, 20), 64: (10, 4)}
"""Default (rounds, runs per round) by batch size: 400 runs at batch 1, 40 at batch 64 (per model)."""


@dataclass(frozen=True)
class Timing:
    """Milliseconds per image: the median and the interquartile range of `runs` timed batches."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    runs: int

    @property
    def spread(self) -> float:
        """Interquartile range over the median."""
        return (self.q3_ms - self.q1_ms) / self.median_ms


def default_rounds(batch: int) -> tuple[int, int]:
    return ROUNDS.get(batch, ROUNDS[1] if batch < 8 else ROUNDS[64])


def time_alternated(
    runners: Mapping[str, Callable[[np.ndarray], object]],
    inputs: np.ndarray,
    *,
    rounds: int | None = None,
    runs_per_round: int | None = None,
    warmup: int = 20,
) -> dict[str, Timing]:
    """Time every runner on `inputs` (one batch): `warmup` untimed runs each, then `rounds` rounds in which each
    runner runs `runs_per_round` times, in an order reversed every other round."""
    default = default_rounds(len(inputs))
    rounds, runs_per_round = rounds or default[0], runs_per_round or default[1]
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name](inputs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            run, record = runners[name], times[name]
            for _ in range(runs_per_round):
                start = time.perf_counter()
                run(inputs)
                record.append(time.perf_counter() - start)
    per_image = 1000.0 / len(inputs)
    result = {}
    for name, values in times.items():
        q1, median, q3 = np.percentile(values, [25, 50, 75]) * per_image
        result[name] = Timing(float(median), float(q1), float(q3), len(values))
    return result


def example_batch(input_shape, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)
