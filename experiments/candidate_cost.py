"""What one search candidate costs, part by part, against its arithmetic floor (issue 29).

    python experiments/candidate_cost.py run [--cases resnet20:uniform30 resnet20:ddpg50 densenet121:uniform30]
    python experiments/candidate_cost.py search [--search-rewards kd30 kd20-bn5]  # 400 episodes, 2 workers
    python experiments/candidate_cost.py report

One thread, the search's precision (`auto`: bf16 where the CPU runs it natively). For each case and reward
(`default`: BN recalibration then scoring; `kd30`: 30 KD steps between them):
- the whole candidate as the evaluator scores it now (the reward's KD batches and teacher logits made once per
  evaluator), and as it was scored before (`amc.train.distill.finetune`: the teacher run on every batch, then a full
  validation pass);
- its parts: the student's build, BN recalibration (20 x 128 images), the teacher on the 30 KD batches, the student's
  30 training steps (forward + backward + SGD), scoring on 1,000 validation images;
- each part's floor: its MACs (forward; a backward counts twice) over the rate this core reaches on a dense,
  well-shaped convolution (64 -> 64 channels, 3x3, 16x16, batch 128) in the same precision.
`search` runs the shipped 30%-FLOPs search (DDPG, seed 0, 400 episodes, 2 workers of one thread each) with a
reward of `SEARCH_REWARDS`, resumably, records its episodes per minute, then gives its student the benchmark's
15-epoch KD fine-tune (one thread) so a cheaper reward is judged by what it finds.
Rows merge into experiments/results/candidate_cost.json; `report` writes the .md.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from rows import (
    describe,
    finetune_row,
    keyed_folder,
    merge_row,
    page_head,
    read_rows,
    search_in,
    search_settings,
    write_whole,
)
from script_args import run_script

from agents.config import load_config
from amc.checkpoint import load_checkpoint
from amc.commands.common import load_data_for
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy, model_from_checkpoint
from amc.cost.budget import Budget
from amc.cost.measured import count_macs
from amc.cost.predicted import CostModel
from amc.data import DataSplits
from amc.errors import AmcError
from amc.evaluate.baselines import uniform
from amc.evaluate.evaluator import CandidateEvaluator, EvaluationSettings
from amc.models import create_model
from amc.train.distill import finetune, kd_steps, kd_stream, recalibrate_bn_on, recalibration_batches
from amc.train.loop import accuracy_on, make_optimizer
from amc.train.precision import autocast, resolve_precision

CPU = torch.device("cpu")
REWARDS = {"default": 0, "kd30": 30}
CASES = ("resnet20:uniform30", "resnet20:ddpg50", "densenet121:uniform30")
SEARCH_REWARDS = {  # evaluation overrides of the shipped 30%-FLOPs config
    "kd30": ["evaluation.finetune_steps=30", "evaluation.recalibrate_batches=20"],  # the comparison's reward
    "kd20-bn5": ["evaluation.finetune_steps=20", "evaluation.recalibrate_batches=5"],
}
SEARCHED_POLICY = "experiments/results/proxy_policies/ddpg-s0.json"  # DDPG's 50%-FLOPs ResNet-20 policy


@dataclass
class Args:
    command: str
    cases: list[str] = field(default_factory=lambda: list(CASES))
    teacher: str = "experiments/teachers/resnet20_cifar10.pt"
    data_dir: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    repeats: int = 3
    search_rewards: list[str] = field(default_factory=lambda: list(SEARCH_REWARDS))
    config: str = "experiments/configs/resnet20_c10_flops30.yaml"
    finetune_epochs: int = 15
    """The searched student's KD fine-tune after `search` (0: none)."""
    out_dir: str = "runs/candidate_cost"
    results: str = "experiments/results/candidate_cost.json"


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls (after one untimed call that warms caches and kernels)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def dense_rates(precision: str, repeats: int) -> dict[str, float]:
    """MACs per second this core reaches on a dense, well-shaped conv: forward, and forward + backward."""
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(128, 64, 16, 16)
    if precision == "bf16":
        conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    macs = 128 * 64 * 64 * 9 * 16 * 16

    def forward():
        with torch.no_grad(), autocast(precision, CPU):
            conv(x)

    def train_step():
        with autocast(precision, CPU):
            out = conv(x.requires_grad_(True))
        out.float().sum().backward()

    return {"forward": macs / timed(forward, repeats), "train": 3 * macs / timed(train_step, repeats)}


def case_models(case: str, args: Args, data: DataSplits) -> tuple[nn.Module, CompressionPolicy]:
    """A case of `CASES`: its teacher (DenseNet-121 with random weights: costs only) and policy."""
    model, policy = case.split(":")
    torch.manual_seed(0)
    if model == "resnet20":
        teacher = model_from_checkpoint(load_checkpoint(args.teacher)).eval()
    else:
        teacher = create_model("tv:densenet121", num_classes=data.num_classes).eval()
    if policy == "ddpg50":
        return teacher, CompressionPolicy.load(SEARCHED_POLICY)
    return teacher, uniform(CostModel(teacher, data.input_shape), Budget(flops=0.3))


