"""How exactly the cost model follows transformers it did not see in tests: for each model (untrained), 10 random
policies under a FLOPs budget are built for real, and the predicted MACs, parameters and bytes are compared with
the built student's. MACs are also checked against torch.utils.flop_counter (timm's fused attention is turned off
so that it sees the attention matmuls).

    python experiments/attention_costs.py run [--models timm:vit_tiny_patch16_224 tv:vit_b_16 tv:swin_t] [--minutes 15]
    python experiments/attention_costs.py report

Rows merge into experiments/results/attention_costs.json (one per model; a measured model is skipped). Each model
is measured in a child process given `--minutes`; one that takes longer is recorded as not measured in that time
(and tried again by the next run).
"""

from __future__ import annotations

import json
import multiprocessing
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rows import describe, merge_row, page_head, read_rows, write_whole
from script_args import run_and_report
from tqdm.auto import tqdm

from amc.compress.student import apply_policy
from amc.cost.budget import Budget
from amc.cost.measured import count_macs, count_params, flop_counter_macs, size_bytes
from amc.cost.predicted import CostModel
from amc.evaluate.baselines import random_policy
from amc.models import create_model


@dataclass
class Args:
    command: str
    models: list[str] = field(default_factory=lambda: ["timm:vit_tiny_patch16_224", "tv:vit_b_16", "tv:swin_t"])
    policies: int = 10
    flops: float = 0.5
    """The FLOPs budget the random policies meet (a ratio of the teacher's)."""
    image_size: int = 224
    threads: int = 1
    minutes: float = 15.0
    """The time a model is given (its cost model and policies)."""
    results: str = "experiments/results/attention_costs.json"


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / max(abs(measured), 1e-12)


def measure(name: str, args: Args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (3, args.image_size, args.image_size)
    teacher = create_model(name, num_classes=10).eval()
    for module in teacher.modules():  # timm's fused attention hides its matmuls from flop_counter on a CPU
        if getattr(module, "fused_attn", False):
            module.fused_attn = False
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cost_model = CostModel(teacher, shape)
    kept_whole = sorted({str(w.message) for w in caught if "kept whole" in str(w.message)})
    seconds = time.perf_counter() - started
    rng, policies = np.random.default_rng(0), []
    for _ in tqdm(range(args.policies), desc=name, dynamic_ncols=True):
        policy = random_policy(cost_model, Budget(flops=args.flops), rng)
        predicted = cost_model.predict(policy.keep_ratios, round_to=policy.round_to)
        student = apply_policy(teacher, policy, shape)
        measured = {
            "macs": count_macs(student, shape), "params": count_params(student), "size_bytes": size_bytes(student),
            "flop_counter_macs": flop_counter_macs(student, shape),
        }  # fmt: skip
        predicted = {"macs": predicted.macs, "params": predicted.params, "size_bytes": predicted.size_bytes}
        policies.append({"predicted": predicted, "measured": measured})
    kinds = [u.kind for u in cost_model.units]
    return {
        "model": name, "image_size": args.image_size, "flops_budget": args.flops,
        "units": {kind: kinds.count(kind) for kind in sorted(set(kinds))}, "kept_whole": kept_whole,
        "cost_model_seconds": round(seconds, 1), "teacher_macs": cost_model.teacher.macs,
        "teacher_flop_counter_macs": flop_counter_macs(teacher, shape), "policies": policies,
        **describe(), "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip


def measure_within(name: str, args: Args) -> dict:
    """`measure` in a child process, given `args.minutes`; a model that takes longer gets a row saying so."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # leaving the block stops an unfinished child
        pending = pool.apply_async(measure, (name, args))
        try:
            return pending.get(timeout=args.minutes * 60)
        except multiprocessing.TimeoutError:
            return {"model": name, "image_size": args.image_size, "unfinished_minutes": args.minutes,
                    "threads": args.threads, **describe(), "measured_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def run(args: Args) -> None:
    path = Path(args.results)
    rows = json.loads(path.read_text()) if path.exists() else []
    done = {r["model"] for r in rows if "unfinished_minutes" not in r}  # an unfinished model is tried again
    for name in args.models:
        if name not in done:
            merge_row(path, measure_within(name, args), key="model")


def largest_errors(row: dict) -> dict[str, float]:
    errors = {}
    for resource in ("macs", "params", "size_bytes"):
        errors[resource] = max(relative_error(p["predicted"][resource], p["measured"][resource])
                               for p in row["policies"])  # fmt: skip
    errors["flop_counter"] = max(relative_error(p["measured"]["macs"], p["measured"]["flop_counter_macs"])
                                 for p in row["policies"])  # fmt: skip
    return errors


def report(results: Path) -> None:
    rows = read_rows(results, "attention_costs.py run")
    lines = page_head(
        "attention_costs.py", results, "The cost model on transformers",
        "Untrained models; random policies meeting a FLOPs budget, each student built for real. *Largest error*: "
        "the largest relative difference, over the policies, between the predicted and the built student's MACs, "
        "parameters and bytes; *flop_counter*: amc's measured MACs against torch.utils.flop_counter's.",
    )  # fmt: skip
    lines += ["| model | input | units | policies | MACs | params | bytes | flop_counter | cost model built in |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    unfinished = [row for row in rows if "unfinished_minutes" in row]
    rows = [row for row in rows if "unfinished_minutes" not in row]
    for row in rows:
        e = largest_errors(row)
        units = ", ".join(f"{n} {kind}" for kind, n in row["units"].items())
        lines.append(f"| {row['model']} | {row['image_size']}² | {units} | {len(row['policies'])} "
                     f"| {e['macs']:.1e} | {e['params']:.1e} | {e['size_bytes']:.1e} | {e['flop_counter']:.1e} "
                     f"| {row['cost_model_seconds']:.0f} s |")  # fmt: skip
    lines.append("")
    for row in rows:
        for message in row["kept_whole"]:
            lines.append(f"- {row['model']}: {message}")
    for row in unfinished:
        lines.append(f"- {row['model']} ({row['image_size']}²): not measured within {row['unfinished_minutes']:g} "
                     f"minutes on {row['threads']} thread(s)")  # fmt: skip
    cpus = sorted({row["cpu"] for row in rows + unfinished})
    lines += ["", f"Measured on: {'; '.join(cpus)}."]
    write_whole(results.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {results.with_suffix('.md')}")


if __name__ == "__main__":
    run_and_report(run, report, Args, __doc__)
