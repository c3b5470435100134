"""A 1,000-episode search on a tiny model, watched from outside: resident memory and open file handles of the
search process, sampled every few seconds (issue 16). Memory should stay flat after the start (growth under 10%
from the first fifth of the run to its end) and the handle count constant.

    python experiments/long_run.py [--episodes 1000] [--out experiments/results/long_run.json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rows import describe
from script_args import run_script


@dataclass
class Args:
    episodes: int = 1000
    interval: float = 2.0
    out: str = "experiments/results/long_run.json"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main(args: Args) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    amc = [sys.executable, "-m", "agents.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Path(tmp) / "teacher.pt"
        train = ["train-teacher", "--model", "resnet8", "--dataset", "synthetic", "--epochs", "1"]
        train += ["--out", str(teacher)]
        subprocess.run([*amc, *train], env=env, check=True, capture_output=True)
        settings = [
            f"teacher={teacher}",
            f"out_dir={tmp}/runs",
            f"episodes={args.episodes}",
            "warmup_episodes=100",
            "eval_samples=32",
            "recalibrate_batches=1",
            "report_samples=32",
            "report_latency_repeats=2",
        ]
        search = [*amc, "search", *[a for s in settings for a in ("--set", s)]]
        started = time.time()
        process = subprocess.Popen(search, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        while process.poll() is None:
            try:
                samples.append({"seconds": time.time() - started, "rss_mib": rss_mib(process.pid),
                                "open_files": open_files(process.pid)})  # fmt: skip
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(args.interval)
        if process.wait() != 0:
            raise SystemExit(f"the search failed with exit status {process.returncode}")
        results = json.loads(next(Path(tmp, "runs").glob("*/results.json")).read_text())  # what the search wrote
    searching = samples[: max(1, int(len(samples) * 0.95))]  # leave out the final report
    early = searching[max(0, len(searching) // 5 - 1)]
    late = searching[-1]
    summary = {
        "episodes": results["episodes"], "minutes": (time.time() - started) / 60, "samples": len(samples),
        "rss_mib_at_first_fifth": early["rss_mib"], "rss_mib_at_end": late["rss_mib"],
        "rss_growth": late["rss_mib"] / early["rss_mib"] - 1,
        "open_files_min": min(s["open_files"] for s in searching[len(searching) // 5 :]),
        "open_files_max": max(s["open_files"] for s in searching[len(searching) // 5 :]),
        "machine": describe(), "samples_taken": samples,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("samples_taken", "machine")}))


if __name__ == "__main__":
    run_script(main, Args, __doc__, [])
