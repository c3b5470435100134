"""`make demo`: the whole amc job, offline, on scikit-learn's bundled digits.

1. train the small digits teacher (seconds);
2. compress it to 50% of its FLOPs (uniform baseline for now);
3. KD fine-tune the student;
4. print a teacher-versus-student table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agents.cli import main as amc

RUN_DIR = Path("runs/demo")


def step(title: str, argv: list[str]) -> None:
    print(f"\n== {title}\n$ amc {' '.join(argv)}", flush=True)
    if amc(argv) != 0:
        sys.exit(f"demo step failed: {title}")


def main() -> None:
    teacher, policy = RUN_DIR / "teacher.pt", RUN_DIR / "policy.json"
    student, tuned = RUN_DIR / "student.pt", RUN_DIR / "student_ft.pt"
    step("train the digits teacher", ["train-teacher", "--model", "digits_cnn", "--dataset", "digits",
                                      "--epochs", "15", "--lr", "0.05", "--out", str(teacher)])
    step("a uniform policy at 50% FLOPs", ["baseline", "uniform", "--teacher", str(teacher), "--flops", "0.5",
                                          "--out", str(policy)])
    step("build the student", ["apply", "--teacher", str(teacher), "--policy", str(policy), "--out", str(student),
                               "--recalibrate-bn", "5"])
    step("KD fine-tune the student", ["finetune", "--student", str(student), "--teacher", str(teacher),
                                      "--epochs", "10", "--lr", "0.02", "--out", str(tuned)])
    step("evaluate the teacher", ["evaluate", str(teacher)])
    step("evaluate the student", ["evaluate", str(tuned)])
    print(f"\nTensorBoard: tensorboard --logdir {RUN_DIR}")


if __name__ == "__main__":
    main()
