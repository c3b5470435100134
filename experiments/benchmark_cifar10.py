"""The CIFAR-10 benchmark's row runner: uniform, random search and DDPG (channel, removal+channel,
channel+quantize, latency) on one teacher, each row searched, KD fine-tuned with the same settings, and
measured; `report` turns the rows into cifar10.md and its plots (every figure from the rows).

    python experiments/benchmark_cifar10.py run --rows resnet20:ddpg-channel:0.5      # one row (resumable)
    python experiments/benchmark_cifar10.py run --rows all                            # every ResNet-20 row
    python experiments/benchmark_cifar10.py run --rows resnet20:ddpg-channel:0.3 --set finetune_steps=30
    python experiments/benchmark_cifar10.py run --latency                             # time every finished row
    python experiments/benchmark_cifar10.py report                                    # cifar10.md

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

import numpy as np
from plots import plot_reward_curves
from rows import describe, finetune_row, keyed_folder, merge_row, search_in, search_settings
from script_args import run_script

from agents.config import SearchConfig, load_config
from amc.commands.evaluate import EvaluateConfig, evaluate_checkpoint
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
    command: str = "run"
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
        tuned = finetune_row(row.folder, run_dir / "student.pt", row.teacher, epochs=row.args.finetune_epochs)
        before = searched["student_before_finetune"]
        cfg = row.config()
        result = {
            "acc_val_noft": before["val_accuracy"], "acc_test_noft": before["accuracy"],
            "acc_test_ft": tuned["accuracy"], "acc_val_ft": tuned["val_accuracy"],
            "acc_test_raw": searched["student_without_bn_recalibration"]["test"],
            "search_minutes": searched["search_minutes"], "episodes": searched["episodes"],
            "finetune_minutes": tuned["finetune_seconds"] / 60.0, "run_dir": str(run_dir),
            "search_reward": {"reward": cfg.env.reward, "eval_samples": cfg.evaluation.eval_samples,
                              "finetune_steps": cfg.evaluation.finetune_steps},
            **costs(str(row.folder / "student_ft.pt"), row.teacher),
        }  # fmt: skip
    row.folder.mkdir(parents=True, exist_ok=True)
    result = {"model": row.model, "method": row.method, "budget": row.budget, **result, "folder": str(row.folder),
              "settings": row.settings, "machine": describe(),
              "measured_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    (row.folder / "row.json").write_text(json.dumps(result, indent=1))
    print(f"row {row.model}:{row.method}:{row.budget:g} done in {(time.time() - started) / 60:.1f} min", flush=True)
    return result


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
        merge_row(results, row)


# the report: cifar10.md and its plots, from the rows alone


BUDGET_KIND = {"ddpg-channel+quantize": "size", "ddpg-latency": "latency"}


PAPER = """\
## The AMC paper's CIFAR-10 figures (Table 2, 50% FLOPs), beside ours

| model | policy | acc. w/o FT (val / test) | acc. after FT | status |
|---|---|---|---|---|
| Plain-20 (90.5) | uniform (handcraft) | 84.0 / 83.9 | 89.7 | unverified |
| Plain-20 (90.5) | AMC (R_Err) | 86.4 / 86.0 | **90.2 (−0.3)** | FT: Distiller README; w/o FT: unverified |
| ResNet-56 (92.8) | uniform (handcraft) | 87.5 / 87.4 | 89.8 | unverified |
| ResNet-56 (92.8) | AMC (R_Err) | 90.2 / 90.1 | **91.9 (−0.9)** | FT: Distiller, Torch-Pruning; w/o FT: unverified |

"Unverified": read from secondary summaries of the paper (../shared/design/reference-methods.md), not
checked against the PDF. The paper's teachers were trained on the PNG CIFAR-10 on GPUs, and its "w/o FT"
students were pruned with AMC's least-squares reconstruction; ours is a 75-epoch CPU ResNet-20 on the
JPEG-75 copy ({teacher} test) with BN recalibration. Compare the *drops* and the *gaps to uniform*, not the
absolute accuracies.
"""


COMMANDS = """\
## How the rows were produced

