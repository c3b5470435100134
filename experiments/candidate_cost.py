"""What one search candidate costs, part by part, against its arithmetic floor (issue 29).

    python experiments/candidate_cost.py run [--cases resnet20:uniform30 resnet20:ddpg50 densenet121:uniform30]
    python experiments/candidate_cost.py layouts [--precision fp32]   # channels_last against NCHW, part by part
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
REWARDS = {  # EvaluationSettings of each reward
    "default": {},
    "kd30": {"finetune_steps": 30},
    "kd20-bn5": {"finetune_steps": 20, "recalibrate_batches": 5},  # cheaper, ranks as well (reward_proxies.md)
}
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
    rewards: list[str] = field(default_factory=lambda: list(REWARDS))
    teacher: str = "experiments/teachers/resnet20_cifar10.pt"
    data_dir: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    repeats: int = 3
    precision: str = "auto"
    """auto: bf16 where the CPU runs it natively; fp32 measures what CPUs without it run."""
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
    for reward in args.rewards:
        settings = EvaluationSettings(**REWARDS[reward], precision=precision)
        suffix = "" if args.precision == "auto" else f"-{precision}"  # auto's rows were keyed before the option
        row = {"folder": f"{case}-{reward}{suffix}", "case": case, "reward": reward, "precision": precision,
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
    before = evaluate_as_before(teacher, data, policy, settings, bn_images, val)
    floors = {name: floor for name, (_, floor) in parts.items() if name != "kd_batches_and_teacher_logits"}
    return {
        "candidate_seconds": timed(lambda: evaluator.evaluate(policy), repeats),
        "candidate_seconds_before": timed(lambda: evaluate_as_before(teacher, data, policy, settings, bn_images,
                                                                     val), max(1, repeats // 2)),
        "floor_seconds": sum(floors.values()),
        "reward_now": evaluator.evaluate(policy).accuracy,  # the same policy's reward, scored both ways
        "reward_before": before,
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
    for reward in args.rewards:
        if reward not in REWARDS:
            raise AmcError(f"unknown reward {reward!r}; choose from {', '.join(REWARDS)}")
    torch.set_num_threads(1)
    blob = load_checkpoint(args.teacher)
    data = load_data_for(blob, None, args.data_dir, None, checkpoint=args.teacher)
    precision = resolve_precision(args.precision, CPU)
    rates = dense_rates(precision, args.repeats)
    for case in args.cases:
        for row in measure_case(case, args, data, rates, precision):
            merge_row(args.results, row)


def layout_parts(teacher, policy, data: DataSplits, batches: list, settings, layout, repeats: int) -> dict:
    """Seconds of BN recalibration, the KD steps and scoring with images and student in `layout`."""
    precision = settings.precision
    bn_images = [x.contiguous(memory_format=layout) for x in recalibration_batches(data, 20)]
    kd = [(x.contiguous(memory_format=layout), y, logits) for x, y, logits in batches]
    val = [(x.contiguous(memory_format=layout), y) for x, y in data.batches("val", 500, limit=1000)]

    def build():
        return apply_policy(teacher, policy, data.input_shape, validate=False).to(memory_format=layout)

    built, student = timed(build, repeats), build()
    return {
        "bn_recalibration": timed(lambda: recalibrate_bn_on(build(), bn_images, precision), repeats) - built,
        "student_kd_steps": timed(lambda: kd_steps(build(), kd, settings, CPU), repeats) - built,
        "scoring": timed(lambda: accuracy_on(student, val, precision=precision, device=CPU), repeats),
    }


def layouts(args: Args) -> None:
    """The KD-30 candidate's parts with images and student in NCHW and in channels_last, side by side."""
    torch.set_num_threads(1)
    blob = load_checkpoint(args.teacher)
    data = load_data_for(blob, None, args.data_dir, None, checkpoint=args.teacher)
    precision = resolve_precision(args.precision, CPU)
    settings = EvaluationSettings(finetune_steps=30, precision=precision).reward_finetune(precision)
    for case in args.cases:
        teacher, policy = case_models(case, args, data)
        batches = list(kd_stream(teacher, data, settings, CPU))
        row = {"folder": f"layouts-{case}-{precision}", "kind": "layouts", "case": case, "precision": precision}
        for name, layout in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
            row[name] = layout_parts(teacher, policy, data, batches, settings, layout, args.repeats)
        row.update(describe(), threads=torch.get_num_threads(), measured_at=time.strftime("%Y-%m-%d %H:%M"))
        merge_row(args.results, row)
        print(json.dumps({k: row[k] for k in ("case", "precision", "nchw", "channels_last")}), flush=True)


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


COMPARISON = "experiments/results/searchers.json"  # the searcher comparison's rows (its DDPG seed 0 is replayed)
TARGETS = {"kd_over_plain_steps": 1.2, "default_over_floor": 1.3, "search_minutes": 30.0}


