"""What a benchmark row computes, as a dict, the run folder keyed by it (rows with other settings never
reuse an old result), and the row's search in that folder: reused when finished, resumed when interrupted."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from agents.config import SearchConfig, load_config
from agents.search import resume_config_path, run_search
from amc.cost.latency import resolve_round_to

# Where and how fast a search runs, and how its final report is sized, not what it computes. Keep this list in
# step with new config keys, or finished rows stop matching their folders.
RUNTIME_KEYS = ("workers", "backend", "ray_address", "worker_threads", "out_dir", "name", "device", "report_samples",
                "report_latency_repeats", "resume_without_buffer")  # fmt: skip


# Keys added after rows were keyed: left out of the digest at these defaults, so those rows keep their folders.
ADDED_LATER = {"credit_baseline": "store", "init_policy": None, "global_importance": "taylor",
               "max_pruning_ratio": 0.8, "normalize_reward": False, "runtime": "eager",
               "runtime_precision": "fp32", "reward_in_runtime": False}  # fmt: skip


def search_settings(cfg: SearchConfig) -> dict:
    settings = asdict(cfg)
    for key in RUNTIME_KEYS:
        settings.pop(key)
    if settings["runtime"] == "eager" and settings["runtime_precision"] == "fp32":
        settings.pop("reward_in_runtime", None)  # no runtime to score in
    for key, default in ADDED_LATER.items():
        if settings.get(key, default) == default:
            settings.pop(key, None)
    if not settings["latency_table"]:  # round_to was a number before `auto`; without a table auto means 1
        settings["round_to"] = resolve_round_to(settings["round_to"])
    settings["checkpoint_every"] = 10  # does not change the result; pinned to the value the first rows were keyed with
    return settings


def keyed_folder(parent: str | Path, name: str, settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return Path(parent) / f"{name}-{digest}"


def search_in(folder: Path, cfg: SearchConfig) -> dict:
    """The results of `cfg`'s search in `folder`: read when it finished, resumed when it was interrupted."""
    runs = sorted(folder.glob("search-*"))
    done = [r for r in runs if (r / "results.json").exists()]
    if done:
        return json.loads((done[-1] / "results.json").read_text())
    if runs:
        return run_search(load_config(resume_config_path(runs[-1])), resume_dir=runs[-1])
    cfg.out_dir, cfg.name = str(folder), "search"
    return run_search(cfg)
