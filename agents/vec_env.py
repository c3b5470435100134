"""`BatchedEvaluationVecEnv`: several `CompressionEnv`s stepped together, their students evaluated at once."""

from __future__ import annotations

import time

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from amc.evaluate.evaluator import CachedEvaluator


class BatchedEvaluationVecEnv(DummyVecEnv):
    """SB3's `DummyVecEnv` over N `CompressionEnv`s that share one `CachedEvaluator`.

    The walks are cheap and run here, in turn. Every episode has the same length, so the N episodes end on
    the same step: before stepping, the students their last actions describe go to the evaluator together
    (one per worker), and each env's last step then finds its result in the shared cache. `seconds` is the
    time spent stepping, evaluations included; the rest of a search's time is the agent's.
    """

    def __init__(self, env_fns, evaluator: CachedEvaluator):
        super().__init__(env_fns)
        self.evaluator = evaluator
        self.seconds = 0.0

    def step_async(self, actions: np.ndarray) -> None:
        started = time.perf_counter()
        envs = [env.unwrapped for env in self.envs]
        finishing = [env.final_policy(a) for env, a in zip(envs, actions, strict=True) if env.at_last_step]
        if finishing:
            self.evaluator.evaluate_many(finishing)
        self.seconds += time.perf_counter() - started
        super().step_async(actions)

    def step_wait(self):
        started = time.perf_counter()
        try:
            return super().step_wait()
        finally:
            self.seconds += time.perf_counter() - started
