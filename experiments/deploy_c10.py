"""Fast where it is deployed (issue 31): ResNet-20 / CIFAR-10 students measured in the runtime they ship to.

    python experiments/deploy_c10.py tables --targets openvino-int8-b64 openvino-int8-b1
    python experiments/deploy_c10.py run --rows teacher:openvino-int8-b64 floor:openvino-int8-b64 \\
        uniform:openvino-int8-b64:0.8:0 ddpg-removal:openvino-int8-b64:0.5:0
    python experiments/deploy_c10.py report

A target is RUNTIME-PRECISION-bBATCH, always one thread. A row is METHOD:TARGET[:BUDGET[:SEED]]: the budget is a
latency ratio of the teacher deployed at the same target (int8 in int8), so pruning must pay on top of
quantization; the seed is the fine-tune's (and a search's).

- `teacher`: the teacher itself at the target; `floor`: the teacher with every unit cut to its minimum (latency only:
  how fast a network of that depth can go there).
- `uniform`, `global-taylor`: one-shot policies meeting the budget as the target's latency table predicts it.
- `fastnas`: NVIDIA ModelOpt's FastNAS (the peer), its FLOPs target bisected to the same measured latency.
- `ddpg`, `ddpg-removal`: amc's search (channel, or removal+channel) under that budget.

Every student but the teacher and the floor gets the 15-epoch KD fine-tune, then is exported, quantized (int8:
calibrated on 256 training images) and measured in the runtime: test accuracy from the runtime's own outputs, and
latency timed alternately with the fp32 teacher and the teacher at the target precision (amc.deploy.timing's protocol).
Latency tables are measured here, per CPU (`tables`, reused by `run`). Rows merge into
experiments/results/deploy.json; `report` writes deploy.md from those rows alone.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from fastnas_peer import fastnas_student
from rows import (
    finetune_row,
    interval_text,
    keyed_folder,
    mean_sd,
    merge_row,
    paired,
    parse_target,
    read_rows,
    search_in,
    search_settings,
    write_readme_block,
    write_whole,
)
from script_args import run_script

from agents.config import SearchConfig, load_config
from agents.search import evaluation_settings
from amc.checkpoint import load_checkpoint
from amc.commands.common import load_data_for
from amc.commands.profile_latency import ProfileLatencyConfig, profile_latency_command
from amc.compress.policy import CompressionPolicy
from amc.compress.student import model_from_checkpoint, save_student
from amc.cost.budget import Budget
from amc.cost.latency import load_latency_table
from amc.cost.measured import count_macs
from amc.cost.predicted import CostModel
from amc.deploy.deployment import calibration_images, deploy, runtime_accuracy, time_deployed
from amc.deploy.runtimes import Target
from amc.errors import AmcError
from amc.evaluate.baselines import global_pruning, uniform
from amc.evaluate.evaluator import CandidateEvaluator

ONE_SHOT = ("uniform", "global-taylor", "fastnas")
SEARCHES = {"ddpg": "channel", "ddpg-removal": "removal+channel"}
RETIRED = ("fastnas-predicted",)
"""Methods whose rows stay on the page but are made no more: FastNAS bisected on the table's predicted latency."""
README_BLOCK = ("<!-- deploy: written by experiments/deploy_c10.py report -->", "<!-- /deploy -->")
SHOWN = ("method", "runtime", "batch", "budget", "seed", "acc_test", "latency_vs_teacher", "speedup_vs_fp32_teacher")
METHODS = ("teacher", "floor", *ONE_SHOT, *SEARCHES)
TARGET_SPEEDUP = {64: 4.0, 1: 2.5}  # issue 31: over the fp32 teacher in the same runtime, within 1.0 point


@dataclass
class Args:
    command: str
    targets: list[str] = field(default_factory=lambda: ["openvino-int8-b64", "openvino-int8-b1"])
    rows: list[str] = field(default_factory=list)
    teacher: str = "experiments/teachers/resnet20_cifar10.pt"
    data_dir: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    config: str = "experiments/configs/resnet20_c10_flops30.yaml"
    """The search settings (reward, episodes, KD steps); budget, mode, table and runtime are the row's."""
    episodes: int = 400
    workers: int = 2
    finetune_epochs: int = 15
    finetune_threads: int = 2
    fastnas_divisor: int = 8
    """ModelOpt FastNAS's channel divisor (its default of 32 cannot prune ResNet-20's 16-channel layers)."""
    table_students: int = 90
    table_check: int = 30
    out_dir: str = "runs/deploy"
    results: str = "experiments/results/deploy.json"
    readme: str = "README.md"
    """README whose deploy block `report` rewrites (left alone where it has none)."""
    shipped: str = "experiments/configs/resnet20_c10_deploy_openvino_int8.yaml"
    """The config users are pointed to: its searcher is the one `report` pairs against the others."""


