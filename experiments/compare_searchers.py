"""Compare searchers (uniform, random, DDPG, ...) on one search config, at equal episode counts.

    python experiments/compare_searchers.py --config experiments/configs/resnet20_c10_flops50.yaml \
        --searchers uniform random ddpg --out experiments/results/resnet20_flops50

Each searcher runs as `amc search --config CONFIG --set agent=<searcher>`; one row per searcher is merged
into OUT.json (so searchers can run in separate sessions), and OUT.md plus OUT_curves.png are rewritten
from all rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from script_args import run_script

from agents.config import load_config
from agents.search import run_search


def summarize(results: dict) -> dict:
    run_dir = Path(results["run_dir"])
    state = json.loads((run_dir / "search_state.json").read_text())
    rewards = state["recorder"]["rewards"]
    best_so_far = np.maximum.accumulate(rewards).tolist()
    raw = results["student_without_bn_recalibration"]
    recal = results["student_before_finetune"]
    return {
        "run_dir": str(run_dir),
        "episodes": results["episodes"],
        "best_episode": results["best_episode"],
        "best_reward": results["best_reward"],
        "acc_val_raw": raw["val"],
        "acc_test_raw": raw["test"],
        "acc_val_recal": recal["val_accuracy"],
        "acc_test_recal": recal["accuracy"],
        "acc_test_final": results["student"]["accuracy"],
        "teacher_acc_test": results["teacher"]["accuracy"],
        "flops_ratio": results["flops_ratio"],
        "params_ratio": results["params_ratio"],
        "speedup_b1": results["speedup_b1"],
        "speedup_b128": results["speedup_b128"],
        "search_minutes": results["search_minutes"],
        "agent_overhead": results["agent_overhead"],
        "rewards": rewards,
        "best_so_far": best_so_far,
    }


def write_report(rows: dict, out: Path) -> None:
    lines = [
        f"# Searchers compared: {out.name}",
        "",
        "Accuracies are fractions of the CIFAR-10 val (5k held out from train) and test (10k) splits;",
        "'raw' is the student straight after pruning, 'recal' after BatchNorm recalibration (20 batches).",
        "",
        "| searcher | episodes | best at | val raw | test raw | val recal | test recal | FLOPs | params | "
        "speedup b1 | speedup b128 | minutes | agent overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['episodes']} | {r['best_episode']} | {r['acc_val_raw']:.4f} | {r['acc_test_raw']:.4f} | "
            f"{r['acc_val_recal']:.4f} | {r['acc_test_recal']:.4f} | {r['flops_ratio']:.3f} | "
            f"{r['params_ratio']:.3f} | {r['speedup_b1']:.2f} | {r['speedup_b128']:.2f} | "
            f"{r['search_minutes']:.1f} | {r['agent_overhead']:.1%} |"
        )
    curves = {n: r for n, r in rows.items() if len(r["rewards"]) > 1}
    if curves:
        lines += ["", "Best reward so far (val-subset accuracy) at equal episode counts:", ""]
        longest = max(len(r["rewards"]) for r in curves.values())
        marks = sorted({m for m in (50, 100, 200, 300, 400) if m <= longest} | {longest})
        lines.append("| searcher | " + " | ".join(f"ep {m}" for m in marks) + " | mean reward, first 100 | last 100 |")
        lines.append("|---" * (len(marks) + 3) + "|")
        for name, r in curves.items():
            cells = [f"{r['best_so_far'][m - 1]:.4f}" if len(r["best_so_far"]) >= m else "–" for m in marks]
            first, last = np.mean(r["rewards"][:100]), np.mean(r["rewards"][-100:])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {first:.4f} | {last:.4f} |")
        _plot(curves, out.with_name(out.name + "_curves.png"))
        lines += ["", f"![reward curves]({out.name}_curves.png)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in curves.items():
        episodes = np.arange(1, len(r["rewards"]) + 1)
        ax.plot(episodes, r["rewards"], alpha=0.25, linewidth=0.8)
        ax.plot(episodes, r["best_so_far"], label=f"{name} (best so far)", color=ax.lines[-1].get_color())
    ax.set_xlabel("episode")
    ax.set_ylabel("reward (val-subset accuracy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@dataclass
class Args:
    config: str
    """Search config YAML shared by every searcher."""
    out: str
    """Output path without suffix (.json, .md, .png)."""
    searchers: list[str] = field(default_factory=lambda: ["uniform", "random", "ddpg"])
    set: list[str] = field(default_factory=list)
    """Extra config overrides, KEY=VALUE."""


def main(args: Args) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary_path = out.with_suffix(".json")
    for searcher in args.searchers:
        results = run_search(load_config(args.config, [f"agent={searcher}", *args.set, f"name={out.name}-{searcher}"]))
        rows = json.loads(summary_path.read_text()) if summary_path.exists() else {}  # another run may have written
        rows[searcher] = summarize(results)
        summary_path.write_text(json.dumps(rows, indent=1))
        write_report(rows, out)


if __name__ == "__main__":
    run_script(main, Args, __doc__)
