"""vit_tiny on CIFAR-10 at 50% of its FLOPs (issue 28): uniform, global pruning (Taylor, whole heads ranked with
channels), and amc's searcher in `channel` mode (heads and MLP widths) and in `removal+channel` mode (blocks too).
Each row reports test accuracy before and after the 15-epoch KD fine-tune, parameters, FLOPs, and latency in a
runtime (fp32, batch 1, one thread), timed alternately with the teacher.

    python experiments/transformers_c10.py run --rows uniform:0 global-taylor:0 ddpg-channel:0 ddpg-removal+channel:0
    python experiments/transformers_c10.py report

A row is METHOD:SEED. Its folder, runs/transformers/<method>-s<seed>-<digest>/, is keyed by the row's settings and
holds the search (or the one-shot student), student_ft.pt and finetune.json; each stage resumes where it stopped.
Rows merge into experiments/results/transformers.json; `report` writes transformers.md from them alone.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rows import describe, finetune_row, keyed_folder, mean_sd, merge_row, page_head, read_rows, search_in, write_whole
from script_args import run_and_report

from agents.config import load_config
from amc.checkpoint import load_checkpoint
from amc.commands.common import load_data_for
from amc.compress.student import apply_policy, model_from_checkpoint, save_student
from amc.cost.budget import Budget
from amc.cost.measured import count_macs, count_params
from amc.cost.predicted import CostModel
from amc.deploy.deployment import deploy, time_deployed
from amc.deploy.runtimes import Target
from amc.errors import AmcError
from amc.evaluate.baselines import global_pruning, uniform

ONE_SHOT = ("uniform", "global-taylor")
MODES = {"ddpg-channel": "channel", "ddpg-removal+channel": "removal+channel"}
METHODS = (*ONE_SHOT, *MODES)


@dataclass
class Args:
    command: str
    rows: list[str] = field(default_factory=lambda: [f"{method}:0" for method in METHODS])
    """METHOD:SEED; methods: uniform, global-taylor, ddpg-channel, ddpg-removal+channel."""
    teacher: str = "experiments/teachers/vit_tiny_cifar10.pt"
    config: str = "experiments/configs/vit_tiny_c10_flops50.yaml"
    """The searcher's config; the row sets its mode, budget, seed and teacher."""
    flops: float = 0.5
    finetune_epochs: int = 15
    finetune_threads: int = 1
    runtime: str = "openvino"
    """Where latency is measured (fp32, batch 1, one thread)."""
    set: list[str] = field(default_factory=list)
    """Further search config overrides, KEY=VALUE (e.g. episodes=20 for a quick look)."""
    out_dir: str = "runs/transformers"
    results: str = "experiments/results/transformers.json"


def parse_row(text: str) -> tuple[str, int]:
    method, _, seed = text.partition(":")
    if method not in METHODS or not seed.isdigit():
        raise AmcError(f"row {text!r} is not METHOD:SEED; methods: {', '.join(METHODS)}")
    return method, int(seed)


def search_config(method: str, seed: int, args: Args):
    return load_config(args.config, [f"mode={MODES[method]}", f"budget=flops={args.flops}", f"seed={seed}",
                                     f"teacher={args.teacher}", *args.set])  # fmt: skip


def one_shot_student(method: str, seed: int, args: Args, folder: Path) -> Path:
    """The uniform or global-Taylor student, built once (its fine-tune seed is the row's), with the seconds its
    policy and build took."""
    path = folder / "student.pt"
    if not path.exists():
        started = time.perf_counter()
        blob = load_checkpoint(args.teacher)
        teacher = model_from_checkpoint(blob)
        data = load_data_for(blob, None, None, None, checkpoint=args.teacher)
        shape, budget = data.input_shape, Budget(flops=args.flops)
        # the searcher's units: with the config's `embedding` (off: heads and MLP widths), as the DDPG rows
        cost_model = CostModel(teacher, shape, embedding=load_config(args.config, args.set).env.embedding)
        if method == "uniform":
            policy = uniform(cost_model, budget)
        else:
            policy = global_pruning(teacher, shape, cost_model, budget, importance="taylor", data=data)
        student = apply_policy(teacher, policy, shape)
        folder.mkdir(parents=True, exist_ok=True)
        save_student(path, student, blob, policy, metrics={"seconds": time.perf_counter() - started})
    return path


def latency_vs_teacher(student_path: Path, args: Args) -> dict:
    teacher_blob = load_checkpoint(args.teacher)
    shape = tuple(teacher_blob["dataset"]["input_shape"])
    target = Target(args.runtime, "fp32", 1, 1)
    with tempfile.TemporaryDirectory() as folder:
        models = {"student": model_from_checkpoint(load_checkpoint(student_path)),
                  "teacher": model_from_checkpoint(teacher_blob)}  # fmt: skip
        deployed = {name: deploy(model, shape, target, folder, name=name) for name, model in models.items()}
        timings = time_deployed(deployed, shape)
    return {"latency_ms": timings["student"].median_ms, "teacher_latency_ms": timings["teacher"].median_ms,
            "latency_vs_teacher": timings["student"].median_ms / timings["teacher"].median_ms}  # fmt: skip