def table_path(args: Args, target_text: str) -> Path:
    return Path(args.out_dir) / "tables" / f"{target_text}.json"


def tables(args: Args) -> None:
    for text in args.targets:
        target, path = parse_target(text), table_path(args, text)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        result = profile_latency_command(ProfileLatencyConfig(
            model=args.teacher, out=str(path), runtime=target.runtime, runtime_precision=target.precision,
            batch_size=target.batch, threads=1, students=args.table_students, check=args.table_check,
        ))  # fmt: skip
        print(json.dumps({k: result[k] for k in ("out", "round_to", "median_error", "p90_error")}), flush=True)


@dataclass
class Row:
    method: str
    target_text: str
    budget: float
    seed: int
    args: Args

    @classmethod
    def parse(cls, text: str, args: Args) -> Row:
        parts = text.split(":")
        try:
            method, target = parts[0], parts[1]
            budget = float(parts[2]) if len(parts) > 2 else 1.0
            seed = int(parts[3]) if len(parts) > 3 else 0
        except (IndexError, ValueError):
            raise AmcError(f"row {text!r} must be METHOD:TARGET[:BUDGET[:SEED]]") from None
        if method not in METHODS:
            raise AmcError(f"row {text!r}: METHOD must be one of {', '.join(METHODS)}")
        parse_target(target)
        return cls(method, target, budget, seed, args)

    @property
    def target(self) -> Target:
        return parse_target(self.target_text)

    def search_config(self) -> SearchConfig:
        t = self.target
        overrides = [f"budget=latency={self.budget}", f"mode={SEARCHES[self.method]}", f"seed={self.seed}",
                     f"latency_table={table_path(self.args, self.target_text)}", f"runtime={t.runtime}",
                     f"runtime_precision={t.precision}", f"episodes={self.args.episodes}",
                     f"workers={self.args.workers}", f"teacher={self.args.teacher}",
                     f"data_dir={self.args.data_dir}"]  # fmt: skip
        return load_config(self.args.config, overrides)

    @property
    def settings(self) -> dict:
        settings = {"method": self.method, "target": self.target_text, "budget": self.budget, "seed": self.seed,
                    "finetune_epochs": self.args.finetune_epochs}  # fmt: skip
        if self.method in SEARCHES:
            settings["search"] = search_settings(self.search_config())
        if self.method == "fastnas":
            settings["fastnas_divisor"] = self.args.fastnas_divisor
            settings["fastnas_latency"] = "measured"  # bisected on the runtime's timing (rows before: the table's)
        return settings

    @property
    def folder(self) -> Path:
        name = f"{self.method}-{self.target_text}-{self.budget:g}-s{self.seed}"
        return keyed_folder(self.args.out_dir, name, self.settings)


def one_shot_student(row: Row, teacher_blob: dict, teacher, data, table) -> tuple[Path, dict]:
    """Uniform, global Taylor or the floor at the table's rounding, built as a search builds its final student;
    or ModelOpt FastNAS's subnet (experiments/fastnas_peer.py)."""
    path, report_path = row.folder / "student.pt", row.folder / "student.json"
    if report_path.exists():
        return path, json.loads(report_path.read_text())
    started = time.perf_counter()
    cost_model = CostModel(teacher, data.input_shape).with_latency(table)
    budget, record = Budget(latency=row.budget), {}
    if row.method == "fastnas":
        student, policy, record = fastnas_student(
            teacher,
            data,
            cost_model,
            budget,
            divisor=row.args.fastnas_divisor,
            measured_latency=measured_ratio(row.target, teacher, data, table),
        )
    else:
        if row.method == "floor":
            policy = floor_policy(cost_model, table)
        elif row.method == "uniform":
            policy = uniform(cost_model, budget, round_to=table.round_to)
        else:
            policy = global_pruning(teacher, data.input_shape, cost_model, budget, importance="taylor", data=data,
                                    round_to=table.round_to)  # fmt: skip
        cfg = load_config(row.args.config, [f"teacher={row.args.teacher}"])
        student = CandidateEvaluator(teacher, data, evaluation_settings(cfg)).build_student(policy).cpu()
    predicted = cost_model.policy_ratios(policy)
    report = {"predicted": predicted, "search_minutes": (time.perf_counter() - started) / 60, **record}
    row.folder.mkdir(parents=True, exist_ok=True)
    save_student(path, student, teacher_blob, policy, metrics=predicted)
    report_path.write_text(json.dumps(report, indent=1))
    return path, report


