"""The CIFAR-10 benchmark's row runner: uniform, random search and DDPG (channel, removal+channel,
channel+quantize, latency) on one teacher, each row searched, KD fine-tuned with the same settings, and
measured. `python experiments/report_cifar10.py` turns the rows into cifar10.md.

    python experiments/benchmark_cifar10.py --rows resnet20:ddpg-channel:0.5      # one row (resumable)
    python experiments/benchmark_cifar10.py --rows all                            # every ResNet-20 row
    python experiments/benchmark_cifar10.py --rows resnet20:ddpg-channel:0.3 --set finetune_steps=30
    python experiments/benchmark_cifar10.py --latency                             # time every finished row

A row is MODEL:METHOD[:BUDGET]. Its folder, runs/bench/<model>/<method>-<budget>-<digest>/, is keyed by the
row's full settings (search config, overrides, fine-tune epochs), so a row with other settings never reuses an
old result. It holds the search run (search-*), student_ft.pt and row.json; each stage is skipped when its
output exists and resumed when it was interrupted. Finished rows are merged into
experiments/results/cifar10.json (a row replaces the one from the same folder). Latency is timed separately
(`--latency`), on an idle machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from machine import describe
from row_settings import keyed_folder, search_in, search_settings
from script_args import run_script

from agents.config import SearchConfig, load_config
from amc.commands.evaluate import EvaluateConfig, evaluate_checkpoint
from amc.commands.finetune import FinetuneConfig, finetune_command
from amc.errors import AmcError

TEACHERS = {
    "resnet20": "experiments/teachers/resnet20_cifar10.pt",
    "plain20": "experiments/teachers/plain20_cifar10.pt",
}
CONFIGS = {  # method -> (search config, overrides); `{budget}` is filled per row
    "uniform": ("resnet20_c10_flops50.yaml", ["agent=uniform", "budget=flops={budget}"]),
    "random": ("resnet20_c10_flops50.yaml", ["agent=random", "budget=flops={budget}"]),
    "ddpg-channel": ("resnet20_c10_flops50.yaml", ["budget=flops={budget}"]),
    "ddpg-removal+channel": ("resnet20_c10_removal_channel.yaml", ["budget=flops={budget}"]),
    "ddpg-channel+quantize": ("resnet20_c10_channel_quantize_size10.yaml", ["budget=size={budget}"]),
    "ddpg-latency": (  # budget: batch-1 latency ratio predicted by the table (uniform 50% FLOPs student: 0.73)
        "resnet20_c10_flops50.yaml",
        ["budget=latency={budget}", "latency_table=experiments/results/resnet20_lut_b1.json"],
    ),
}
DEFAULT_BUDGET = {"ddpg-channel+quantize": 0.1}
METHODS = ["teacher", *CONFIGS]
LATENCY_THREADS = 1


@dataclass
class Args:
    rows: list[str] = field(default_factory=list)
    """MODEL:METHOD[:BUDGET] ..., or `all` (every ResNet-20 method at its default budget)."""
    set: list[str] = field(default_factory=list)
    """Extra search-config overrides for these rows, KEY=VALUE."""
    latency: bool = False
    """Time every finished row here (on an idle machine)."""
    finetune_epochs: int = 15
    """The same KD fine-tune for every row: amc finetune's defaults (lr 0.05 cosine, alpha 0.9, T 4)."""
    out_dir: str = "runs/bench"
    results: str = "experiments/results/cifar10.json"


@dataclass
class Row:
    model: str
    method: str
    budget: float
    args: Args

    @classmethod
    def parse(cls, text: str, args: Args) -> Row:
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[1] not in METHODS:
            raise AmcError(f"row {text!r} must be MODEL:METHOD[:BUDGET], METHOD one of {', '.join(METHODS)}")
        if parts[0] not in TEACHERS:
            raise AmcError(f"row {text!r}: MODEL is one of {', '.join(TEACHERS)}")
        budget = float(parts[2]) if len(parts) == 3 else DEFAULT_BUDGET.get(parts[1], 0.5)
        return cls(parts[0], parts[1], 1.0 if parts[1] == "teacher" else budget, args)

    @property
    def teacher(self) -> str:
        return TEACHERS[self.model]

    def config(self) -> SearchConfig:
        config, overrides = CONFIGS[self.method]
        sets = [o.format(budget=self.budget) for o in overrides]
        return load_config(f"experiments/configs/{config}", [*sets, f"teacher={self.teacher}", *self.args.set])

    @property
    def settings(self) -> dict:
        search = None if self.method == "teacher" else search_settings(self.config())
        return {"model": self.model, "method": self.method, "budget": self.budget, "search": search,
                "finetune_epochs": self.args.finetune_epochs}  # fmt: skip

    @property
    def folder(self) -> Path:
        return keyed_folder(Path(self.args.out_dir) / self.model, f"{self.method}-{self.budget:g}", self.settings)


def search(row: Row) -> tuple[Path, dict]:
    """The row's search run folder and its results: reused when finished, resumed when interrupted."""
    results = search_in(row.folder, row.config())
    return Path(results["run_dir"]), results


def finetune(row: Row, student: str) -> dict:
    out, done = row.folder / "student_ft.pt", row.folder / "finetune.json"
    if done.exists():
        return json.loads(done.read_text())
    result = finetune_command(FinetuneConfig(student=student, teacher=row.teacher, epochs=row.args.finetune_epochs,
                                             out=str(out), resume=out.exists()))  # fmt: skip
    done.write_text(json.dumps(result, indent=1))
    return result


