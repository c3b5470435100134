"""`make demo`: the whole amc job, offline, on scikit-learn's bundled digits.

1. train the small digits teacher (seconds);
2. run a DDPG search at 50% FLOPs (experiments/configs/digits_demo.yaml, tens of episodes);
3. KD fine-tune the best student (part of the search's final step);
4. print a teacher-versus-student table and the TensorBoard command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agents.cli import main as amc

CONFIG = Path(__file__).parent / "configs" / "digits_demo.yaml"
RUN_DIR = Path("runs/demo")
ROWS = [
    ("test accuracy", "accuracy", "{:.2%}"),
    ("val accuracy", "val_accuracy", "{:.2%}"),
    ("MACs", "flops", "{:,}"),
    ("params", "params", "{:,}"),
    ("size (bytes)", "size_bytes", "{:,}"),
    ("latency b1 (ms/img)", "latency_ms_b1", "{:.3f}"),
    ("latency b128 (ms/img)", "latency_ms_b128", "{:.4f}"),
]


def run(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ amc {' '.join(argv)}", flush=True)
    if amc(argv) != 0:
        sys.exit(f"demo step failed: {title}")


def main() -> None:
    teacher = RUN_DIR / "teacher.pt"
    run("1. train the digits teacher", ["train-teacher", "--model", "digits_cnn", "--dataset", "digits",
                                        "--epochs", "15", "--lr", "0.05", "--out", str(teacher)])  # fmt: skip
    run("2-3. DDPG search at 50% FLOPs, then KD fine-tune the best student", ["search", "--config", str(CONFIG)])
    latest = max(RUN_DIR.glob("digits-demo-*/results.json"), key=lambda p: p.stat().st_mtime)
    results = json.loads(latest.read_text())
    t, s = results["teacher"], results["student"]
    print(f"\n== 4. teacher vs student ({latest.parent})")
    print(f"{'':24}{'teacher':>14}{'student':>14}{'ratio':>9}")
    for label, key, fmt in ROWS:
        print(f"{label:24}{fmt.format(t[key]):>14}{fmt.format(s[key]):>14}{s[key] / t[key]:>9.3f}")
    print(f"before fine-tuning the student scored {results['student_before_finetune']['accuracy']:.2%} test")
    print(f"\nsearch: {results['episodes']} episodes in {results['search_minutes']:.1f} min; best at episode "
          f"{results['best_episode']}")  # fmt: skip
    print(f"TensorBoard: tensorboard --logdir {RUN_DIR}")


if __name__ == "__main__":
    main()
