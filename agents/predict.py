"""`amc policy predict`: a saved agent's actor, run greedily (no noise, no training) on a new teacher or
budget, gives a policy in seconds."""

from __future__ import annotations

import time
from pathlib import Path

from agents.checkpoint import load_agent, restore_agent
from agents.config import PredictConfig, SearchConfig, flat_config, load_config
from agents.ddpg import ALGORITHMS, make_agent
from agents.search import build_env, play, stamp_policy
from amc.checkpoint import load_checkpoint
from amc.compress.policy import CompressionPolicy
from amc.cost.budget import Budget
from amc.errors import AmcError
from amc.files import refuse_overwriting_inputs


def search_config_beside(agent_path: Path, cfg: PredictConfig) -> SearchConfig:
    """The saved search's config (action ranges, mode, algorithm), retargeted at the new teacher and budget."""
    saved = agent_path.parent / "config.yaml"
    search_cfg = load_config(saved) if saved.is_file() else SearchConfig()
    search_cfg.teacher = cfg.teacher
    search_cfg.env.budget = cfg.budget or search_cfg.env.budget
    search_cfg.env.mode = cfg.mode or search_cfg.env.mode
    search_cfg.dataset, search_cfg.data_dir = None, cfg.data_dir
    search_cfg.evaluation.finetune_steps = 0
    search_cfg.run.device = cfg.device
    return search_cfg


def predict_command(cfg: PredictConfig) -> dict:
    refuse_overwriting_inputs(cfg.out, agent=cfg.agent, teacher=cfg.teacher)
    agent_path = Path(cfg.agent)
    saved = load_agent(agent_path)
    search_cfg = search_config_beside(agent_path, cfg)
    if search_cfg.agent.algorithm not in ALGORITHMS:
        raise AmcError(f"{agent_path.parent} was searched by {search_cfg.agent.algorithm!r}, which has no agent to run")
    Budget.parse(search_cfg.env.budget)
    started = time.perf_counter()
    teacher_blob = load_checkpoint(search_cfg.teacher)
    env = build_env(search_cfg, teacher_blob)
    if tuple(saved["observation_shape"]) != env.observation_space.shape:
        raise AmcError(f"{agent_path} observes {tuple(saved['observation_shape'])}, the env "
                       f"{env.observation_space.shape}")  # fmt: skip
    agent = make_agent(env, len(env.steps), search_cfg)
    restore_agent(agent, saved)
    env.reset(seed=search_cfg.agent.seed)
    info = play(env, lambda t, obs: float(agent.predict(obs, deterministic=True)[0][0]))
    policy = stamp_policy(CompressionPolicy.from_dict(info["policy"]), teacher_blob, env.teacher)
    policy.metadata.update({
        "mode": search_cfg.env.mode, "budget": dict(Budget.parse(search_cfg.env.budget).items()),
        "searcher": f"greedy {search_cfg.agent.algorithm} from {agent_path}",
        "search_config": flat_config(search_cfg),
        "accuracy_val_subset": info["accuracy"],
        "achieved": {k[: -len("_ratio")]: v for k, v in info.items() if k.endswith("_ratio")},
    })  # fmt: skip
    policy.save(cfg.out)
    return {
        "out": cfg.out,
        "accuracy_val_subset": info["accuracy"],
        **{k: v for k, v in info.items() if k.endswith("_ratio")},
        "values": info["values"],
        "seconds": time.perf_counter() - started,
    }