def measure_case(case: str, args: Args, data: DataSplits, rates: dict, precision: str) -> list[dict]:
    teacher, policy = case_models(case, args, data)
    rows = []
    for reward, steps in REWARDS.items():
        settings = EvaluationSettings(finetune_steps=steps, precision=precision)
        row = {"folder": f"{case}-{reward}", "case": case, "reward": reward, "precision": precision,
               **measure_reward(teacher, policy, data, settings, rates, args.repeats),
               "dense_rates_gmac_s": {k: v / 1e9 for k, v in rates.items()},
               "worker_cache_bytes": settings.cache_bytes(data.input_shape, data.num_classes),
               **describe(), "threads": torch.get_num_threads(),
               "measured_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("case", "reward", "candidate_seconds", "candidate_seconds_before",
                                              "floor_seconds")}), flush=True)  # fmt: skip
    return rows


def measure_reward(teacher, policy, data: DataSplits, settings: EvaluationSettings, rates: dict, repeats: int) -> dict:
    """The candidate now and before, and each part with its floor, for one reward's settings."""
    precision, shape = settings.precision, data.input_shape
    teacher_macs = count_macs(teacher, shape)
    student = apply_policy(teacher, policy, shape, validate=False)
    student_macs = count_macs(student, shape)
    kd = settings.reward_finetune(precision)
    bn_images = recalibration_batches(data, settings.recalibrate_batches, seed=settings.seed)
    val = list(data.batches("val", settings.eval_batch_size, limit=settings.eval_samples,
                            channels_last=precision == "bf16"))  # fmt: skip

    def build():
        return apply_policy(teacher, policy, shape, validate=False)

    parts = {
        "build": (build, 0.0),
        "bn_recalibration": (lambda: recalibrate_bn_on(build(), bn_images, precision),
                             student_macs * len(bn_images) * 128 / rates["forward"]),
        "scoring": (lambda: accuracy_on(student, val, precision=precision, device=CPU),
                    student_macs * settings.eval_samples / rates["forward"]),
    }  # fmt: skip
    if settings.finetune_steps:
        batches = list(kd_stream(teacher, data, kd, CPU))
        images = settings.finetune_steps * kd.batch_size
        parts["kd_batches_and_teacher_logits"] = (lambda: list(kd_stream(teacher, data, kd, CPU)),
                                                  teacher_macs * images / rates["forward"])  # fmt: skip
        parts["student_kd_steps"] = (lambda: kd_steps(build(), batches, kd, CPU),
                                     3 * student_macs * images / rates["train"])  # fmt: skip
        parts["student_plain_steps"] = (lambda: plain_steps(build(), batches, kd, precision),
                                        3 * student_macs * images / rates["train"])  # fmt: skip
    seconds = {name: timed(fn, repeats) for name, (fn, _) in parts.items()}
    for name in ("bn_recalibration", "student_kd_steps", "student_plain_steps"):  # the build inside is not theirs
        if name in seconds:
            seconds[name] -= seconds["build"]
    evaluator = CandidateEvaluator(teacher, data, settings)
    floors = {name: floor for name, (_, floor) in parts.items() if name != "kd_batches_and_teacher_logits"}
    return {
        "candidate_seconds": timed(lambda: evaluator.evaluate(policy), repeats),
        "candidate_seconds_before": timed(lambda: evaluate_as_before(teacher, data, policy, settings, bn_images,
                                                                     val), max(1, repeats // 2)),
        "floor_seconds": sum(floors.values()),
        "parts": {name: {"seconds": seconds[name], "floor_seconds": parts[name][1]} for name in seconds},
        "student_flops_ratio": student_macs / teacher_macs,
        "teacher_scoring": {"seconds": timed(lambda: accuracy_on(teacher, val, precision=precision, device=CPU),
                                             repeats),
                            "floor_seconds": teacher_macs * settings.eval_samples / rates["forward"]},
    }  # fmt: skip


def plain_steps(student: nn.Module, batches: list, settings, precision: str) -> None:
    """The same training steps with cross-entropy alone: what 30 training steps of the student cost."""
    student.train()
    optimizer = make_optimizer(student, settings.lr, settings.momentum, settings.weight_decay)
    for x, y, _ in batches:
        with autocast(precision, CPU):
            loss = nn.functional.cross_entropy(student(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def evaluate_as_before(teacher, data, policy, settings, bn_images, val) -> float:
    """The candidate as the evaluator scored it before issue 29: `finetune` (the teacher on every batch, a full
    validation pass at the epoch's end), then scoring."""
    precision = settings.precision
    student = apply_policy(teacher, policy, data.input_shape, validate=False)
    recalibrate_bn_on(student, bn_images, precision)
    if settings.finetune_steps:
        finetune(student, teacher, data, settings.reward_finetune(precision), show_progress=False, device=CPU)
    return accuracy_on(student, val, precision=precision, device=CPU)


def run(args: Args) -> None:
    for case in args.cases:  # checked before any work
        if case not in CASES:
            raise AmcError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    torch.set_num_threads(1)
    blob = load_checkpoint(args.teacher)
    data = load_data_for(blob, None, args.data_dir, None, checkpoint=args.teacher)
    precision = resolve_precision("auto", CPU)
    rates = dense_rates(precision, args.repeats)
    for case in args.cases:
        for row in measure_case(case, args, data, rates, precision):
            merge_row(args.results, row)


def search(args: Args) -> None:
    for reward in args.search_rewards:  # checked before any work
        if reward not in SEARCH_REWARDS:
            raise AmcError(f"unknown search reward {reward!r}; choose from {', '.join(SEARCH_REWARDS)}")
    for reward in args.search_rewards:
        cfg = load_config(args.config, ["episodes=400", "workers=2", "agent=ddpg", "seed=0", *SEARCH_REWARDS[reward]])
        folder = keyed_folder(args.out_dir, f"search-{reward}", search_settings(cfg))
        results = search_in(folder, cfg)
        row = {"folder": f"search-{reward}", "kind": "search", "reward": reward, "config": args.config,
               "overrides": SEARCH_REWARDS[reward], "workers": results["workers"], "episodes": results["episodes"],
               **{k: results[k] for k in ("episodes_per_minute", "search_minutes", "seconds_per_candidate",
                                          "evaluations", "best_reward", "agent_overhead", "precision")},
               "acc_test_noft": results["student"]["accuracy"], "flops": results["flops_ratio"],
               **describe(), "measured_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
        if args.finetune_epochs:
            student = Path(results["run_dir"]) / "student.pt"
            row["acc_test_ft"] = finetune_row(folder, student, args.teacher, epochs=args.finetune_epochs,
                                              threads=1)["accuracy"]  # fmt: skip
        merge_row(args.results, row)
        print(json.dumps({k: row.get(k) for k in ("reward", "episodes_per_minute", "search_minutes",
                                                  "best_reward", "acc_test_ft")}), flush=True)  # fmt: skip


def report(args: Args) -> None:
    path = Path(args.results)
    rows = read_rows(path, "candidate_cost.py run")
    lines = page_head(
        "candidate_cost.py",
        path,
        "What one search candidate costs",
        "One thread, seconds are medians of repeated calls. *floor*: the part's MACs (a backward counts "
        "twice) over the rate of a dense 64-channel 3x3 convolution on the same core and precision.",
    )
    for r in rows:
        lines += [f"## {r['case']}, {r['reward']} reward ({r['precision']})", "",
                  f"On {r['cpu']} ({', '.join(r['cpu_flags'])}); dense rates: "
                  f"{r['dense_rates_gmac_s']['forward']:.1f} GMAC/s forward, {r['dense_rates_gmac_s']['train']:.1f} "
                  "training.", "",
                  f"- the candidate: **{r['candidate_seconds']:.2f} s** now, {r['candidate_seconds_before']:.2f} s "
                  f"before; floor {r['floor_seconds']:.2f} s ({r['candidate_seconds'] / r['floor_seconds']:.2f}× it)",
                  ]  # fmt: skip
        reference = r.get("teacher_scoring")
        if reference:
            lines.append(f"- for reference, the unpruned teacher scoring them: {reference['seconds']:.3f} s, "
                         f"{reference['seconds'] / reference['floor_seconds']:.2f}× its floor")  # fmt: skip
        steps = r["parts"].get("student_plain_steps")
        if steps:
            lines.append(f"- against the plain training steps it contains: "
                         f"{r['candidate_seconds'] / steps['seconds']:.2f}× ({steps['seconds']:.2f} s)")  # fmt: skip
        lines += ["", "| part | seconds | floor | × floor |", "|---|---|---|---|"]
        for name, part in r["parts"].items():
            ratio = part["seconds"] / part["floor_seconds"] if part["floor_seconds"] else float("nan")
            lines.append(f"| {name} | {part['seconds']:.3f} | {part['floor_seconds']:.3f} | {ratio:.2f} |")
        lines.append("")
    write_whole(path.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {path.with_suffix('.md')}")


def main(args: Args) -> None:
    {"run": run, "search": search, "report": report}[args.command](args)


if __name__ == "__main__":
    run_script(main, Args, __doc__, ["run", "search", "report"])
