"""AMC's exploration noise as an SB3 `ActionNoise`."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.noise import ActionNoise, VectorizedActionNoise


class TruncatedNormalDecayNoise(ActionNoise):
    """Normal noise with scale `sigma`, truncated to +-2 sigma; sigma decays by `decay` after each episode
    once `warmup_episodes` have passed (AMC: sigma 0.5, decay 0.95). SB3 calls `reset()` at episode end."""

    def __init__(self, sigma: float = 0.5, decay: float = 0.95, warmup_episodes: int = 0, size: int = 1,
                 seed: int | None = None):  # fmt: skip
        super().__init__()
        self.initial_sigma, self.sigma, self.decay = sigma, sigma, decay
        self.warmup_episodes, self.size = warmup_episodes, size
        self.episodes = 0
        self._rng = np.random.default_rng(seed)

    def __call__(self) -> np.ndarray:
        draw = self._rng.standard_normal(self.size)
        while np.any(np.abs(draw) > 2.0):
            outside = np.abs(draw) > 2.0
            draw[outside] = self._rng.standard_normal(int(outside.sum()))
        return (draw * self.sigma).astype(np.float32)

    def reset(self) -> None:
        self.episodes += 1
        if self.episodes > self.warmup_episodes:
            self.sigma *= self.decay

    def state(self) -> dict:
        return {"sigma": self.sigma, "episodes": self.episodes, "rng": self._rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.sigma, self.episodes = state["sigma"], state["episodes"]
        self._rng.bit_generator.state = state["rng"]

    def __repr__(self) -> str:
        return f"TruncatedNormalDecayNoise(sigma={self.sigma:.4f}, decay={self.decay})"


def shared_schedule(noise: TruncatedNormalDecayNoise, n_envs: int) -> VectorizedActionNoise:
    """The same noise for `n_envs` envs: one RNG and one sigma schedule counted over all envs' episodes.
    (SB3's own wrapping deep-copies the noise, which would give every env the same draws and a schedule
    `n_envs` times slower.)"""
    state = noise.state()
    vectorized = VectorizedActionNoise(noise, n_envs)
    vectorized.noises = [noise] * n_envs
    noise.load_state(state)  # SB3's setter resets every noise it is given
    return vectorized