def measured_ratio(target, teacher, data, table):
    """A function timing a student against the teacher at `target`, alternately: the student's latency over the
    teacher's (what a latency budget in the runtime measures)."""
    calibration = calibration_images(data) if target.precision == "int8" else None
    activation = table.activation_type or "auto"

    def ratio(student) -> float:
        with tempfile.TemporaryDirectory() as folder:
            models = {name: deploy(model.eval(), data.input_shape, target, folder, calibration=calibration,
                                   activation_type=activation, name=name)
                      for name, model in (("teacher", teacher), ("student", student))}  # fmt: skip
            timings = time_deployed(models, data.input_shape)
        return timings["student"].median_ms / timings["teacher"].median_ms

    return ratio


def floor_policy(cost_model: CostModel, table) -> CompressionPolicy:
    """Every unit cut to its least (one multiple of the table's rounding), no block removed."""
    return CompressionPolicy(keep_ratios=dict.fromkeys(cost_model.channels, 0.0), round_to=table.round_to)


def least_channel_latency(teacher, input_shape, table) -> float:
    """The latency ratio, as the table predicts it, with every unit cut to its least and no block removed."""
    cost_model = CostModel(teacher, input_shape).with_latency(table)
    return cost_model.policy_ratios(floor_policy(cost_model, table))["latency"]


def searched_student(row: Row) -> tuple[Path, dict]:
    results = search_in(row.folder, row.search_config())
    return Path(results["run_dir"]) / "student.pt", {
        "search_minutes": results["search_minutes"], "episodes": results["episodes"],
        "best_reward": results["best_reward"], "predicted": results["predicted"],
    }  # fmt: skip


def measure(row: Row, student: torch.nn.Module | None, teacher, data, table) -> dict:
    """The student (None: the teacher) at the target, timed alternately with the fp32 teacher and the teacher at
    the target's precision; test accuracy from the runtime's outputs."""
    target, shape = row.target, data.input_shape
    calibration = calibration_images(data) if target.precision == "int8" else None
    fp32 = Target(target.runtime, "fp32", target.batch, 1)
    with tempfile.TemporaryDirectory() as folder:
        models = {"teacher_fp32": deploy(teacher, shape, fp32, folder, name="teacher_fp32")}
        models["teacher_target"] = deploy(teacher, shape, target, folder, calibration=calibration,
                                          activation_type=table.activation_type or "auto", name="teacher")  # fmt: skip
        if student is not None:
            models["student"] = deploy(student, shape, target, folder, calibration=calibration,
                                       activation_type=table.activation_type or "auto", name="student")  # fmt: skip
        measured = models.get("student", models["teacher_target"])
        timings = time_deployed(models, shape)
        accuracy = runtime_accuracy(measured, data, "test") if row.method != "floor" else None
    name = "student" if student is not None else "teacher_target"
    return {
        "latency_ms": timings[name].median_ms, "latency_iqr": timings[name].spread,
        "teacher_fp32_latency_ms": timings["teacher_fp32"].median_ms,
        "teacher_latency_ms": timings["teacher_target"].median_ms,
        "speedup_vs_fp32_teacher": timings["teacher_fp32"].median_ms / timings[name].median_ms,
        "latency_vs_teacher": timings[name].median_ms / timings["teacher_target"].median_ms,
        "acc_test": accuracy, "activation_type": measured.activation_type,
        "load_average": os.getloadavg()[0],  # other work on the machine while it was timed (above the cores: noisy)
    }  # fmt: skip