```bash
python experiments/benchmark_cifar10.py --rows resnet20:teacher resnet20:uniform resnet20:random \\
    resnet20:ddpg-channel resnet20:ddpg-removal+channel resnet20:ddpg-channel+quantize   # one row per job is fine
python experiments/benchmark_cifar10.py --rows resnet20:uniform:0.3 resnet20:ddpg-latency:0.73
python experiments/benchmark_cifar10.py --rows resnet20:random:0.3 resnet20:ddpg-channel:0.3 --set finetune_steps=30
python experiments/benchmark_cifar10.py --latency   # on an idle machine, after every row
```

Each row runs `amc search --config experiments/configs/<config>.yaml --set budget=… --set seed=0` (400 episodes,
100 warm-up, σ decay 0.99, reward = accuracy on 1,000 val images after BN recalibration; the 30% rows add
`--set finetune_steps=30`: 30 KD steps per candidate before that evaluation, the "search reward" column), then
`amc finetune --epochs 15` on the search's student, then costs; `--latency` times the baked student against
the teacher, alternately, in one process. Machines: {machine}. Fine-tunes and searches ran one thread each,
two at a time."""


def machines(rows: list[dict]) -> str:
    """The machines the rows name (rows from before rows recorded theirs: a 2-core x86-64 CPU, no GPU)."""
    named = sorted({f"{m['cpu']} ({m['cores']} cores, torch {m['torch']})" for r in rows if (m := r.get("machine"))})
    return "; ".join(named) or "a 2-core x86-64 CPU, no GPU (the rows predate per-row machine records)"


def load_rows(results: Path) -> list[dict]:
    rows = json.loads(results.read_text()) if results.exists() else []
    order = {m: i for i, m in enumerate(METHODS)}  # the runner's order
    kinds = {"FLOPs": 0, "size": 1, "latency": 2}

    def key(r: dict) -> tuple:
        if r["method"] == "teacher":
            return r["model"], -1, 0.0, 0
        return r["model"], kinds[BUDGET_KIND.get(r["method"], "FLOPs")], -r["budget"], order.get(r["method"], 99)

    return sorted(rows, key=key)


def _num(row: dict, key: str, fmt: str) -> str:
    return fmt.format(row[key]) if key in row else "–"


def write_report(rows: list[dict], out: Path) -> None:
    """The page at `out`, its plots and the pages it quotes beside it."""
    lines = [
        "# CIFAR-10 benchmark",
        "",
        "Generated by `python experiments/benchmark_cifar10.py report` from the rows in [cifar10.json](cifar10.json),",
        "which `experiments/benchmark_cifar10.py` writes. Accuracies in %, on the 10k test split and the 5k val",
        "split held out from train. 'no FT' is the searched student after BatchNorm recalibration, 'FT' after the",
        f"same {Args().finetune_epochs}-epoch KD fine-tune for every row (α 0.9, T 4, SGD lr 0.05 cosine,",
        f"bf16). Latency: the deployable student (quantizers and masks baked into the weights), {LATENCY_THREADS}",
        "CPU thread, timed alternately with the teacher in one process (speedup = teacher / student).",
        "",
        "| model | method | budget | val no FT | test no FT | test FT | Δ teacher | FLOPs | params | size | "
        "b1 ms | b128 ms/img | speedup b1 | speedup b128 | search reward | search min | episodes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    teachers = {r["model"]: r["acc_test_ft"] for r in rows if r["method"] == "teacher"}
    for r in rows:
        delta = r["acc_test_ft"] - teachers.get(r["model"], np.nan)
        kind = BUDGET_KIND.get(r["method"], "FLOPs")
        budget = "–" if r["method"] == "teacher" else f"{kind} {r['budget']:g}"
        cells = [
            r["model"], r["method"], budget, f"{100 * r['acc_val_noft']:.2f}", f"{100 * r['acc_test_noft']:.2f}",
            f"**{100 * r['acc_test_ft']:.2f}**", f"{100 * delta:+.2f}", f"{r['flops_ratio']:.3f}",
            f"{r['params_ratio']:.3f}", f"{r['size_ratio']:.3f}", _num(r, "latency_ms_b1", "{:.2f}"),
            _num(r, "latency_ms_b128", "{:.3f}"), _num(r, "speedup_b1", "{:.2f}×"), _num(r, "speedup_b128", "{:.2f}×"),
            reward_label(r), f"{r['search_minutes']:.1f}", str(r["episodes"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *targets(rows), "", *search_gains(rows), "", *answer(rows)]
    plots = _plots(rows, out.parent)
    teacher = next((f"{100 * r['acc_test_ft']:.2f}%" for r in rows if r["method"] == "teacher"
                    and r["model"] == "resnet20"), "–")  # fmt: skip
    lines += ["", *plots, "", COMMANDS.format(machine=machines(rows)), "", PAPER.format(teacher=teacher)]
    lines += ["", "How well each search reward ranks students after the fine-tune: "
              "[reward_proxies.md](reward_proxies.md) (experiments/reward_proxies.py)."]  # fmt: skip
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


def answer(rows: list[dict]) -> list[str]:
    """The plain answer, from the rows: what the search gains over uniform and random search after the same
    fine-tune, at each budget."""
    by = {(r["model"], r["method"], r["budget"]): r for r in rows}
    out = ["**The answer, in plain words** (regenerated from the rows):", ""]
    for (model, method, budget), ddpg in by.items():
        if method not in ("ddpg-channel", "ddpg-latency"):
            continue
        reference = 0.5 if method == "ddpg-latency" else budget
        label = f"batch-1 latency {budget:g}" if method == "ddpg-latency" else f"{budget:.0%} FLOPs"
        uniform, random = by.get((model, "uniform", reference)), by.get((model, "random", budget))
        parts = []
        for name, other in (("uniform", uniform), ("random search", random if method == "ddpg-channel" else None)):
            if other:
                after = 100 * (ddpg["acc_test_ft"] - other["acc_test_ft"])
                before = 100 * (ddpg["acc_test_noft"] - other["acc_test_noft"])
                parts.append(f"{after:+.2f} points against {name} after fine-tuning ({before:+.2f} before)")
        if parts:
            out.append(f"- {model} at {label} ({reward_label(ddpg)} reward): DDPG {'; '.join(parts)}.")
    out += ["", "Every row here is one seed; how far the fine-tune alone moves a student, and the searchers "
            "compared over seeds, are in [searchers.md](searchers.md)."]  # fmt: skip
    return out


def reward_label(row: dict) -> str:
    """What the row's search rewarded: accuracy after BN recalibration, or after N KD steps per candidate."""
    if row["method"] in ("teacher", "uniform"):
        return "–"
    steps = (row.get("search_reward") or {}).get("finetune_steps") or 0
    return f"KD {steps} steps" if steps else "BN recal"


