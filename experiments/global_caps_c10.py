"""Torch-Pruning's global pruning on ResNet-20 / CIFAR-10: which importance, and what the per-layer cap does.

    python experiments/global_caps_c10.py run        # every importance x cap; resumable, one row at a time
    python experiments/global_caps_c10.py report     # experiments/results/global_caps.md

Each row is `amc baseline global --importance I --max-pruning-ratio C` at the search config's budget, scored
with the search's own reward (the same evaluator, so the same KD steps and validation subset) and on the full
test split before any long fine-tune. The best importance by the search reward is the one the searcher
comparison fine-tunes (issue 19).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rows import page_head, read_rows, write_whole
from script_args import run_script

from agents.config import load_config
from agents.search import evaluation_settings, load_teacher_and_data
from amc.checkpoint import load_checkpoint
from amc.cost.budget import Budget
from amc.cost.latency import resolve_round_to
from amc.cost.measured import cost_ratios
from amc.cost.predicted import CostModel
from amc.errors import AmcError
from amc.evaluate.baselines import GLOBAL_IMPORTANCES, check_global_settings, global_pruning
from amc.evaluate.evaluator import CandidateEvaluator
from amc.train.loop import evaluate_accuracy


@dataclass
class Args:
    command: str
    config: str = "experiments/configs/resnet20_c10_flops30.yaml"
    importances: list[str] = field(default_factory=lambda: list(GLOBAL_IMPORTANCES))
    caps: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.8, 0.9, 0.95])
    """max_pruning_ratio: the most of any one unit's channels that may be removed."""
    results: str = "experiments/results/global_caps.json"


def run(args: Args) -> None:
    for importance in args.importances:  # bad names and caps fail here, not as result rows
        for cap in args.caps:
            check_global_settings(importance, cap)
    cfg = load_config(args.config)
    blob = load_checkpoint(cfg.teacher)
    teacher, data = load_teacher_and_data(cfg, blob)
    cost_model = CostModel(teacher, data.input_shape)
    evaluator = CandidateEvaluator(teacher, data, evaluation_settings(cfg))
    path = Path(args.results)
    rows = json.loads(path.read_text()) if path.exists() else []
    done = {(r["importance"], r["cap"]) for r in rows}
    for importance in args.importances:
        for cap in args.caps:
            if (importance, cap) in done:
                continue
            started = time.perf_counter()
            try:
                policy = global_pruning(teacher, data.input_shape, cost_model, Budget.parse(cfg.env.budget),
                                        importance=importance, max_pruning_ratio=cap, data=data,
                                        round_to=resolve_round_to(cfg.env.round_to))  # fmt: skip
            except AmcError as exc:  # the cap cannot reach the budget: a result too
                rows.append({"importance": importance, "cap": cap, "error": str(exc)})
            else:
                seconds = time.perf_counter() - started
                evaluation = evaluator.evaluate(policy)
                student = evaluator.build_student(policy).cpu()
                keep = sorted(policy.keep_ratios.values())
                rows.append({
                    "importance": importance, "cap": cap,
                    "flops_ratio": cost_ratios(student, teacher, data.input_shape)["flops_ratio"],
                    "search_reward_accuracy": evaluation.accuracy,
                    "test_accuracy_noft": evaluate_accuracy(student, data, "test"),
                    "min_keep": keep[0], "units_below_25pct": sum(k < 0.25 for k in keep), "units": len(keep),
                    "prune_seconds": seconds, "keep_ratios": policy.keep_ratios,
                })  # fmt: skip
            path.write_text(json.dumps(rows, indent=1) + "\n")
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "keep_ratios"}), flush=True)


def report(args: Args) -> None:
    path = Path(args.results)
    rows = read_rows(path, "global_caps_c10.py run")
    lines = page_head(
        "global_caps_c10.py",
        path,
        "Global pruning: importance and per-layer cap (ResNet-20, CIFAR-10)",
        "Each row is `amc baseline global` at the budget of `experiments/configs/resnet20_c10_flops30.yaml`; "
        "reward = the search's own score (val accuracy after BN recalibration and its KD steps, 1,000 "
        "images); test = the full test split before the long fine-tune. Cap = `max_pruning_ratio`, the "
        "most of any one unit's channels removed.",
    )
    lines += ["| importance | cap | FLOPs ratio | reward acc % | test acc % (no FT) | smallest keep | units < 25% kept "
             "|",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["importance"], r["cap"])):
        if "error" in r:
            lines.append(f"| {r['importance']} | {r['cap']} | cannot meet the budget | – | – | – | – |")
            continue
        lines.append(f"| {r['importance']} | {r['cap']} | {r['flops_ratio']:.3f} | "
                     f"{100 * r['search_reward_accuracy']:.2f} | {100 * r['test_accuracy_noft']:.2f} | "
                     f"{r['min_keep']:.3f} | {r['units_below_25pct']} of {r['units']} |")  # fmt: skip
    scored = [r for r in rows if "error" not in r]
    if scored:
        best = max(scored, key=lambda r: r["search_reward_accuracy"])
        lines += ["", f"**Best by the search reward:** `{best['importance']}` with cap {best['cap']} "
                  f"({100 * best['search_reward_accuracy']:.2f}% reward accuracy, "
                  f"{100 * best['test_accuracy_noft']:.2f}% test before fine-tuning)."]  # fmt: skip
    out = path.with_suffix(".md")
    write_whole(out, "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    commands = {"run": run, "report": report}
    run_script(lambda args: commands[args.command](args), Args, __doc__, list(commands))