def run(args: Args) -> None:
    rows = [Row.parse(text, args) for text in args.rows]  # every row checked before hours of work
    blob = load_checkpoint(args.teacher)
    teacher = model_from_checkpoint(blob).eval()
    data = load_data_for(blob, None, args.data_dir, None, checkpoint=args.teacher)
    for row in rows:
        path = table_path(args, row.target_text)
        if not path.exists():
            raise AmcError(f"no latency table for {row.target_text}; run `deploy_c10.py tables --targets "
                           f"{row.target_text}` first")  # fmt: skip
        target = row.target
        table = load_latency_table(path, target.runtime, target.precision)
        result = {"method": row.method, "budget": row.budget, "seed": row.seed, **asdict(target),
                  "folder": str(row.folder)}  # fmt: skip
        if row.method == "teacher":  # its PyTorch fp32 accuracy is the checkpoint's
            student, made, tuned = None, {}, {"accuracy": blob["metrics"]["accuracy"]}
        else:
            if row.method in SEARCHES:
                student_path, made = searched_student(row)
            else:
                try:
                    student_path, made = one_shot_student(row, blob, teacher, data, table)
                except AmcError as exc:  # the method cannot reach the budget there: a result too
                    least = least_channel_latency(teacher, data.input_shape, table)
                    cpu = {"cpu": table.target["cpu"], "cpu_flags": table.target["cpu_flags"]}
                    merge_row(args.results, {**result, "error": str(exc), "least_predicted_latency": least, **cpu})
                    print(json.dumps({"method": row.method, "target": row.target_text, "error": str(exc)}))
                    continue
            tuned = {}
            if row.method != "floor":
                tuned = finetune_row(
                    row.folder,
                    student_path,
                    row.args.teacher,
                    epochs=row.args.finetune_epochs,
                    seed=row.seed,
                    data_dir=row.args.data_dir,
                    threads=row.args.finetune_threads,
                )
            final = row.folder / "student_ft.pt" if tuned else student_path
            student = model_from_checkpoint(load_checkpoint(final)).eval()
        result.update(measure(row, student, teacher, data, table))
        model = student if student is not None else teacher
        result.update({
            "acc_test_pytorch_fp32": tuned.get("accuracy"),
            "predicted_latency_ratio": made.get("predicted", {}).get("latency"),
            "flops_ratio": count_macs(model, data.input_shape) / count_macs(teacher, data.input_shape),
            "search_minutes": made.get("search_minutes"),
            "finetune_minutes": tuned["finetune_seconds"] / 60 if "finetune_seconds" in tuned else None,
            "round_to": table.round_to, "table_median_error": table.metadata["check"]["median_error"],
            "cpu": table.target["cpu"], "cpu_flags": table.target["cpu_flags"],
            "runtime_version": table.target["runtime_version"], "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        })  # fmt: skip
        merge_row(Path(args.results), result)
        print(json.dumps({k: result[k] for k in SHOWN}), flush=True)


def _machine(row: dict) -> str:
    return f"{row['cpu']} ({', '.join(row['cpu_flags'])})"


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def report(args: Args) -> None:
    path = Path(args.results)
    rows = read_rows(path, "deploy_c10.py run --rows ...")
    cpus = sorted({_machine(r) for r in rows})
    shipped = next(m for m, mode in SEARCHES.items() if mode == load_config(args.shipped).env.mode)
    lines = ["# ResNet-20 / CIFAR-10 where it is deployed", "",
             "Generated by `python experiments/deploy_c10.py report` from deploy.json. One thread. Latency: median "
             "ms per image of alternated runs (amc.deploy.timing: 20 warm-up runs, then 400 runs at batch 1 or 40 at "
             "batch 64 per model). *vs teacher*: the student's latency over the teacher's at the same runtime, "
             "precision and batch (the budget's measure); *vs fp32 teacher*: the fp32 teacher's latency over the "
             "student's. Accuracy: all 10,000 test images, computed from the runtime's outputs, after the 15-epoch KD "
             "fine-tune (PyTorch fp32 beside it). Methods with seeds: mean ± sd over seeds.",
             "", f"Measured on: {'; '.join(cpus)}.", ""]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["runtime"], r["precision"], r["batch"], _machine(r)), []).append(r)
    for (runtime, precision, batch, machine), members in sorted(groups.items()):
        measured = [r for r in members if "error" not in r]
        fp32 = statistics.median(r["teacher_fp32_latency_ms"] for r in measured) if measured else None
        on = f", on {machine}" if len(cpus) > 1 else ""  # rows of several CPUs are never pooled
        lines += [f"## {runtime} {precision}, batch {batch}{on}", "",
                  f"The fp32 teacher in {runtime}: {_fmt(fp32, '.4f')} ms / image (median over this table's rows"
                  f"{_spread(measured)}).", "",
                  *_target_table(measured)]  # fmt: skip
        lines += [""] if any("error" in r for r in members) else []
        lines += _unreachable([r for r in members if "error" in r])
        missed = _missed_budgets(measured)
        lines += ["", *missed] if missed else []
        lines += ["", *_paired_table(measured, shipped)]
    lines += _targets(groups)
    lines += _pareto(groups, path)
    write_readme_block(args.readme, README_BLOCK, _headline(groups))
    out = path.with_suffix(".md")
    write_whole(out, "\n".join(lines))
    print(f"wrote {out}")


