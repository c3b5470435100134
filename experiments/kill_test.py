"""Hard kills at random points: `amc search`, `amc finetune` and `amc train-teacher` are SIGKILLed again and
again, and resumed each time, on a tiny model and generated data (issue 16). A kill lands at a random moment
after a random number of finished episodes (epochs): during an evaluation, the agent's training or a checkpoint
write. After every kill the script checks that the run resumes, that at most one finished episode (epoch) was
lost, that policy.json parses, and that the best reward never went down; at the end, that the run completes.

    python experiments/kill_test.py [--kills 20] [--out experiments/results/kills.json]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from script_args import run_script

from amc.checkpoint import load_checkpoint
from amc.compress.policy import CompressionPolicy

KILLER = """
import os, random, signal, sys, threading, time
after, delay, report = int(os.environ["KILL_AFTER"]), float(os.environ["KILL_DELAY"]), os.environ["KILL_REPORT"]
finished = [0]

def kill_later():
    time.sleep(delay)
    with open(report, "w") as f:  # what had finished when the kill landed
        f.write(str(finished[0]))
    os.kill(os.getpid(), signal.SIGKILL)

def count(n):
    finished[0] = n
    if n == after:
        threading.Thread(target=kill_later, daemon=True).start()

import agents.callbacks, amc.train.distill, amc.train.loop
real_episode = agents.callbacks.EpisodeRecorder.on_episode
def on_episode(self, info, sigma=None):
    real_episode(self, info, sigma)
    count(self.episodes)
agents.callbacks.EpisodeRecorder.on_episode = on_episode
real_epoch = amc.train.loop.train_epoch
epochs = [int(os.environ.get("KILL_EPOCHS_DONE", 0))]
def train_epoch(*args, **kwargs):
    result = real_epoch(*args, **kwargs)
    epochs[0] += 1
    count(epochs[0])
    return result
amc.train.loop.train_epoch = amc.train.distill.train_epoch = train_epoch
from agents.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Args:
    kills: int = 20
    episodes: int = 100
    epochs: int = 40
    seed: int = 0
    out: str = "experiments/results/kills.json"


def run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", KILLER, *argv], env=environment, capture_output=True, text=True)


def kill_once(argv: list[str], after: int, delay: float, report: Path, done_before: int = 0) -> int | None:
    """Run until the kill; the count of finished episodes (epochs) when it landed, or None if the run ended.
    `after` < 0 runs to the end."""
    report.unlink(missing_ok=True)
    done = run(argv, {"KILL_AFTER": str(after), "KILL_DELAY": str(delay), "KILL_REPORT": str(report),
                      "KILL_EPOCHS_DONE": str(done_before)})  # fmt: skip
    if done.returncode == 0:
        return None
    if os.environ.get("KILL_TEST_DEBUG"):
        print(done.returncode, done.stderr[-1500:])
    if done.returncode != -9 or not report.exists():
        raise SystemExit(f"{argv[0]} failed instead of being killed:\n{done.stderr[-2000:]}")
    return int(report.read_text())


def search_kills(args: Args, root: Path, teacher: Path, rng: random.Random) -> dict:
    out_dir = root / "runs"
    settings = [
        f"teacher={teacher}",
        f"out_dir={out_dir}",
        f"episodes={args.episodes}",
        "warmup_episodes=10",
        "eval_samples=32",
        "recalibrate_batches=1",
        "report_samples=32",
        "report_latency_repeats=2",
    ]
    base = ["search", *[arg for setting in settings for arg in ("--set", setting)]]
    lost, best_rewards, kills, report = [], [], 0, root / "killed_at"
    recovered, best = 0, None
    while True:
        run_dirs = sorted(out_dir.glob("search-*"))
        argv = ["search", "--resume", str(run_dirs[-1])] if run_dirs else base
        after = recovered + rng.randint(1, 4)
        finished = kill_once(argv, after if kills < args.kills else -1, rng.uniform(0.0, 0.5), report)
        run_dir = sorted(out_dir.glob("search-*"))[-1]
        if finished is None:
            if kills < args.kills:  # it finished before the kill: a fresh search, for more kill points
                shutil.rmtree(out_dir)
                recovered, best = 0, None
                continue
            results = json.loads((run_dir / "results.json").read_text())
            return {"kills": kills, "episodes": args.episodes, "lost_per_kill": lost, "max_lost": max(lost, default=0),
                    "completed": results["episodes"] == args.episodes, "best_rewards": best_rewards}  # fmt: skip
        kills += 1
        state_path, previous = run_dir / "search_state.json", best if run_dirs else None
        state = json.loads(state_path.read_text()) if state_path.exists() else {}  # none yet: killed in episode 1
        recovered = state.get("recorder", {}).get("episodes", 0)
        if (run_dir / "policy.json").exists():
            CompressionPolicy.load(run_dir / "policy.json")  # parses, or this raises
        best = state.get("recorder", {}).get("best_reward")
        if previous is not None and (best is None or best < previous):
            raise SystemExit(f"best reward went down after a kill: {previous} -> {best}")
        best_rewards.append(best)
        lost.append(finished - recovered)


