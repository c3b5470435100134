"""Per-episode bookkeeping of a search: TensorBoard, the best policy so far, and the SB3 callback.

`EpisodeRecorder` does the work for every searcher (DDPG, random, uniform), so they are logged and
compared the same way; `EpisodeCallback` only forwards SB3's finished episodes to it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from amc.compress.policy import CompressionPolicy

TAGS = (
    "search/reward", "search/accuracy", "search/best_reward", "search/seconds_per_episode",
    "search/episodes_per_minute", "search/sigma", "search/flops_ratio", "search/params_ratio", "search/size_ratio",
)  # fmt: skip
"""The scalar tags every search writes (plus `search/latency_ratio` with a latency table, `actions/<i>`)."""


def policy_figure(names: list[str], values: list[float], ylabel: str, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(values)), 3.2))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


class EpisodeRecorder:
    """Logs each finished episode and keeps `policy.json` (the best so far) up to date, atomically."""

    def __init__(self, writer, run_dir: Path, step_names: list[str], step_stages: list[str], policy_metadata: dict,
                 total_episodes: int, state: dict | None = None, policy_fields: dict | None = None):  # fmt: skip
        self.writer, self.run_dir = writer, Path(run_dir)
        self.step_names, self.step_stages = step_names, step_stages
        self.policy_metadata = policy_metadata
        self.policy_fields = policy_fields or {}
        """Top-level policy fields every saved policy gets: architecture, num_classes, fingerprint."""
        state = state or {}
        self.episodes = state.get("episodes", 0)
        self.best_reward = state.get("best_reward", -float("inf"))
        self.best_info = state.get("best_info")
        self.rewards: list[float] = state.get("rewards", [])
        self.best_episode = state.get("best_episode")
        self.total_episodes = total_episodes
        self._last_time = self._started = time.perf_counter()
        self._started_at = self.episodes
        self.progress = tqdm(total=total_episodes, initial=self.episodes, desc="search", unit="episode",
                             dynamic_ncols=True)  # fmt: skip
        if self.best_info is not None and self.best_episode is not None:
            self._write_best(self.best_episode)  # a hard kill after the checkpoint may have left a later best

    def state(self) -> dict:
        return {"episodes": self.episodes, "best_reward": self.best_reward, "best_info": self.best_info,
                "best_episode": self.best_episode, "rewards": self.rewards}  # fmt: skip

    @property
    def episodes_per_minute(self) -> float:
        """Episodes finished per minute of wall time, since this process started recording."""
        return 60.0 * (self.episodes - self._started_at) / max(time.perf_counter() - self._started, 1e-9)

    def on_episode(self, info: dict, sigma: float | None = None) -> None:
        """Record one finished episode; episodes past `total_episodes` (the last round of N parallel
        episodes can overshoot) are ignored."""
        if self.episodes >= self.total_episodes:
            return
        now = time.perf_counter()
        self.episodes += 1
        e, w = self.episodes, self.writer
        reward = float(info["reward"])
        self.rewards.append(reward)
        w.add_scalar("search/reward", reward, e)
        w.add_scalar("search/accuracy", info["accuracy"], e)
        for key, value in info.items():
            if key.endswith("_ratio"):
                w.add_scalar(f"search/{key}", value, e)
        w.add_scalar("search/seconds_per_episode", now - self._last_time, e)
        w.add_scalar("search/episodes_per_minute", self.episodes_per_minute, e)
        w.add_scalar("search/sigma", sigma if sigma is not None else 0.0, e)
        values = info["values"]
        for i, (name, value) in enumerate(zip(self.step_names, values, strict=True)):
            w.add_scalar(f"actions/{i:02d}_{name}", value, e)
        w.add_histogram("actions/values", np.asarray(values, dtype=np.float64), e)
        if reward > self.best_reward:
            self.best_reward, self.best_info = reward, {k: v for k, v in info.items() if k != "terminal_observation"}
            self.best_episode = e
            self._write_best(e)
        w.add_scalar("search/best_reward", self.best_reward, e)
        self._last_time = now
        self.progress.update(1)
        self.progress.set_postfix(reward=f"{reward:.3f}", best=f"{self.best_reward:.3f}",
                                  eps_per_min=f"{self.episodes_per_minute:.1f}")  # fmt: skip

    def _write_best(self, episode: int) -> None:
        info = self.best_info
        policy = CompressionPolicy.from_dict({**info["policy"], **self.policy_fields})
        policy.metadata.update(self.policy_metadata)
        policy.metadata.update({
            "episode": episode, "episode_reward": info["reward"], "accuracy_val_subset": info["accuracy"],
            "achieved": {k[: -len("_ratio")]: v for k, v in info.items() if k.endswith("_ratio")},
        })  # fmt: skip
        policy.save(self.run_dir / "policy.json")
        stage = self.step_stages[0]
        shown = [
            (n, v) for n, v, s in zip(self.step_names, info["values"], self.step_stages, strict=True) if s == stage
        ]
        label = {
            "channel": "keep ratio",
            "quantize": "bits",
            "fine-grained": "sparsity",
            "removal": "kept (1) / removed (0)",
        }
        fig = policy_figure([n for n, _ in shown], [v for _, v in shown], label[stage],
                            f"best policy, episode {episode}, reward {info['reward']:.4f}")  # fmt: skip
        self.writer.add_figure("best/policy", fig, episode)
        self.writer.flush()

    def close(self) -> None:
        self.progress.close()
        self.writer.flush()


class EpisodeCallback(BaseCallback):
    """Forwards every finished SB3 episode (and the current exploration sigma) to an `EpisodeRecorder`."""

    def __init__(self, recorder: EpisodeRecorder):
        super().__init__()
        self.recorder = recorder

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                noise = getattr(self.model, "action_noise", None)
                sigma = getattr(noise, "sigma", None)
                self.recorder.on_episode(info, sigma)
        return True


class PeriodicCheckpoint(BaseCallback):
    """Calls `save(model)` each time the episode count passes a multiple of `every`, at the start of the next
    rollout: by then SB3 has stored the episodes' transitions and trained on them. (With N envs, episodes
    finish N at a time, so a save may come up to N - 1 episodes late.)"""

    def __init__(self, recorder: EpisodeRecorder, every: int, save):
        super().__init__()
        self.recorder, self.every, self.save = recorder, every, save
        self._saved_at = recorder.episodes

    def _on_rollout_start(self) -> None:
        episodes = self.recorder.episodes
        if self.every > 0 and episodes // self.every > self._saved_at // self.every:
            self.save(self.model)
            self._saved_at = episodes

    def _on_step(self) -> bool:
        return True


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)