def _spread(rows: list[dict]) -> str:
    """The fp32 teacher's range over a table's runs: absolute milliseconds drift between runs on a shared machine,
    so every comparison is a ratio to the teacher timed alternately in the same run."""
    values = [r["teacher_fp32_latency_ms"] for r in rows]
    if len(values) < 2 or max(values) < 1.05 * min(values):
        return ""
    return (f"; from {min(values):.4f} to {max(values):.4f} in different runs, so compare the ratios, each measured "
            f"against the teacher timed alternately in its own run")  # fmt: skip


def _headline(groups: dict[tuple, list[dict]]) -> list[str]:
    """Per target: the fp32 and the quantized teacher, and amc's searched students (mean over seeds, per budget)."""
    lines = ["| target (1 thread) | model | test acc in the runtime | latency vs the int8 teacher | × the fp32 teacher "
             "there |", "|---|---|---|---|---|"]  # fmt: skip
    for (runtime, precision, batch, _), rows in sorted(groups.items()):
        teacher = next((r for r in rows if r["method"] == "teacher" and "error" not in r), None)
        if teacher is None:
            continue
        target = f"{runtime} {precision}, batch {batch}"
        lines.append(f"| {target} | fp32 teacher | {100 * teacher['acc_test_pytorch_fp32']:.2f}% (PyTorch) | "
                     f"{teacher['speedup_vs_fp32_teacher']:.3f} | 1.00× |")  # fmt: skip
        lines.append(f"| {target} | {precision} teacher | {100 * teacher['acc_test']:.2f}% | 1.000 | "
                     f"{teacher['speedup_vs_fp32_teacher']:.2f}× |")  # fmt: skip
        searched: dict[tuple, list[dict]] = {}
        for r in rows:
            if r["method"] in SEARCHES and "error" not in r:
                searched.setdefault((r["method"], r["budget"]), []).append(r)
        for (method, budget), seeds in sorted(searched.items(), key=lambda kv: -kv[0][1]):
            lines.append(f"| {target} | amc {method} at {budget:g} ({_seeds(seeds)}) | "
                         f"{mean_sd([r['acc_test'] for r in seeds], 100)}% | "
                         f"{statistics.mean(r['latency_vs_teacher'] for r in seeds):.3f} | "
                         f"{statistics.mean(r['speedup_vs_fp32_teacher'] for r in seeds):.2f}× |")  # fmt: skip
    return lines


MISSED_BY = 0.05
"""A method whose measured latency ratio exceeds its budget by more than this is not compared at equal latency."""


def _missed_budgets(rows: list[dict]) -> list[str]:
    """Methods built for a budget whose students measure well above it (mean over seeds)."""
    by_method: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] not in ("teacher", "floor"):
            by_method.setdefault((r["method"], r["budget"]), []).append(r)
    lines = []
    for (method, budget), members in sorted(by_method.items()):
        measured = statistics.mean(r["latency_vs_teacher"] for r in members)
        if measured > budget + MISSED_BY:
            predicted = statistics.mean(r.get("predicted_latency_ratio", float("nan")) for r in members)
            lines.append(f"- {method} at {budget:g} measures {measured:.3f} of the teacher's latency (the table "
                         f"predicted {predicted:.3f}): it is not compared at equal latency")  # fmt: skip
    return lines


