"""The CIFAR-10 benchmark: uniform, random search and DDPG (channel, removal+channel, channel+quantize) on one
teacher, each row searched, KD fine-tuned with the same settings, and measured.

    python experiments/benchmark_cifar10.py --rows resnet20:ddpg-channel:0.5      # one row (resumable)
    python experiments/benchmark_cifar10.py --rows all                            # every ResNet-20 row
    python experiments/benchmark_cifar10.py --latency                             # time every finished row
    python experiments/benchmark_cifar10.py                                       # rewrite the results only

A row lives in runs/bench/<model>/<method>-<budget>/: the search run folder (search-*), student_ft.pt and
row.json. Each stage is skipped when its output exists and resumed when it was interrupted, so rows can run
one per background job and across sessions. Latency is timed separately (`--latency`), on an idle machine.
Every run merges every row.json into
experiments/results/cifar10.json and rewrites cifar10.md with its plots.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.cli import run_json

TEACHERS = {
    "resnet20": "experiments/teachers/resnet20_cifar10.pt",
    "plain20": "experiments/teachers/plain20_cifar10.pt",
}
CONFIGS = {  # method -> (search config, overrides); `{budget}` and `{teacher}` are filled per row
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
BUDGET_KIND = {"ddpg-channel+quantize": "size", "ddpg-latency": "latency"}
DEFAULT_BUDGET = {"ddpg-channel+quantize": 0.1}
FINETUNE_EPOCHS = 15  # the same KD fine-tune for every row: amc finetune's defaults (lr 0.05 cosine, alpha 0.9, T 4)
LATENCY_THREADS = 1
BENCH_DIR = Path("runs/bench")
RESULTS = Path("experiments/results")
METHOD_ORDER = [
    "teacher", "uniform", "random", "ddpg-channel", "ddpg-removal+channel", "ddpg-channel+quantize", "ddpg-latency",
]  # fmt: skip


@dataclass
class Row:
    model: str
    method: str
    budget: float
    extra: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Row:
        parts = text.split(":")
        if len(parts) not in (2, 3) or parts[1] not in (*CONFIGS, "teacher"):
            raise SystemExit(f"row {text!r} must be MODEL:METHOD[:BUDGET], METHOD one of teacher, {', '.join(CONFIGS)}")
        budget = float(parts[2]) if len(parts) == 3 else DEFAULT_BUDGET.get(parts[1], 0.5)
        return cls(parts[0], parts[1], 1.0 if parts[1] == "teacher" else budget)

    @property
    def teacher(self) -> str:
        return TEACHERS[self.model]

    @property
    def folder(self) -> Path:
        return BENCH_DIR / self.model / f"{self.method}-{self.budget:g}"


def search(row: Row) -> tuple[Path, dict]:
    """The row's search run folder and its results: reused when finished, resumed when interrupted."""
    runs = sorted(row.folder.glob("search-*"))
    done = [r for r in runs if (r / "results.json").exists()]
    if done:
        return done[-1], json.loads((done[-1] / "results.json").read_text())
    if runs:
        return runs[-1], run_json(["search", "--resume", str(runs[-1])])
    config, overrides = CONFIGS[row.method]
    sets = [o.format(budget=row.budget) for o in overrides]
    sets += [f"teacher={row.teacher}", f"out_dir={row.folder}", "name=search", *row.extra]
    results = run_json(["search", "--config", f"experiments/configs/{config}", *sum((["--set", s] for s in sets), [])])
    return Path(results["run_dir"]), results


