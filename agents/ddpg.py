"""SB3 agents configured the way AMC trained its DDPG: configuration, not re-implementation."""

from __future__ import annotations

import numpy as np
from stable_baselines3 import DDPG, SAC, TD3

from agents.buffers import EpisodeRewardReplayBuffer
from agents.config import SearchConfig
from agents.noise import TruncatedNormalDecayNoise, shared_schedule


class SeparateCriticLearningRate:
    """SB3 gives actor and critic one learning rate; AMC uses 1e-4 for the actor and 1e-3 for the critic.
    `learning_rate` drives the actor (and SAC's entropy coefficient); this sets the critic's after SB3's
    own schedule update."""

    critic_learning_rate: float = 1e-3

    def _update_learning_rate(self, optimizers) -> None:
        super()._update_learning_rate(optimizers)
        for group in self.critic.optimizer.param_groups:
            group["lr"] = self.critic_learning_rate
        self.logger.record("train/critic_learning_rate", self.critic_learning_rate)


class StartFromActions:
    """Plays `start_actions` (one per step) in env 0's first episode instead of sampling one: a search that
    starts from a known policy (`init_policy`, e.g. global pruning's). Its transitions reach the replay buffer,
    and its reward the best-so-far, like any episode's."""

    start_actions: list[float]

    def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
        action, buffer_action = super()._sample_action(learning_starts, action_noise, n_envs)
        if self.start_actions:
            chosen = np.asarray([self.start_actions.pop(0)], dtype=action.dtype)
            action[0], buffer_action[0] = chosen, self.policy.scale_action(chosen)
        return action, buffer_action


class AmcDDPG(StartFromActions, SeparateCriticLearningRate, DDPG):
    pass


class AmcTD3(StartFromActions, SeparateCriticLearningRate, TD3):
    pass


class AmcSAC(StartFromActions, SeparateCriticLearningRate, SAC):
    pass


ALGORITHMS = {"ddpg": AmcDDPG, "td3": AmcTD3, "sac": AmcSAC}


def make_agent(env, steps_per_episode: int, cfg: SearchConfig):
    """An SB3 agent with AMC's hyper-parameters: 300-300 nets, lr 1e-4/1e-3, tau 0.01, gamma 1, batch 64,
    uniformly random warm-up episodes, decaying truncated-normal noise, and final-reward credit. `cfg.agent.algorithm`
    names the algorithm; the replay buffer holds `cfg.agent.episodes` episodes (the whole search).

    Credit differs from AMC's code in one place, on evidence: the baseline is subtracted when an episode is
    stored, not when a batch is sampled (`cfg.agent.credit_baseline`; agents/buffers.py has the figures).

    With a VecEnv of N envs (N episodes side by side) the agent trains after every round of N episodes,
    as many gradient steps as the N episodes had steps, and the noise schedule counts every env's episodes."""
    if cfg.agent.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {cfg.agent.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    cls = ALGORITHMS[cfg.agent.algorithm]
    n_envs = getattr(env, "num_envs", 1)
    kwargs = {}
    if cfg.agent.algorithm != "sac":
        noise = TruncatedNormalDecayNoise(
            cfg.agent.noise_sigma, cfg.agent.noise_decay, cfg.agent.warmup_episodes, seed=cfg.agent.seed
        )
        kwargs["action_noise"] = noise if n_envs == 1 else shared_schedule(noise, n_envs)
    agent = cls(
        "MlpPolicy",
        env,
        learning_rate=cfg.agent.actor_lr,
        buffer_size=max(cfg.agent.episodes * steps_per_episode, cfg.agent.batch_size),
        learning_starts=cfg.agent.warmup_episodes * steps_per_episode,
        batch_size=cfg.agent.batch_size,
        tau=cfg.agent.tau,
        gamma=cfg.agent.gamma,
        train_freq=(1, "episode") if n_envs == 1 else (steps_per_episode, "step"),  # SB3: episodic needs 1 env
        gradient_steps=-1,
        replay_buffer_class=EpisodeRewardReplayBuffer,
        replay_buffer_kwargs={
            "baseline_decay": cfg.agent.baseline_decay,
            "credit_baseline": cfg.agent.credit_baseline,
            "normalize_reward": cfg.agent.normalize_reward,
        },
        policy_kwargs={"net_arch": {"pi": list(cfg.agent.hidden), "qf": list(cfg.agent.hidden)}},
        seed=cfg.agent.seed,
        device=cfg.run.device,
        verbose=0,
        **kwargs,
    )
    agent.critic_learning_rate = cfg.agent.critic_lr
    agent.start_actions = []
    return agent
