"""Agent reuse on CIFAR-10 (issue: exported policies and students, item 5).

    python experiments/transfer.py budget      # (a) 40% FLOPs: from scratch vs warm-started from the 50% agent
    python experiments/transfer.py model       # (b) the ResNet-20 agent's greedy policy on another teacher
    python experiments/transfer.py report      # results/transfer_resnet20.{md,json,png} from what has finished

Each search runs in its own folder under runs/transfer and is resumed if interrupted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plots import plot_reward_curves
from script_args import run_script

from agents.config import PredictConfig, load_config
from agents.predict import predict_command
from agents.search import resume_config_path, run_search
from amc.commands.apply import ApplyConfig, apply_command
from amc.commands.baseline import BaselineConfig, baseline_command
from amc.commands.evaluate import EvaluateConfig, evaluate_checkpoint
from amc.errors import AmcError

SOURCE_AGENT = "runs/bench/resnet20/ddpg-channel-0.5/search-20261124-115412/agent.pt"  # the 50% FLOPs search
CONFIG = "experiments/configs/resnet20_c10_flops50.yaml"
OUT = Path("runs/transfer")
RESULTS = Path("experiments/results")
WARM = ["init_agent=" + SOURCE_AGENT, "warmup_episodes=10", "noise_sigma=0.25"]
RUNS = {"scratch": [], "warm": WARM, "warm-sigma0.5": [*WARM[:2], "noise_sigma=0.5"]}
OTHER_TEACHERS = {
    "plain20": "experiments/teachers/plain20_cifar10.pt",
    "resnet32": "experiments/teachers/resnet32_cifar10.pt",
}


def budget_transfer(which: list[str]) -> None:
    for name in which:
        folder = OUT / f"flops40-{name}"
        runs = sorted(folder.glob("search-*"))
        if any((r / "results.json").exists() for r in runs):
            continue
        if runs:
            run_search(load_config(resume_config_path(runs[-1])), resume_dir=runs[-1])
            continue
        run_search(load_config(CONFIG, ["budget=flops=0.4", f"out_dir={folder}", "name=search", *RUNS[name]]))


def model_transfer() -> None:
    """Greedy ResNet-20 policy vs uniform at the same FLOPs on each other teacher that exists, before FT."""
    rows = []
    for model, teacher in OTHER_TEACHERS.items():
        if not Path(teacher).is_file():
            continue
        folder = OUT / f"greedy-{model}"
        folder.mkdir(parents=True, exist_ok=True)
        predicted = predict_command(PredictConfig(agent=SOURCE_AGENT, teacher=teacher, budget="flops=0.5",
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


def report() -> None:
    """Rewrite the page from the runs on this machine; a part whose runs are not here keeps its saved figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved_path = RESULTS / "transfer_resnet20.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    found, model_rows = curves(), OUT / "model_transfer.json"
    if not found and not model_rows.exists():
        raise AmcError(f"no transfer runs under {OUT} on this machine; {RESULTS / 'transfer_resnet20.md'} is kept")
    summary = {"source_agent": SOURCE_AGENT, "budget_transfer": saved.get("budget_transfer", {}),
               "model_transfer": saved.get("model_transfer", [])}  # fmt: skip
    if found:
        summary["budget_transfer"] = budget_summary(found)
        plot_reward_curves(found, "40% FLOPs: from scratch vs warm start", RESULTS / "transfer_flops40_curves.png")
    if model_rows.exists():
        summary["model_transfer"] = json.loads(model_rows.read_text())
    lines = ["# Agent transfer on CIFAR-10", "", "Generated by `python experiments/transfer.py report`.", ""]
    lines += budget_lines(summary["budget_transfer"]) + model_lines(summary["model_transfer"])
    saved_path.write_text(json.dumps(summary, indent=1) + "\n")
    (RESULTS / "transfer_resnet20.md").write_text("\n".join(lines) + "\n")


def budget_summary(found: dict[str, list[float]]) -> dict[str, dict]:
    target = max(found["scratch"]) if "scratch" in found else None
    summary = {}
    for name, rewards in found.items():
        reach = next((i + 1 for i, r in enumerate(rewards) if target is not None and r >= target), None)
        summary[name] = {"episodes": len(rewards), "best_reward": max(rewards),
                         "best_episode": int(np.argmax(rewards)) + 1, "episodes_to_scratch_best": reach,
                         "mean_first_50": float(np.mean(rewards[:50]))}  # fmt: skip
    return summary


def budget_lines(summary: dict[str, dict]) -> list[str]:
    if not summary:
        return []
    lines = [
        "## (a) Another budget: 40% FLOPs, warm-started from the 50%-FLOPs ResNet-20 agent",
        "",
        f"Every run: `{CONFIG}` with `budget=flops=0.4`, 400 episodes, seed 0. `warm`: "
        f"`--set {' --set '.join(WARM)}`; `warm-sigma0.5`: the same with σ 0.5. The from-scratch run warms up "
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


def main(args: Args) -> None:
    if args.command == "budget":
        budget_transfer(args.runs)
    elif args.command == "model":
        model_transfer()
    report()


if __name__ == "__main__":
    run_script(main, Args, __doc__, ["budget", "model", "report"])