def reward_settings(run_dir: Path) -> dict:
    """What the search rewarded: its resolved config's reward, eval subset and per-candidate fine-tune steps."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return {k: config.get(k) for k in ("reward", "eval_samples", "finetune_steps")}


def finetune(row: Row, student: str) -> dict:
    out = row.folder / "student_ft.pt"
    done = row.folder / "finetune.json"
    if done.exists():
        return json.loads(done.read_text())
    argv = ["finetune", "--student", student, "--teacher", row.teacher, "--epochs", str(FINETUNE_EPOCHS),
            "--out", str(out)]  # fmt: skip
    if out.exists():
        argv.append("--resume")
    result = run_json(argv)
    done.write_text(json.dumps(result, indent=1))
    return result


def costs(student_path: str, teacher_path: str) -> dict:
    from amc.checkpoint import load_checkpoint
    from amc.measured_cost import count_macs, count_params, size_bytes
    from amc.student import model_from_checkpoint

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
    from amc.evaluation import alternating_speedup
    from amc.export import bake
    from amc.measured_cost import measure_latency
    from amc.student import model_from_checkpoint

    teacher_blob = load_checkpoint(teacher_path)
    teacher = model_from_checkpoint(teacher_blob)
    deployable = bake(model_from_checkpoint(load_checkpoint(student_path)))
    shape = tuple(teacher_blob["dataset"]["input_shape"])
    row = {
        "latency_ms_b1": measure_latency(deployable, shape, 1, threads=LATENCY_THREADS, repeats=100),
        "latency_ms_b128": measure_latency(deployable, shape, 128, threads=LATENCY_THREADS, repeats=10),
    }
    for batch, repeats in ((1, 50), (128, 5)):
        row[f"speedup_b{batch}"] = (
            1.0 if student_path == teacher_path else
            alternating_speedup(deployable, teacher, shape, batch, rounds=5, repeats=repeats, threads=LATENCY_THREADS)
        )  # fmt: skip
    return row


def measure_latencies() -> None:
    for path in sorted(BENCH_DIR.glob("*/*/row.json")):
        row = json.loads(path.read_text())
        student = TEACHERS[row["model"]] if row["method"] == "teacher" else str(path.parent / "student_ft.pt")
        print(f"timing {row['model']} {row['method']} {row['budget']:g}", flush=True)
        row.update(latency(student, TEACHERS[row["model"]]), latency_measured_at=time.strftime("%Y-%m-%d %H:%M"))
        path.write_text(json.dumps(row, indent=1))


def run_row(row: Row) -> dict:
    row.folder.mkdir(parents=True, exist_ok=True)
    previous = row.folder / "row.json"
    timing = {}
    if previous.exists():  # keep latencies measured earlier on a quiet machine
        timing = {k: v for k, v in json.loads(previous.read_text()).items() if "latency" in k or "speedup" in k}
    started = time.time()
    if row.method == "teacher":
        report = run_json(["evaluate", row.teacher])
        result = {"acc_val_noft": report["val_accuracy"], "acc_test_noft": report["accuracy"],
                  "acc_test_ft": report["accuracy"], "acc_val_ft": report["val_accuracy"],
                  "search_minutes": 0.0, "episodes": 0, **costs(row.teacher, row.teacher)}  # fmt: skip
    else:
        run_dir, searched = search(row)
        student = str(run_dir / "student.pt")
        tuned = finetune(row, student)
        before = searched["student_before_finetune"]
        result = {
            "acc_val_noft": before["val_accuracy"], "acc_test_noft": before["accuracy"],
            "acc_test_ft": tuned["accuracy"], "acc_val_ft": tuned["val_accuracy"],
            "acc_test_raw": searched["student_without_bn_recalibration"]["test"],
            "search_minutes": searched["search_minutes"], "episodes": searched["episodes"],
            "finetune_minutes": tuned["finetune_seconds"] / 60.0, "run_dir": str(run_dir),
            "search_reward": reward_settings(run_dir),
            **costs(str(row.folder / "student_ft.pt"), row.teacher),
        }  # fmt: skip
    result = {"model": row.model, "method": row.method, "budget": row.budget, **result, **timing}
    result["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    (row.folder / "row.json").write_text(json.dumps(result, indent=1))
    print(f"row {row.model}:{row.method}:{row.budget:g} done in {(time.time() - started) / 60:.1f} min", flush=True)
    return result


# ----------------------------------------------------------------------------- report

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
JPEG-75 copy (87.80% test) with BN recalibration. Compare the *drops* and the *gaps to uniform*, not the
absolute accuracies.
"""


ANSWER = """\
**The answer, in plain words** (measured 2026-11-24; the table above is regenerated from the rows, this text is
not). At 50% FLOPs the search buys 0.6–0.9 points after fine-tuning on ResNet-20 (DDPG +0.60, random search
+0.91) and nothing on Plain-20 (+0.01), and DDPG does not beat random search there: a 14-point lead before
fine-tuning shrinks to under a point. At 30% FLOPs, where uniform pruning loses 3.7 points even after
fine-tuning, DDPG with the 30-step KD reward beats uniform by 1.86 points and random search (same reward, same
400 episodes) by 1.13, although random search's student led before fine-tuning (31.4% vs 29.6%). Under a
batch-1 latency budget equal to the uniform 50% student's (both measured at 1.76 ms), DDPG wins by 0.67.
The fine-tune itself is noisy: the uniform 50% student fine-tuned again with another seed scored 87.21
instead of 86.68 (0.53 points apart), so the gains at 50% FLOPs and at equal latency (0.6–0.9) are of the
size of that noise, while the 30% gain (1.86) is about 3.5 times it; every row is one seed. So the search
clearly pays off where the budget is tight; at a mild budget a fine-tuned uniform student is about as good.

The reward proxies (next section) cost, per candidate on one thread: BN-recalibrated accuracy 2.8 s,
on 5,000 images 5.4 s, KD loss 3.9 s, 30 KD steps 18.5 s alone (10–11 s inside the search), 100 steps 32 s,
300 steps 115 s. **The default reward amc ships** stays the BN-recalibrated accuracy on 1,000 val images:
the cheapest proxy that meets the 0.7 rank goal (0.71), a 400-episode search in 13 min instead of 70, and
at 50% FLOPs no proxy ranked the searched bests reliably, so paying more bought nothing measurable there.
For tight budgets amc ships `finetune_steps=30` in `experiments/configs/resnet20_c10_flops30.yaml`: the
best-ranking proxy (Spearman 0.81) whose 400-episode search fits in a session here, and the reward of the
30% rows. Not measured: a 30% DDPG row with the BN reward, which would split the +1.86 between the search
and the reward.
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
the teacher, alternately, in one process. Machine: {machine}. Fine-tunes and searches ran one thread each,
two at a time."""