def costs(student_path: str, teacher_path: str) -> dict:
    from amc.checkpoint import load_checkpoint
    from amc.compress.student import model_from_checkpoint
    from amc.cost.measured import count_macs, count_params, size_bytes

    teacher_blob = load_checkpoint(teacher_path)
    teacher, student = model_from_checkpoint(teacher_blob), model_from_checkpoint(load_checkpoint(student_path))
    shape = tuple(teacher_blob["dataset"]["input_shape"])
    return {
        "flops_ratio": count_macs(student, shape) / count_macs(teacher, shape),
        "params_ratio": count_params(student) / count_params(teacher),
        "size_ratio": size_bytes(student) / size_bytes(teacher),
    }


def latency(student_path: str, teacher_path: str) -> dict:
    """Batch-1/128 latency of the deployable (baked) student, timed alternately with the teacher in this
    process. Run it on an otherwise idle machine (`--latency`), after every row has finished."""
    from amc.checkpoint import load_checkpoint
    from amc.commands.evaluate import alternating_speedup
    from amc.compress.export import bake
    from amc.compress.student import model_from_checkpoint
    from amc.cost.measured import measure_latency

    teacher_blob = load_checkpoint(teacher_path)
    teacher = model_from_checkpoint(teacher_blob)
    deployable = bake(model_from_checkpoint(load_checkpoint(student_path)))
    shape = tuple(teacher_blob["dataset"]["input_shape"])
    row = {
        "latency_ms_b1": measure_latency(deployable, shape, 1, threads=LATENCY_THREADS, repeats=100),
        "latency_ms_b128": measure_latency(deployable, shape, 128, threads=LATENCY_THREADS, repeats=10),
    }
    for batch in (1, 128):
        row[f"speedup_b{batch}"] = (
            1.0 if student_path == teacher_path else
            alternating_speedup(deployable, teacher, shape, batch, threads=LATENCY_THREADS)
        )  # fmt: skip
    return row


def run_row(row: Row) -> dict:
    started = time.time()
    if row.method == "teacher":
        report = evaluate_checkpoint(EvaluateConfig(model=row.teacher))
        result = {"acc_val_noft": report["val_accuracy"], "acc_test_noft": report["accuracy"],
                  "acc_test_ft": report["accuracy"], "acc_val_ft": report["val_accuracy"],
                  "search_minutes": 0.0, "episodes": 0, **costs(row.teacher, row.teacher)}  # fmt: skip
    else:
        run_dir, searched = search(row)
        tuned = finetune(row, str(run_dir / "student.pt"))
        before = searched["student_before_finetune"]
        cfg = row.config()
        result = {
            "acc_val_noft": before["val_accuracy"], "acc_test_noft": before["accuracy"],
            "acc_test_ft": tuned["accuracy"], "acc_val_ft": tuned["val_accuracy"],
            "acc_test_raw": searched["student_without_bn_recalibration"]["test"],
            "search_minutes": searched["search_minutes"], "episodes": searched["episodes"],
            "finetune_minutes": tuned["finetune_seconds"] / 60.0, "run_dir": str(run_dir),
            "search_reward": {"reward": cfg.reward, "eval_samples": cfg.eval_samples,
                              "finetune_steps": cfg.finetune_steps},
            **costs(str(row.folder / "student_ft.pt"), row.teacher),
        }  # fmt: skip
    row.folder.mkdir(parents=True, exist_ok=True)
    result = {"model": row.model, "method": row.method, "budget": row.budget, **result, "folder": str(row.folder),
              "settings": row.settings, "machine": describe(),
              "measured_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    (row.folder / "row.json").write_text(json.dumps(result, indent=1))
    print(f"row {row.model}:{row.method}:{row.budget:g} done in {(time.time() - started) / 60:.1f} min", flush=True)
    return result


def merge(results: Path, new_rows: list[dict]) -> None:
    rows = json.loads(results.read_text()) if results.exists() else []
    folders = {r["folder"] for r in new_rows}
    rows = [r for r in rows if r.get("folder") not in folders] + new_rows
    tmp = results.with_name(results.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(results)


def measure_latencies(args: Args) -> None:
    """Time every row whose folder is on this machine; the rows keep their other figures."""
    results = Path(args.results)
    rows = json.loads(results.read_text()) if results.exists() else []
    for row in rows:
        folder = Path(row.get("folder", ""))
        student = TEACHERS[row["model"]] if row["method"] == "teacher" else folder / "student_ft.pt"
        if row["method"] != "teacher" and not Path(student).exists():
            continue
        print(f"timing {row['model']} {row['method']} {row['budget']:g}", flush=True)
        row.update(latency(str(student), TEACHERS[row["model"]]), latency_measured_at=time.strftime("%Y-%m-%d %H:%M"),
                   latency_machine=describe())  # fmt: skip
        merge(results, [row])


def main(args: Args) -> None:
    names = [f"resnet20:{m}" for m in METHODS] if args.rows == ["all"] else args.rows
    for name in names:
        row = Row.parse(name, args)
        if not Path(row.teacher).is_file():
            raise AmcError(f"no teacher for {row.model} at {row.teacher}; train one with `amc train-teacher`")
        merge(Path(args.results), [run_row(row)])
    if args.latency:
        measure_latencies(args)
    print("rows merged; `python experiments/report_cifar10.py` writes cifar10.md")


if __name__ == "__main__":
    run_script(main, Args, __doc__)