def _unreachable(rows: list[dict]) -> list[str]:
    """One line per method and budget that could not be built there, with why (all its seeds in one line)."""
    by_method: dict[tuple, list[dict]] = {}
    for r in rows:
        by_method.setdefault((r["method"], r["budget"]), []).append(r)
    lines = []
    for (method, budget), members in sorted(by_method.items()):
        if method == "fastnas":  # its reason is the bisection's: the fastest subnet it found, measured
            fastest = [re.search(r"keeps ([0-9.]+)", r["error"]) for r in sorted(members, key=lambda r: r["seed"])]
            why = ("its FLOPs target bisected on measured latency, the fastest subnet it found keeps "
                   f"{', '.join(m.group(1) for m in fastest)} of the teacher's latency"
                   if all(fastest) else "; ".join(r["error"] for r in members))  # fmt: skip
        else:
            why = (f"every unit at its least keeps {members[0]['least_predicted_latency']:.3f} of the teacher's "
                   f"latency (predicted by the table)")  # fmt: skip
        seeds = f" ({_seeds(members)})" if len(members) > 1 else ""
        lines.append(f"- {method} cannot reach {budget:g} here{seeds}: {why}")
    return lines


def _paired_table(rows: list[dict], shipped: str) -> list[str]:
    """The shipped searcher minus every other method at the same budget, paired by seed (test accuracy in the
    runtime, points, 95% t interval), beside both methods' measured latency over the teacher's."""
    by_method: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        by_method.setdefault((r["method"], r["budget"]), {})[r["seed"]] = r
    lines = []
    for (method, budget), others in sorted(by_method.items()):
        mine = by_method.get((shipped, budget))
        if method in (shipped, "teacher", "floor") or mine is None:
            continue
        difference = paired(_points(mine), _points(others))
        if difference is None:
            continue
        pairs, mean, half = difference
        lines.append(
            f"| {method} | {budget:g} | {pairs} | {mean:+.2f} | {interval_text(mean, half)} | "
            f"{_mean_of(mine.values(), 'latency_vs_teacher'):.3f} vs "
            f"{_mean_of(others.values(), 'latency_vs_teacher'):.3f} |"
        )
    if not lines:
        return []
    return [f"{shipped} (the shipped searcher) minus each method at the same budget, paired by seed:", "",
            "| method | budget | pairs | accuracy difference (points) | 95% CI | latency vs teacher, "
            f"{shipped} vs method |", "|---|---|---|---|---|---|", *lines, ""]  # fmt: skip


def _points(rows: dict[int, dict]) -> dict[int, float]:
    return {seed: 100 * r["acc_test"] for seed, r in rows.items()}


def _seeds(rows: list) -> str:
    return f"{len(rows)} seed{'s' * (len(rows) > 1)}"


