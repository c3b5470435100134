"""Agent reuse on CIFAR-10 (issue: exported policies and students, item 5).

    python experiments/transfer.py budget --source-agent AGENT  # (a) 40% FLOPs: scratch vs warm from the 50% agent
    python experiments/transfer.py model --source-agent AGENT   # (b) its greedy policy on another teacher
    python experiments/transfer.py report      # results/transfer_resnet20.md from the rows in transfer_resnet20.json

AGENT is the agent.pt of a 50%-FLOPs ResNet-20 search, e.g. the one `benchmark_cifar10.py run --rows
resnet20:ddpg-channel:0.5` leaves in its run folder: a path the user gives, never another script's runs/ read
here. Each search runs in its own folder under runs/transfer and is resumed if interrupted; `budget` and `model`
merge their rows into the results JSON (and draw the reward curves beside it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plots import plot_reward_curves
from rows import read_rows, write_whole
from script_args import run_script

from agents.config import PredictConfig, load_config
from agents.predict import predict_command
from agents.search import resume_config_path, run_search
from amc.commands.apply import ApplyConfig, apply_command
from amc.commands.baseline import BaselineConfig, baseline_command
from amc.commands.evaluate import EvaluateConfig, evaluate_checkpoint
from amc.errors import AmcError

CONFIG = "experiments/configs/resnet20_c10_flops50.yaml"
OUT = Path("runs/transfer")
RUNS = {"scratch": [], "warm": ["warmup_episodes=10", "noise_sigma=0.25"],
        "warm-sigma0.5": ["warmup_episodes=10", "noise_sigma=0.5"]}  # fmt: skip
OTHER_TEACHERS = {
    "plain20": "experiments/teachers/plain20_cifar10.pt",
    "resnet32": "experiments/teachers/resnet32_cifar10.pt",
}


def warm_settings(name: str, source_agent: str) -> list[str]:
    return [f"init_agent={source_agent}", *RUNS[name]] if name != "scratch" else []


def budget_transfer(which: list[str], source_agent: str) -> None:
    for name in which:
        folder = OUT / f"flops40-{name}"
        runs = sorted(folder.glob("search-*"))
        if any((r / "results.json").exists() for r in runs):
            continue
        if runs:
            run_search(load_config(resume_config_path(runs[-1])), resume_dir=runs[-1])
            continue
        run_search(
            load_config(
                CONFIG, ["budget=flops=0.4", f"out_dir={folder}", "name=search", *warm_settings(name, source_agent)]
            )
        )


def model_transfer(source_agent: str) -> None:
    """Greedy ResNet-20 policy vs uniform at the same FLOPs on each other teacher that exists, before FT."""
    rows = []
    for model, teacher in OTHER_TEACHERS.items():
        if not Path(teacher).is_file():
            continue
        folder = OUT / f"greedy-{model}"
        folder.mkdir(parents=True, exist_ok=True)
        predicted = predict_command(PredictConfig(agent=source_agent, teacher=teacher, budget="flops=0.5",
                                                  out=str(folder / "greedy.json")))  # fmt: skip
        baseline_command(BaselineConfig(method="uniform", teacher=teacher, flops=round(predicted["flops_ratio"], 6),
                                        out=str(folder / "uniform.json")))  # fmt: skip
        row = {"model": model, "teacher": teacher, "predict_seconds": predicted["seconds"]}
        row["teacher_accuracy"] = evaluate_checkpoint(EvaluateConfig(model=teacher, latency_repeats=1))["accuracy"]
        for name in ("greedy", "uniform"):
            student = str(folder / f"{name}.pt")
            applied = apply_command(ApplyConfig(teacher=teacher, policy=str(folder / f"{name}.json"), out=student,
                                                recalibrate_bn=20, recalibrate_precision="fp32"))  # fmt: skip
            report = evaluate_checkpoint(EvaluateConfig(model=student, latency_repeats=1))
            row[name] = {"flops_ratio": applied["flops_ratio"], "params_ratio": applied["params_ratio"],
                         "val_accuracy": report["val_accuracy"], "test_accuracy": report["accuracy"]}  # fmt: skip
        rows.append(row)
    (OUT / "model_transfer.json").write_text(json.dumps(rows, indent=1))


def curves() -> dict[str, list[float]]:
    found = {}
    for name in RUNS:
        for state in sorted((OUT / f"flops40-{name}").glob("search-*/search_state.json")):
            found[name] = json.loads(state.read_text())["recorder"]["rewards"]
    return found


def collect_rows(results: Path, source_agent: str) -> None:
    """Merge what finished under runs/transfer into the rows at `results` (a part not run here keeps its rows),
    and draw the reward curves beside them."""
    saved = json.loads(results.read_text()) if results.exists() else {}
    rows = {"source_agent": source_agent, "budget_transfer": saved.get("budget_transfer", {}),
            "model_transfer": saved.get("model_transfer", [])}  # fmt: skip
    found, model_rows = curves(), OUT / "model_transfer.json"
    if found:
        rows["budget_transfer"] = budget_summary(found)
        plot_reward_curves(
            found, "40% FLOPs: from scratch vs warm start", results.parent / "transfer_flops40_curves.png"
        )
    if model_rows.exists():
        rows["model_transfer"] = json.loads(model_rows.read_text())
    write_whole(results, json.dumps(rows, indent=1) + "\n")


def report(results: Path) -> None:
    """transfer_resnet20.md beside `results`, from those rows alone."""
    rows = read_rows(results, "transfer.py budget --source-agent AGENT")
    lines = ["# Agent transfer on CIFAR-10", "", "Generated by `python experiments/transfer.py report`.", ""]
    lines += budget_lines(rows["budget_transfer"], rows["source_agent"]) + model_lines(rows["model_transfer"])
    write_whole(results.with_name("transfer_resnet20.md"), "\n".join(lines) + "\n")


def budget_summary(found: dict[str, list[float]]) -> dict[str, dict]:
    target = max(found["scratch"]) if "scratch" in found else None
    summary = {}
    for name, rewards in found.items():
        reach = next((i + 1 for i, r in enumerate(rewards) if target is not None and r >= target), None)
        summary[name] = {"episodes": len(rewards), "best_reward": max(rewards),
                         "best_episode": int(np.argmax(rewards)) + 1, "episodes_to_scratch_best": reach,
                         "mean_first_50": float(np.mean(rewards[:50]))}  # fmt: skip
    return summary


def budget_lines(summary: dict[str, dict], source_agent: str) -> list[str]:
    if not summary:
        return []
    warm = " --set ".join(warm_settings("warm", source_agent))
    lines = [
        "## (a) Another budget: 40% FLOPs, warm-started from the 50%-FLOPs ResNet-20 agent",
        "",
        f"Every run: `{CONFIG}` with `budget=flops=0.4`, 400 episodes, seed 0. `warm`: "
        f"`--set {warm}`; `warm-sigma0.5`: the same with σ 0.5. The from-scratch run warms up "
        "for 100 random episodes, σ 0.5.",
        "",
        "| run | best reward | at episode | first episode reaching the from-scratch best | mean reward, ep 1–50 |",
        "|---|---|---|---|---|",
    ]
    for name, r in summary.items():
        lines.append(f"| {name} | {r['best_reward']:.4f} | {r['best_episode']} | "
                     f"{r['episodes_to_scratch_best'] or 'never'} | {r['mean_first_50']:.4f} |")  # fmt: skip
    return [*lines, "", "![reward curves](transfer_flops40_curves.png)", ""]


def model_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## (b) Another model: the ResNet-20 agent's greedy policy (no search) against uniform, equal FLOPs",
        "",
        "`amc policy predict --agent <50% agent> --teacher T --budget flops=0.5`, then `amc baseline uniform` at "
        "the FLOPs the greedy policy reached; both students BN-recalibrated (20 batches, fp32), no fine-tuning.",
        "",
        "| teacher | teacher test | FLOPs | greedy val | greedy test | uniform val | uniform test | predict s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, u = r["greedy"], r["uniform"]
        cells = [r["model"], f"{100 * r['teacher_accuracy']:.2f}", f"{g['flops_ratio']:.3f}"]
        cells += [f"{100 * x[k]:.2f}" for x in (g, u) for k in ("val_accuracy", "test_accuracy")]
        lines.append("| " + " | ".join([*cells, f"{r['predict_seconds']:.1f}"]) + " |")
    return lines


@dataclass
class Args:
    command: str
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    """For `budget`: scratch, warm, warm-sigma0.5."""
    source_agent: str = ""
    """`budget`, `model`: the agent.pt of a 50%-FLOPs ResNet-20 search, warm start and greedy policy."""
    results: str = "experiments/results/transfer_resnet20.json"
    """The rows (`budget` and `model` merge into them; `report` writes the page beside them)."""


def main(args: Args) -> None:
    results = Path(args.results)
    if args.command in ("budget", "model"):
        if not Path(args.source_agent).is_file():
            raise AmcError(f"--source-agent {args.source_agent!r} is not a file; pass the agent.pt of a 50%-FLOPs "
                           f"ResNet-20 search")  # fmt: skip
        if args.command == "budget":
            budget_transfer(args.runs, args.source_agent)
        else:
            model_transfer(args.source_agent)
        collect_rows(results, args.source_agent)
    report(results)


if __name__ == "__main__":
    run_script(main, Args, __doc__, ["budget", "model", "report"])