def run_row(method: str, seed: int, args: Args) -> dict:
    settings = {"method": method, "seed": seed, "teacher": args.teacher, "flops": args.flops,
                "finetune_epochs": args.finetune_epochs, "set": args.set}  # fmt: skip
    if method in MODES:
        settings["config"] = json.loads(json.dumps(search_config(method, seed, args), default=str))
    folder = keyed_folder(args.out_dir, f"{method}-s{seed}", settings)
    folder.mkdir(parents=True, exist_ok=True)
    if method in ONE_SHOT:
        student = one_shot_student(method, seed, args, folder)
        search_seconds = load_checkpoint(student)["metrics"]["seconds"]
    else:
        searched = search_in(folder, search_config(method, seed, args))
        student, search_seconds = Path(searched["run_dir"]) / "student.pt", 60 * searched["search_minutes"]
    tuned = finetune_row(folder, student, args.teacher, epochs=args.finetune_epochs, seed=seed,
                         threads=args.finetune_threads)  # fmt: skip
    blob = load_checkpoint(args.teacher)
    shape = tuple(blob["dataset"]["input_shape"])
    teacher, final = model_from_checkpoint(blob), model_from_checkpoint(load_checkpoint(folder / "student_ft.pt"))
    return {
        "folder": str(folder), "method": method, "seed": seed, "budget": args.flops,
        "finetune_epochs": args.finetune_epochs, "finetune_settings": tuned.get("settings"),
        "acc_test_before_finetune": tuned["accuracy_before_finetune"], "acc_test": tuned["accuracy"],
        "teacher_acc_test": blob.get("metrics", {}).get("accuracy"),
        "params": count_params(final), "params_ratio": count_params(final) / count_params(teacher),
        "flops_ratio": count_macs(final, shape) / count_macs(teacher, shape),
        "heads": {n: m.num_heads for n, m in final.named_modules() if isinstance(getattr(m, "num_heads", None), int)},
        "search_seconds": search_seconds, "runtime": args.runtime, "precision": "fp32", "batch": 1, "threads": 1,
        **latency_vs_teacher(folder / "student_ft.pt", args), **describe(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip


def run(args: Args) -> None:
    rows = [parse_row(text) for text in args.rows]  # all checked before anything runs
    torch.set_num_threads(args.finetune_threads)
    for method, seed in rows:
        merge_row(args.results, run_row(method, seed, args))


def report(results: Path) -> None:
    rows = read_rows(results, "transformers_c10.py run")
    lines = page_head(
        "transformers_c10.py", results, "vit_tiny on CIFAR-10 at 50% FLOPs",
        "Test accuracy (the whole test split) before and after the KD fine-tune; parameters and FLOPs as ratios "
        "of the teacher's; latency in the runtime (fp32, batch 1, one thread) over the teacher's, timed "
        "alternately. Methods with several seeds: mean ± sd.",
    )  # fmt: skip
    teacher_acc = next((r["teacher_acc_test"] for r in rows if r.get("teacher_acc_test") is not None), None)
    recipes = sorted({f"{r['finetune_epochs']} epochs of KD" + ("" if not r.get("finetune_settings") else
                      f" ({r['finetune_settings']['optimizer']}, lr {r['finetune_settings']['lr']:g} cosine)")
                      for r in rows})  # fmt: skip
    lines += [f"Fine-tune: {'; '.join(recipes)}."]
    if teacher_acc is not None:
        lines += [f"The teacher: {100 * teacher_acc:.2f}% test."]
    lines += [""]
    lines += ["| method | seeds | before fine-tune | after | params | FLOPs | latency vs teacher | search |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in METHODS:
        group = [r for r in rows if r["method"] == method]
        if not group:
            continue
        lines.append(
            f"| {method} | {len(group)} | {mean_sd([r['acc_test_before_finetune'] for r in group], 100)} "
            f"| {mean_sd([r['acc_test'] for r in group], 100)} "
            f"| {statistics.mean(r['params_ratio'] for r in group):.3f} "
            f"| {statistics.mean(r['flops_ratio'] for r in group):.3f} "
            f"| {statistics.mean(r['latency_vs_teacher'] for r in group):.3f} ({group[0]['runtime']}) "
            f"| {statistics.mean(r['search_seconds'] for r in group) / 60:.1f} min |"
        )
    lines += ["", f"Measured on: {'; '.join(sorted({r['cpu'] for r in rows}))}."]
    write_whole(results.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {results.with_suffix('.md')}")


if __name__ == "__main__":
    run_and_report(run, report, Args, __doc__)