def search_gains(rows: list[dict]) -> list[str]:
    """After the same fine-tune, what each search gained over uniform (and random search) at equal cost."""
    by = {(r["model"], r["method"], r["budget"]): r for r in rows}
    out = [
        "## Where the search pays off after fine-tuning",
        "",
        "Test accuracy after the same KD fine-tune, in %; Δ in points. The latency row is compared with the",
        "uniform 50%-FLOPs student, whose batch-1 latency set its budget.",
        "",
        "| model | budget | search reward | uniform | random search | DDPG | DDPG − uniform | DDPG − random "
        "| DDPG − uniform before FT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(row: dict | None) -> str:
        return f"{100 * row['acc_test_ft']:.2f}" if row else "–"

    def gain(a: dict | None, b: dict | None, key: str = "acc_test_ft") -> str:
        return f"{100 * (a[key] - b[key]):+.2f}" if a and b else "–"

    for (model, method, budget), ddpg in by.items():
        if method == "ddpg-channel":
            uniform, random, label = by.get((model, "uniform", budget)), by.get((model, "random", budget)), "FLOPs"
        elif method == "ddpg-latency":
            uniform, random, label = by.get((model, "uniform", 0.5)), None, "latency"
        else:
            continue
        out.append(f"| {model} | {label} {budget:g} | {reward_label(ddpg)} | {pct(uniform)} | {pct(random)} | "
                   f"{pct(ddpg)} | **{gain(ddpg, uniform)}** | {gain(ddpg, random)} | "
                   f"{gain(ddpg, uniform, 'acc_test_noft')} |")  # fmt: skip
    return out


def targets(rows: list[dict]) -> list[str]:
    """The benchmark issue's goals, checked against the ResNet-20 rows that exist."""
    by = {(r["model"], r["method"], r["budget"]): r for r in rows}
    teacher, uniform = by.get(("resnet20", "teacher", 1.0)), by.get(("resnet20", "uniform", 0.5))
    ddpg, random = by.get(("resnet20", "ddpg-channel", 0.5)), by.get(("resnet20", "random", 0.5))
    quant, removal = (
        by.get(("resnet20", "ddpg-channel+quantize", 0.1)),
        by.get(("resnet20", "ddpg-removal+channel", 0.5)),
    )
    out = ["## Targets (ResNet-20)", ""]

    def check(ok: bool, text: str) -> None:
        out.append(f"- {'met' if ok else '**missed**'}: {text}")

    if teacher and ddpg:
        gap = 100 * (teacher["acc_test_ft"] - ddpg["acc_test_ft"])
        check(gap <= 0.5, f"DDPG channel within 0.5 points of the teacher after FT: {gap:.2f} points below")
    if uniform and ddpg:
        before = 100 * (ddpg["acc_test_noft"] - uniform["acc_test_noft"])
        after = 100 * (ddpg["acc_test_ft"] - uniform["acc_test_ft"])
        check(before >= 2, f"DDPG beats uniform by ≥ 2 points before FT: {before:+.2f}")
        check(after >= 0.5, f"DDPG beats uniform by ≥ 0.5 points after FT: {after:+.2f}")
    if random and ddpg:
        after = 100 * (ddpg["acc_test_ft"] - random["acc_test_ft"])
        verdict = "won" if after > 0 else "**lost**"
        out.append(f"- not a target, reported: DDPG against random search after FT: {after:+.2f} (DDPG {verdict})")
    if teacher and quant:
        drop = 100 * (teacher["acc_test_ft"] - quant["acc_test_ft"])
        check(quant["size_ratio"] <= 0.1 + 1e-4 and drop <= 1.0,
              f"channel+quantize ≥ 10× smaller at ≤ 1 point: {1 / quant['size_ratio']:.2f}× smaller, "
              f"{drop:.2f} below")  # fmt: skip
    if teacher and removal:
        drop = 100 * (teacher["acc_test_ft"] - removal["acc_test_ft"])
        check(removal["params_ratio"] <= 1 / 3 and drop <= 1.5,
              f"removal+channel ≥ 3× fewer params at ≤ 1.5 points: {1 / removal['params_ratio']:.2f}× fewer, "
              f"{drop:.2f} below")  # fmt: skip
        if ddpg and "speedup_b1" in removal and "speedup_b1" in ddpg:
            check(removal["speedup_b1"] > ddpg["speedup_b1"],
                  f"removal+channel batch-1 speedup above channel's: {removal['speedup_b1']:.2f}× vs "
                  f"{ddpg['speedup_b1']:.2f}×")  # fmt: skip
    return out + fine_tune_targets(by)


def fine_tune_targets(by: dict) -> list[str]:
    """The fine-tune issue's goals: the 30% FLOPs rows and the latency row, after the same KD fine-tune."""
    out = []
    uniform, random, ddpg = (by.get(("resnet20", m, 0.3)) for m in ("uniform", "random", "ddpg-channel"))
    if uniform and ddpg:
        after = 100 * (ddpg["acc_test_ft"] - uniform["acc_test_ft"])
        out.append(f"- {'met' if after >= 1.0 else '**missed**'}: at 30% FLOPs DDPG beats uniform by ≥ 1.0 point "
                   f"after FT: {after:+.2f}")  # fmt: skip
    if random and ddpg:
        after = 100 * (ddpg["acc_test_ft"] - random["acc_test_ft"])
        out.append(f"- {'met' if after > 0 else '**missed**'}: at 30% FLOPs DDPG beats random search after FT: "
                   f"{after:+.2f}")  # fmt: skip
    latency_rows = [r for (model, method, _), r in by.items() if model == "resnet20" and method == "ddpg-latency"]
    uniform50 = by.get(("resnet20", "uniform", 0.5))
    for row in latency_rows:
        if not uniform50:
            break
        after = 100 * (row["acc_test_ft"] - uniform50["acc_test_ft"])
        measured = ""
        if "latency_ms_b1" in row and "latency_ms_b1" in uniform50:
            measured = f" (measured b1: {row['latency_ms_b1']:.2f} ms vs {uniform50['latency_ms_b1']:.2f} ms)"
        out.append(f"- {'met' if after > 0 else '**missed**'}: at the uniform 50% student's latency, ddpg-latency "
                   f"is more accurate after FT: {after:+.2f}{measured}")  # fmt: skip
    return out


def _plots(rows: list[dict], results: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    curves = {}
    for r in rows:
        state = Path(r.get("run_dir", "")) / "search_state.json"
        if r["method"] in ("random", "ddpg-channel") and state.exists():
            rewards = json.loads(state.read_text())["recorder"]["rewards"]
            curves[f"{r['model']} {r['method']} {r['budget']:g}, {reward_label(r)}"] = rewards
    if curves:
        plot_reward_curves(curves, "DDPG vs random search", results / "cifar10_reward_curves.png")
        out.append("![reward curves](cifar10_reward_curves.png)")
    elif (results / "cifar10_reward_curves.png").exists():  # the run folders are on the machine that ran the rows
        out.append("![reward curves, drawn where the rows ran](cifar10_reward_curves.png)")
    policies = {}
    for r in rows:
        path = Path(r.get("run_dir", "")) / "policy.json"
        if r["method"] in ("uniform", "random", "ddpg-channel") and path.exists():
            policies[f"{r['model']} {r['method']} {r['budget']:g}"] = json.loads(path.read_text())
    if policies:
        models = sorted({name.split()[0] for name in policies})
        fig, axes = plt.subplots(len(models), 1, figsize=(7, 3.2 * len(models)), squeeze=False)
        for ax, model in zip(axes[:, 0], models, strict=True):
            mine = {n: p for n, p in policies.items() if n.split()[0] == model}
            width = 0.8 / len(mine)
            for i, (name, policy) in enumerate(mine.items()):
                keep = list(policy["keep_ratios"].values())
                ax.bar(np.arange(len(keep)) + i * width, keep, width=width, label=name.split(" ", 1)[1])
            ax.set(xlabel="pruning unit (coupled group) index", ylabel="keep ratio", title=f"{model}: best policies")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(results / "cifar10_keep_ratios.png", dpi=120)
        plt.close(fig)
        out.append("![keep ratios of the best policies](cifar10_keep_ratios.png)")
    elif (results / "cifar10_keep_ratios.png").exists():
        out.append("![keep ratios of the best policies, drawn where the rows ran](cifar10_keep_ratios.png)")
    return out


def run(args: Args) -> None:
    names = [f"resnet20:{m}" for m in METHODS] if args.rows == ["all"] else args.rows
    for name in names:
        row = Row.parse(name, args)
        if not Path(row.teacher).is_file():
            raise AmcError(f"no teacher for {row.model} at {row.teacher}; train one with `amc train-teacher`")
        merge_row(args.results, run_row(row))
    if args.latency:
        measure_latencies(args)
    print("rows merged; `python experiments/benchmark_cifar10.py report` writes cifar10.md")


def report(args: Args) -> None:
    rows = load_rows(Path(args.results))
    if not rows:
        raise AmcError(f"{args.results} holds no rows; make some with `benchmark_cifar10.py run --rows ...`")
    out = Path(args.results).with_suffix(".md")
    write_report(rows, out)
    print(f"wrote {out} from {len(rows)} rows")


if __name__ == "__main__":
    commands = {"run": run, "report": report}
    run_script(lambda args: commands[args.command](args), Args, __doc__, list(commands))