def epoch_kills(args: Args, command: list[str], out: Path, rng: random.Random, epochs: int) -> dict:
    lost, kills, report, recovered = [], 0, out.with_suffix(".killed_at"), 0
    while True:
        argv = [*command, "--resume"] if out.exists() else command
        after = recovered + rng.randint(1, 3)
        finished = kill_once(argv, after if kills < args.kills else -1, rng.uniform(0.0, 0.3), report, recovered)
        if finished is None:
            if kills < args.kills:  # finished before the kill: start over for more kill points
                out.unlink()
                recovered = 0
                continue
            blob = load_checkpoint(out)
            return {"kills": kills, "epochs": epochs, "lost_per_kill": lost, "max_lost": max(lost, default=0),
                    "completed": "train_state" not in blob}  # fmt: skip
        kills += 1
        blob = load_checkpoint(out) if out.exists() else {"train_state": {"epoch": 0}}
        if "train_state" not in blob:  # killed after the final save: the run had finished, nothing lost
            lost.append(0)
            out.unlink()
            recovered = 0
            continue
        recovered = blob["train_state"]["epoch"]
        lost.append(finished - recovered)


def main(args: Args) -> None:
    rng = random.Random(args.seed)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = root / "teacher.pt"
        train = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--lr", "0.05", "--precision", "fp32",
                 "--batch-size", "16"]  # fmt: skip
        if run([*train, "--epochs", "1", "--out", str(teacher)], {"KILL_AFTER": "-1", "KILL_DELAY": "0",
                                                                  "KILL_REPORT": "/dev/null"}).returncode:  # fmt: skip
            raise SystemExit("could not train the tiny teacher")
        started = time.time()
        results = {"search": search_kills(args, root, teacher, rng)}
        policy, student, tuned = root / "p.json", root / "s.pt", root / "s_ft.pt"
        amc = [sys.executable, "-m", "agents.cli"]
        baseline = ["baseline", "uniform", "--teacher", str(teacher), "--flops", "0.5", "--out", str(policy)]
        subprocess.run([*amc, *baseline], check=True, capture_output=True)
        apply = ["apply", "--teacher", str(teacher), "--policy", str(policy), "--out", str(student)]
        subprocess.run([*amc, *apply], check=True, capture_output=True)
        finetune = ["finetune", "--student", str(student), "--teacher", str(teacher), "--epochs", str(args.epochs),
                    "--batch-size", "16", "--precision", "fp32", "--out", str(tuned)]  # fmt: skip
        results["finetune"] = epoch_kills(args, finetune, tuned, rng, args.epochs)
        teacher_run = [*train, "--epochs", str(args.epochs), "--out", str(root / "t2.pt")]
        results["train-teacher"] = epoch_kills(args, teacher_run, root / "t2.pt", rng, args.epochs)
        results["minutes"] = (time.time() - started) / 60
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    for name in ("search", "finetune", "train-teacher"):
        r = results[name]
        print(
            f"{name}: {r['kills']} kills, lost per kill {r['lost_per_kill']}, max {r['max_lost']}, "
            f"completed {r['completed']}"
        )
    if any(results[n]["max_lost"] > 1 or not results[n]["completed"] for n in ("search", "finetune", "train-teacher")):
        raise SystemExit("a kill lost more than one episode or epoch, or a run did not complete")


if __name__ == "__main__":
    run_script(main, Args, __doc__, [])