def _mean_of(rows, key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def _targets(groups: dict[tuple, list[dict]]) -> list[str]:
    """Issue 31's targets per target: amc's fastest searched student (mean over seeds) within 1.0 point of the
    fp32 teacher's PyTorch test accuracy, against the fp32 teacher in the same runtime."""
    lines = []
    for (runtime, precision, batch, _), rows in sorted(groups.items()):
        teacher = next((r for r in rows if r["method"] == "teacher" and "error" not in r), None)
        if teacher is None:
            continue
        floor = 100 * teacher["acc_test_pytorch_fp32"] - 1.0
        searched: dict[tuple, list[dict]] = {}
        for r in rows:
            if r["method"] in SEARCHES and "error" not in r:
                searched.setdefault((r["method"], r["budget"]), []).append(r)
        within = {key: seeds for key, seeds in searched.items()
                  if statistics.mean(100 * r["acc_test"] for r in seeds) >= floor}  # fmt: skip
        goal = TARGET_SPEEDUP.get(batch)
        if not within and not searched:
            lines.append(f"| {runtime} {precision}, batch {batch} | no searched student yet | – | – | {goal or '–'}× |")
            continue
        if not within:  # the most accurate miss, for what the target would take
            (method, budget), seeds = max(searched.items(), key=lambda kv: _mean_of(kv[1], "acc_test"))
            wanted = "–" if goal is None else f"{goal}× (missed)"
            lines.append(f"| {runtime} {precision}, batch {batch} | none within 1.0 point; the closest: {method} at "
                         f"{budget:g} ({_seeds(seeds)}) | {mean_sd([r['acc_test'] for r in seeds], 100)}% | "
                         f"{_mean_of(seeds, 'speedup_vs_fp32_teacher'):.2f}× | {wanted} |")  # fmt: skip
            continue
        (method, budget), seeds = max(within.items(), key=lambda kv: _mean_of(kv[1], "speedup_vs_fp32_teacher"))
        speedup = _mean_of(seeds, "speedup_vs_fp32_teacher")
        met = "–" if goal is None else ("met" if speedup >= goal else "missed")
        lines.append(f"| {runtime} {precision}, batch {batch} | {method} at {budget:g} ({_seeds(seeds)}) | "
                     f"{mean_sd([r['acc_test'] for r in seeds], 100)}% | {speedup:.2f}× | "
                     f"{'–' if goal is None else f'{goal}×'} ({met}) |")  # fmt: skip
    if not lines:
        return []
    return [
        "## Targets",
        "",
        "amc's fastest searched student whose mean test accuracy in the runtime is within 1.0 "
        "point of the fp32 teacher's (PyTorch), against the fp32 teacher in the same runtime.",
        "",
        "| target | student | test acc | × the fp32 teacher | target |",
        "|---|---|---|---|---|",
        *lines,
        "",
    ]


def _pareto(groups: dict[tuple, list[dict]], path: Path) -> list[str]:
    """Test accuracy against deployed latency, every measured row, one panel per target: `deploy_pareto.png`. The
    latency is the ratio to the teacher at the same target, timed alternately with it: rows measured at other
    times compare fairly even where the machine's load differed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, [r for r in rows if r.get("acc_test") is not None]) for key, rows in sorted(groups.items())]
    panels = [(key, rows) for key, rows in panels if rows]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, rows) in zip(axes[0], panels, strict=True):
        runtime, precision, batch, _ = key
        for method in sorted({r["method"] for r in rows}):
            mine = [r for r in rows if r["method"] == method]
            ax.plot([r["latency_vs_teacher"] for r in mine], [100 * r["acc_test"] for r in mine], "o", label=method,
                    color=f"C{(*METHODS, *RETIRED).index(method)}")  # fmt: skip
        floor = [r for r in groups[key] if r["method"] == "floor" and "error" not in r]
        if floor:
            ax.axvline(floor[0]["latency_vs_teacher"], color="gray", linestyle=":", label="floor (same depth)")
        ax.set(
            title=f"{runtime} {precision}, batch {batch}",
            xlabel="latency / the teacher's (timed alternately)",
            ylabel="test accuracy (%)",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    image = path.with_name(f"{path.stem}_pareto.png")
    fig.savefig(image, dpi=110)
    plt.close(fig)
    return ["## Accuracy against deployed latency", "", f"![pareto]({image.name})", ""]


def _target_table(rows: list[dict]) -> list[str]:
    floor = next((r for r in rows if r["method"] == "floor"), None)
    lines = ["| method | budget | seeds | test acc (runtime) | test acc (PyTorch fp32) | ms / image (its run) | vs "
             "teacher | vs fp32 teacher | vs floor | FLOPs |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    by_method: dict[tuple, list[dict]] = {}
    for r in rows:
        by_method.setdefault((r["method"], r["budget"]), []).append(r)
    for (method, budget), seeds in sorted(by_method.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        latency = statistics.mean(r["latency_ms"] for r in seeds)
        vs_teacher = statistics.mean(r["latency_vs_teacher"] for r in seeds)
        shown_budget = "–" if method in ("teacher", "floor") else f"{budget:g}"
        lines.append("| " + " | ".join([
            method, shown_budget, str(len(seeds)), mean_sd([r["acc_test"] for r in seeds], 100),
            mean_sd([r["acc_test_pytorch_fp32"] for r in seeds], 100), f"{latency:.4f}",
            f"{vs_teacher:.3f}",
            f"{statistics.mean(r['speedup_vs_fp32_teacher'] for r in seeds):.2f}×",
            _fmt(vs_teacher / floor["latency_vs_teacher"] if floor else None, ".2f"),  # ratios of one run each
            f"{statistics.mean(r['flops_ratio'] for r in seeds):.3f}",
        ]) + " |")  # fmt: skip
    return lines


def main(args: Args) -> None:
    {"tables": tables, "run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    run_script(main, Args, __doc__, commands=["tables", "run", "report"])
