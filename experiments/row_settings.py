"""What a benchmark row computes, as a dict, and the run folder keyed by it: rows with other settings never
reuse an old result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from agents.config import SearchConfig

# Where and how fast a search runs, and how its final report is sized, not what it computes. Keep this list in
# step with new config keys, or finished rows stop matching their folders.
RUNTIME_KEYS = ("workers", "backend", "ray_address", "worker_threads", "out_dir", "name", "device", "report_samples",
                "report_latency_repeats")  # fmt: skip


# Keys added after rows were keyed: left out of the digest at these defaults, so those rows keep their folders.
ADDED_LATER = {"credit_baseline": "store"}


def search_settings(cfg: SearchConfig) -> dict:
    settings = asdict(cfg)
    for key in RUNTIME_KEYS:
        settings.pop(key)
    for key, default in ADDED_LATER.items():
        if settings[key] == default:
            settings.pop(key)
    settings["checkpoint_every"] = 10  # does not change the result; pinned to the value the first rows were keyed with
    return settings


def keyed_folder(parent: str | Path, name: str, settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return Path(parent) / f"{name}-{digest}"
