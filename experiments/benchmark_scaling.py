"""Parallel search: episodes per minute by backend and worker count, and whether parallel episodes change
what the search finds.

    python experiments/benchmark_scaling.py throughput --rows local:1 local:2 ray-2node:2
    python experiments/benchmark_scaling.py throughput --rows local:1 local:2 ray-2node:2 --finetune-steps 30
    python experiments/benchmark_scaling.py quality --workers 1 --seeds 0 1 2     # DDPG, 200 episodes each
    python experiments/benchmark_scaling.py report                                 # rewrite scaling.md

A row is `backend:workers`; `ray-2node` starts a head and a worker node on 127.0.0.1 with `ray start`, one
CPU each, and stops them afterwards. Throughput rows give every worker one thread. Each finished row is
merged into experiments/results/scaling.json (rows of the same key are replaced); `report` writes scaling.md.
Run throughput rows on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rows import describe
from script_args import run_script

from agents.config import load_config
from agents.search import run_search

RESULTS = Path("experiments/results")
RAY_PORT = 6390
THROUGHPUT_KEY = ("device", "reward", "backend", "workers", "repeat")


@dataclass
class Args:
    command: str
    config: str = "experiments/configs/resnet20_c10_flops50.yaml"
    rows: list[str] = field(default_factory=lambda: ["local:1", "local:2", "ray-2node:2"])
    episodes: int = 100
    warmup_episodes: int = 20
    finetune_steps: int = 0
    workers: int = 1
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    repeat: int = 0
    """Index of a repeated throughput measurement (rows of each repeat are kept and averaged)."""
    device: str = "auto"
    set: list[str] = field(default_factory=list)
    """Extra search-config overrides, KEY=VALUE (e.g. data_dir=...)."""
    out_dir: str = "runs/scaling"
    results: str = str(RESULTS / "scaling.json")


@contextmanager
def two_node_ray_cluster():
    """A head and a worker node on 127.0.0.1, one CPU each; stopped on exit. (Ray registers both under this
    machine's own interface address; nothing leaves the machine.) The nodes and this driver share Ray's
    token authentication, which Ray turns on for a cluster started with `ray start`."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus=1", "--disable-usage-stats"]
    address = f"127.0.0.1:{RAY_PORT}"
    subprocess.run([ray, "start", "--head", f"--port={RAY_PORT}", "--node-ip-address=127.0.0.1",
                    "--include-dashboard=false", *common], check=True)  # fmt: skip
    try:
        subprocess.run([ray, "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common], check=True)
        yield address
    finally:
        subprocess.run([ray, "stop", "--force"], check=False)


def merge(path: Path, section: str, row: dict, key: tuple[str, ...]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    rows = [r for r in data.get(section, []) if tuple(r.get(k, 0) for k in key) != tuple(row[k] for k in key)]
    data[section] = [*rows, row]
    path.write_text(json.dumps(data, indent=2) + "\n")


def search(args: Args, overrides: list[str]) -> dict:
    base = [f"episodes={args.episodes}", f"warmup_episodes={args.warmup_episodes}",
            f"finetune_steps={args.finetune_steps}", f"device={args.device}", f"out_dir={args.out_dir}"]  # fmt: skip
    return run_search(load_config(args.config, [*base, *args.set, *overrides]))


def throughput(args: Args) -> None:
    for spec in args.rows:
        backend, workers = spec.split(":")
        overrides = [f"workers={workers}", "worker_threads=1",
                     f"backend={backend.removesuffix('-2node')}", f"name=scaling-{backend}-{workers}"]  # fmt: skip
        if backend == "ray-2node":
            with two_node_ray_cluster() as address:
                results = search(args, [*overrides, f"ray_address={address}"])
        else:
            results = search(args, overrides)
        row = {
            "backend": backend, "workers": int(workers), "reward": reward_name(args),
            "episodes": results["episodes"], "episodes_per_minute": results["episodes_per_minute"],
            "seconds_per_candidate": results["seconds_per_candidate"], "precision": results["precision"],
            "device": results["device"], "machine": describe(),
            "run_dir": results["run_dir"], "date": time.strftime("%Y-%m-%d"), "repeat": args.repeat,
        }  # fmt: skip
        merge(Path(args.results), "throughput", row, THROUGHPUT_KEY)
        print(json.dumps(row))


def reward_name(args: Args) -> str:
    return f"kd_{args.finetune_steps}_steps" if args.finetune_steps else "bn_recal (default)"


def quality(args: Args) -> None:
    for seed in args.seeds:
        results = search(args, [f"seed={seed}", f"workers={args.workers}", f"name=quality-w{args.workers}-s{seed}"])
        row = {
            "agent": "ddpg", "workers": args.workers, "seed": seed, "episodes": results["episodes"],
            "best_reward": results["best_reward"], "best_episode": results["best_episode"],
            "search_minutes": results["search_minutes"], "machine": describe(), "run_dir": results["run_dir"],
        }  # fmt: skip
        merge(Path(args.results), "quality", row, ("workers", "seed"))
        print(json.dumps(row))


def report(args: Args) -> None:
    data = json.loads(Path(args.results).read_text())
    lines = ["# Parallel search: throughput and quality", "",
             "Generated by `python experiments/benchmark_scaling.py report` from scaling.json; the rows come from "
             "`throughput` and `quality` runs of the same script (see its docstring) and, for the GPU, from "
             "`experiments/device_scaling.sh`. Every worker has one torch thread; `ray-2node` is a head and a worker "
             "node started with `ray start` on 127.0.0.1, one CPU each. Episodes per minute are counted from the "
             "first episode on, workers already started.", "",
             "## Throughput (ResNet-20, CIFAR-10, 50% FLOPs)", "",
             "| device | reward | backend | workers | episodes | episodes/min (each run) | mean | speedup vs 1 worker "
             "| s per candidate | precision | machine |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in data.get("throughput", []):
        groups.setdefault(tuple(r[k] for k in THROUGHPUT_KEY[:-1]), []).append(r)

    def mean_rate(rows: list[dict]) -> float:
        return statistics.mean(r["episodes_per_minute"] for r in rows)

    for key, rows in sorted(groups.items()):
        device, reward, backend, workers = key
        single = [rs for k, rs in groups.items() if k[:2] == (device, reward) and k[3] == 1]
        speedup = f"{mean_rate(rows) / mean_rate(single[0]):.2f}x" if single else "–"
        m = rows[0]["machine"]
        where = f"{m.get('gpu', m['cpu'])}, {m['cores']} cores, torch {m['torch']}"
        each = ", ".join(f"{r['episodes_per_minute']:.1f}" for r in rows)
        per_candidate = statistics.mean(r["seconds_per_candidate"] for r in rows)
        lines.append(f"| {device} | {reward} | {backend} | {workers} | {rows[0]['episodes']} | {each} | "
                     f"{mean_rate(rows):.1f} | {speedup} | {per_candidate:.2f} | {rows[0]['precision']} | "
                     f"{where} |")  # fmt: skip
    overheads = []
    for (device, reward, backend, workers), rows in sorted(groups.items()):
        local = groups.get((device, reward, "local", workers))
        if backend.startswith("ray") and local:
            per_candidate = statistics.mean(r["seconds_per_candidate"] for r in rows) / statistics.mean(
                r["seconds_per_candidate"] for r in local
            )
            overheads.append(f"- {device}, {reward}, {workers} workers: seconds per candidate "
                             f"{100 * (per_candidate - 1):+.1f}%, episodes per minute "
                             f"{100 * (mean_rate(rows) / mean_rate(local) - 1):+.1f}%.")  # fmt: skip
    if overheads:
        lines += ["", "Ray's two-node cluster against local processes, same machine (means over runs):", "", *overheads]
    quality_rows = data.get("quality", [])
    if quality_rows:
        lines += ["", "## Quality: DDPG, 200 episodes, 50% FLOPs, best reward (val-subset accuracy)", "",
                  "| workers | seeds | best rewards | mean ± sd | search min (mean) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        by_workers: dict[int, list[dict]] = {}
        for r in quality_rows:
            by_workers.setdefault(r["workers"], []).append(r)
        for w, rs in sorted(by_workers.items()):
            rs.sort(key=lambda r: r["seed"])
            best = [r["best_reward"] for r in rs]
            sd = statistics.stdev(best) if len(best) > 1 else 0.0
            lines.append(f"| {w} | {', '.join(str(r['seed']) for r in rs)} | {', '.join(f'{b:.3f}' for b in best)} | "
                         f"{statistics.mean(best):.3f} ± {sd:.3f} | "
                         f"{statistics.mean(r['search_minutes'] for r in rs):.1f} |")  # fmt: skip
        if 1 in by_workers and len(by_workers) > 1:
            ones = [r["best_reward"] for r in by_workers[1]]
            for w, rs in sorted(by_workers.items()):
                if w == 1:
                    continue
                inside = all(min(ones) <= r["best_reward"] <= max(ones) for r in rs)
                lines.append("")
                lines.append(f"{w}-worker bests {'lie within' if inside else 'fall outside'} the 1-worker range "
                             f"[{min(ones):.3f}, {max(ones):.3f}].")  # fmt: skip
    out = Path(args.results).with_suffix(".md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    commands = {"throughput": throughput, "quality": quality, "report": report}
    run_script(lambda args: commands[args.command](args), Args, __doc__, list(commands))