def target_lines(cases: list[dict], searches: list[dict]) -> list[str]:
    """The issue's targets against the rows that measure them."""
    lines = ["## Targets", "", "| target | row | measured | met |", "|---|---|---|---|"]

    def add(target: str, row: str, value: float, limit: float, unit: str) -> None:
        lines.append(f"| {target} | {row} | {value:.2f}{unit} | {'yes' if value <= limit else '**no**'} |")

    for r in cases:
        steps = r["parts"].get("student_plain_steps")
        if steps:  # a reward with KD steps
            add(f"candidate ≤ {TARGETS['kd_over_plain_steps']}× the plain training steps it contains",
                f"{r['case']}, {r['reward']} ({r['precision']})", r["candidate_seconds"] / steps["seconds"],
                TARGETS["kd_over_plain_steps"], "×")  # fmt: skip
        if r["reward"] == "default":
            add(
                f"default-reward candidate ≤ {TARGETS['default_over_floor']}× its floor",
                f"{r['case']} ({r['precision']})",
                r["candidate_seconds"] / r["floor_seconds"],
                TARGETS["default_over_floor"],
                "×",
            )
    for r in searches:
        add(
            f"400-episode search ≤ {TARGETS['search_minutes']:.0f} min on 2 cores ({r['reward']} reward)",
            r["cpu"],
            r["search_minutes"],
            TARGETS["search_minutes"],
            " min",
        )
    return [*lines, ""]


def search_lines(searches: list[dict]) -> list[str]:
    """The 400-episode searches beside the comparison's DDPG seed 0 (another machine, the KD-30 reward)."""
    comparison = next((r for r in json.loads(Path(COMPARISON).read_text())
                       if r["method"] == "ddpg" and r["seed"] == 0), None)  # fmt: skip
    lines = ["## The 400-episode search", "",
             "`python experiments/candidate_cost.py search`: the shipped 30%-FLOPs config, DDPG seed 0, 2 workers of "
             "one thread; test accuracy before and after the 15-epoch KD fine-tune.", "",
             "| reward | CPU | episodes/min | minutes | s per candidate | candidates | best reward | test before FT "
             "| test after FT |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in searches:
        after = f"{100 * r['acc_test_ft']:.2f}%" if "acc_test_ft" in r else "–"
        lines.append(f"| {r['reward']} | {r['cpu']} ({r['precision']}) | {r['episodes_per_minute']:.1f} | "
                     f"{r['search_minutes']:.1f} | {r['seconds_per_candidate']:.2f} | {r['evaluations']} | "
                     f"{r['best_reward']:.3f} | {100 * r['acc_test_noft']:.2f}% | {after} |")  # fmt: skip
    if comparison:
        lines.append(f"| kd30, the comparison's row (searchers.json) | recorded there | – | "
                     f"{comparison['search_minutes']:.1f} | – | {comparison['candidates']} | "
                     f"{comparison['best_reward']:.3f} | {100 * comparison['acc_test_noft']:.2f}% | "
                     f"{100 * comparison['acc_test_ft']:.2f}% |")  # fmt: skip
    return [*lines, ""]


def layout_lines(rows: list[dict]) -> list[str]:
    lines = ["## Memory layout", "",
             "`python experiments/candidate_cost.py layouts [--precision fp32]`: the KD-30 candidate's parts with the "
             "images and the student in NCHW and in channels_last (amc's choice on a CPU, in fp32 as in bf16).", "",
             "| case | precision | CPU | part | NCHW (s) | channels_last (s) | × |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for part, nchw in r["nchw"].items():
            last = r["channels_last"][part]
            lines.append(f"| {r['case']} | {r['precision']} | {r['cpu']} | {part} | {nchw:.3f} | {last:.3f} | "
                         f"{nchw / last:.2f} |")  # fmt: skip
    return [*lines, ""]


def case_lines(r: dict) -> list[str]:
    lines = [f"## {r['case']}, {r['reward']} reward ({r['precision']})", "",
             f"On {r['cpu']} ({', '.join(r['cpu_flags'])}); dense rates: "
             f"{r['dense_rates_gmac_s']['forward']:.1f} GMAC/s forward, {r['dense_rates_gmac_s']['train']:.1f} "
             "training.", "",
             f"- the candidate: **{r['candidate_seconds']:.2f} s** now, {r['candidate_seconds_before']:.2f} s "
             f"before; floor {r['floor_seconds']:.2f} s ({r['candidate_seconds'] / r['floor_seconds']:.2f}× it)",
             ]  # fmt: skip
    if "reward_now" in r:
        apart = round(abs(r["reward_now"] - r["reward_before"]) * 1000)  # the rewards score 1,000 images
        same = "the same" if not apart else f"{apart} of 1,000 images apart: the numerics of the layout change"
        lines.append(
            f"- the policy's reward now and before: {r['reward_now']:.4f} and {r['reward_before']:.4f} ({same})"
        )
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
    return [*lines, ""]


def report(args: Args) -> None:
    path = Path(args.results)
    rows = read_rows(path, "candidate_cost.py run")
    cases = [r for r in rows if r.get("kind") is None]
    searches = [r for r in rows if r.get("kind") == "search"]
    layout_rows = [r for r in rows if r.get("kind") == "layouts"]
    lines = page_head(
        "candidate_cost.py",
        path,
        "What one search candidate costs",
        "One thread, seconds are medians of repeated calls. *floor*: the part's MACs (a backward counts "
        "twice) over the rate of a dense 64-channel 3x3 convolution on the same core and precision.",
    )
    lines += target_lines(cases, searches)
    if searches:
        lines += search_lines(searches)
    if layout_rows:
        lines += layout_lines(layout_rows)
    for r in cases:
        lines += case_lines(r)
    write_whole(path.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {path.with_suffix('.md')}")


def main(args: Args) -> None:
    {"run": run, "layouts": layouts, "search": search, "report": report}[args.command](args)


if __name__ == "__main__":
    run_script(main, Args, __doc__, ["run", "layouts", "search", "report"])