def machine() -> str:
    import os
    import platform

    import torch

    cpu = f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU"
    return f"{cpu}, torch {torch.__version__}, {LATENCY_THREADS} thread for latency"


def load_rows() -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(BENCH_DIR.glob("*/*/row.json"))]
    for r in rows:  # rows finished before `search_reward` was recorded
        if "run_dir" in r and "search_reward" not in r:
            r["search_reward"] = reward_settings(Path(r["run_dir"]))
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    kinds = {"FLOPs": 0, "size": 1, "latency": 2}

    def key(r: dict) -> tuple:
        if r["method"] == "teacher":
            return r["model"], -1, 0.0, 0
        return r["model"], kinds[BUDGET_KIND.get(r["method"], "FLOPs")], -r["budget"], order.get(r["method"], 99)

    return sorted(rows, key=key)


def _num(row: dict, key: str, fmt: str) -> str:
    return fmt.format(row[key]) if key in row else "–"


def write_report(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cifar10.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# CIFAR-10 benchmark",
        "",
        "Generated by `python experiments/benchmark_cifar10.py` from the rows in runs/bench; the same rows",
        "are in [cifar10.json](cifar10.json). Accuracies in %, on the 10k test split and the 5k val split held out",
        "from train. 'no FT' is the searched student after BatchNorm recalibration, 'FT' after the same",
        f"{FINETUNE_EPOCHS}-epoch KD fine-tune for every row (α 0.9, T 4, SGD lr 0.05 cosine, bf16). Latency: the",
        f"deployable student (quantizers and masks baked into the weights), {LATENCY_THREADS} CPU thread, timed",
        "alternately with the teacher in one process (speedup = teacher / student).",
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
    lines += ["", *targets(rows), "", *search_gains(rows), "", ANSWER]
    plots = _plots(rows)
    lines += ["", *plots, "", COMMANDS.format(machine=machine()), "", PAPER]
    proxies = RESULTS / "reward_proxies.md"
    if proxies.exists():
        lines += ["", proxies.read_text()]
    (RESULTS / "cifar10.md").write_text("\n".join(lines) + "\n")


def reward_label(row: dict) -> str:
    """What the row's search rewarded: accuracy after BN recalibration, or after N KD steps per candidate."""
    if row["method"] in ("teacher", "uniform"):
        return "–"
    steps = row["search_reward"].get("finetune_steps") or 0
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


def _plots(rows: list[dict]) -> list[str]:
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
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, rewards in curves.items():
            line = ax.plot(np.maximum.accumulate(rewards), label=f"{name} (best so far)")[0]
            ax.plot(rewards, alpha=0.2, linewidth=0.8, color=line.get_color())
        ax.set(xlabel="episode", ylabel="reward (val-subset accuracy)", title="DDPG vs random search")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "cifar10_reward_curves.png", dpi=120)
        plt.close(fig)
        out.append("![reward curves](cifar10_reward_curves.png)")
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
        fig.savefig(RESULTS / "cifar10_keep_ratios.png", dpi=120)
        plt.close(fig)
        out.append("![keep ratios of the best policies](cifar10_keep_ratios.png)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=[], help="MODEL:METHOD[:BUDGET] ..., or `all`")
    parser.add_argument("--set", action="append", default=[], help="extra search config override for these rows")
    parser.add_argument("--latency", action="store_true", help="time every finished row (on an idle machine)")
    args = parser.parse_args()
    names = args.rows
    if names == ["all"]:
        names = [f"resnet20:{m}" for m in METHOD_ORDER]
    for name in names:
        row = Row.parse(name)
        row.extra = args.set
        if not Path(row.teacher).is_file():
            raise SystemExit(f"no teacher for {row.model} at {row.teacher}; train one with `amc train-teacher`")
        run_row(row)
    if args.latency:
        measure_latencies()
    write_report(load_rows())


if __name__ == "__main__":
    main()
