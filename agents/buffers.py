"""AMC's credit assignment for SB3's per-step replay buffer.

AMC stores every transition of an episode with the episode's *final* reward, minus a moving-average
baseline (Block-QNN style). SB3 stores the reward each step returned, and the env returns zero until
the last step. This buffer rewrites the finished episode's rewards when its last transition arrives,
before SB3 trains on them. The baseline is the moving average of earlier final rewards:
`b <- b + decay * (R - b)`, initialised to the first episode's reward.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer


class EpisodeRewardReplayBuffer(ReplayBuffer):
    def __init__(self, *args, baseline_decay: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        if self.n_envs != 1:
            raise ValueError("EpisodeRewardReplayBuffer supports a single environment")
        self.baseline_decay = baseline_decay
        self.baseline: float | None = None
        self.episode_start = 0
        self.episode_length = 0

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        super().add(obs, next_obs, action, reward, done, infos)
        self.episode_length += 1
        if not bool(np.asarray(done).reshape(-1)[0]):
            return
        final = float(np.asarray(reward).reshape(-1)[0])
        if self.baseline is None:
            self.baseline = final
        credited = final - self.baseline
        self.baseline += self.baseline_decay * (final - self.baseline)
        positions = (self.episode_start + np.arange(self.episode_length)) % self.buffer_size
        self.rewards[positions, 0] = credited
        self.start_new_episode()

    def start_new_episode(self) -> None:
        """Forget a partial episode (e.g. one cut short by Ctrl-C) so it is not credited later."""
        self.episode_start, self.episode_length = self.pos, 0
