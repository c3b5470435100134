"""`amc report RUN_DIR`: the search at a glance, for users who do not run TensorBoard. Writes report.md
with the reward curve, the best policy per layer (AMC's figure) and the teacher-versus-student table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.config import ReportConfig
from amc.compress.policy import CompressionPolicy
from amc.errors import AmcError


def episode_scalars(run_dir: Path) -> dict[str, list[float]]:
    """Per-episode scalars from the run's TensorBoard events (reward, best reward, sigma, cost ratios)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tb"
    if not tb.is_dir():
        return {}
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        if tag.startswith("search/"):
            by_step = {e.step: e.value for e in events.Scalars(tag)}  # a resumed run may repeat steps
            scalars[tag[len("search/") :]] = [by_step[s] for s in sorted(by_step)]
    return scalars


def _figure(width: float = 7.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def plot_rewards(scalars: dict, path: Path) -> None:
    plt, fig, ax = _figure()
    rewards = np.asarray(scalars["reward"])
    episodes = np.arange(1, len(rewards) + 1)
    ax.plot(episodes, rewards, ".", markersize=2, alpha=0.4, label="reward")
    window = min(25, len(rewards))
    smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
    ax.plot(episodes[window - 1 :], smooth, label=f"mean of last {window}")
    ax.plot(episodes, np.maximum.accumulate(rewards), label="best so far")
    ax.set(xlabel="episode", ylabel="reward")
    if any(scalars.get("sigma", [])):
        twin = ax.twinx()
        twin.plot(episodes[: len(scalars["sigma"])], scalars["sigma"], color="gray", linestyle=":", label="σ")
        twin.set_ylabel("exploration σ", color="gray")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_candidates(scalars: dict, path: Path) -> None:
    """Every episode's student: accuracy on the validation subset against its predicted latency ratio (the
    search's view of the accuracy-latency trade-off), the best-rewarded one marked."""
    plt, fig, ax = _figure(width=5.5, height=4.0)
    latency, accuracy = np.asarray(scalars["latency_ratio"]), 100 * np.asarray(scalars["accuracy"])
    count = min(len(latency), len(accuracy))
    ax.scatter(latency[:count], accuracy[:count], s=6, alpha=0.5, c=np.arange(count), cmap="viridis")
    best = int(np.argmax(scalars["reward"][:count]))
    ax.plot(latency[best], accuracy[best], "r*", markersize=12, label="best reward")
    ax.set(xlabel="latency / teacher's latency (predicted by the table)", ylabel="val-subset accuracy (%)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def policy_rows(policy: CompressionPolicy) -> list[tuple[str, str, float]]:
    """(decision, name, value) for every per-layer decision of a policy, in policy order."""
    rows = [("keep ratio", name, ratio) for name, ratio in policy.keep_ratios.items()]
    rows += [("sparsity", name, value) for name, value in policy.sparsity.items()]
    rows += [("bits", name, float(bits)) for name, bits in policy.bits.items()]
    return rows


def plot_policy(policy: CompressionPolicy, path: Path) -> None:
    kinds = [k for k in ("keep ratio", "sparsity", "bits") if any(r[0] == k for r in policy_rows(policy))]
    plt, fig, axes = _figure(height=2.6 * max(len(kinds), 1))
    fig.clf()
    for i, kind in enumerate(kinds, start=1):
        ax = fig.add_subplot(len(kinds), 1, i)
        values = [v for k, _, v in policy_rows(policy) if k == kind]
        ax.bar(range(len(values)), values, color="tab:blue" if kind != "bits" else "tab:orange")
        ax.set(xlabel="layer index" if kind != "keep ratio" else "unit index (coupled layers)", ylabel=kind)
        if kind != "bits":
            ax.set_ylim(0, 1)
    if policy.removed_blocks:
        fig.suptitle("removed blocks: " + ", ".join(policy.removed_blocks), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layer_channels(run_dir: Path, policy: CompressionPolicy) -> dict | None:
    """Teacher and student (input, output) channels of every conv/linear layer, and each layer's predicted
    milliseconds from the search's latency table when it had one; None when the teacher cannot be read here."""
    from agents.config import load_config
    from amc.checkpoint import input_shape_of, load_checkpoint
    from amc.compress.student import model_from_checkpoint
    from amc.cost.latency import load_latency_table
    from amc.cost.predicted import CostModel

    try:
        config = load_config(run_dir / "config.yaml")
        blob = load_checkpoint(config.teacher)
    except AmcError:
        return None
    cost_model = CostModel(model_from_checkpoint(blob), input_shape_of(blob))
    teacher = cost_model.layer_shapes({})
    student = cost_model.layer_shapes(policy.keep_ratios, policy.removed_blocks, policy.round_to)
    result = {"teacher": teacher, "student": student, "table": None}
    table_path = config.env.latency_table
    if table_path and Path(table_path).is_file():
        try:
            table = load_latency_table(table_path, config.env.runtime, config.env.runtime_precision)
        except AmcError:
            return result
        result.update(table=table_path, teacher_ms=table.layer_ms(teacher),
                      student_ms=table.layer_ms(student))  # fmt: skip
    return result


def plot_channels(channels: dict, path: Path) -> None:
    """Output channels per layer, teacher and student, by layer name; each layer's share of the predicted latency
    in the target runtime where the search had a table."""
    names = list(channels["teacher"])
    plt, fig, ax = _figure(width=max(7.0, 0.32 * len(names)), height=4.2)
    x = np.arange(len(names))
    ax.bar(x, [channels["teacher"][n][1] for n in names], color="lightgray", label="teacher")
    ax.bar(x, [channels["student"].get(n, (0, 0))[1] for n in names], width=0.5, color="tab:blue", label="student")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    if channels.get("teacher_ms"):
        twin = ax.twinx()
        total = sum(channels["teacher_ms"].values())
        for key, color, label in (("teacher_ms", "gray", "teacher"), ("student_ms", "tab:red", "student")):
            share = [100 * channels[key].get(n, 0.0) / total for n in names]
            twin.plot(x, share, "o-", color=color, markersize=3, label=f"{label}: % of teacher latency")
        twin.set_ylabel("% of the teacher's latency (predicted)")
        twin.legend(loc="upper center", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(results: dict) -> list[str]:
    teacher, student = results.get("teacher", {}), results.get("student", {})
    before = results.get("student_before_finetune", {})
    raw = results.get("student_without_bn_recalibration", {})
    lines = ["| | teacher | student | ratio |", "|---|---|---|---|"]
    rows = [
        ("test accuracy", "accuracy", "{:.2%}"),
        ("val accuracy", "val_accuracy", "{:.2%}"),
        ("MACs", "flops", "{:,}"),
        ("params", "params", "{:,}"),
        ("size (bytes)", "size_bytes", "{:,}"),
        ("latency b1 (ms)", "latency_ms_b1", "{:.3f}"),
        ("latency b128 (ms/img)", "latency_ms_b128", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        if key in teacher and key in student:
            ratio = student[key] / teacher[key] if teacher[key] else float("nan")
            lines.append(f"| {label} | {fmt.format(teacher[key])} | {fmt.format(student[key])} | {ratio:.3f} |")
    if raw:
        lines.append(f"| test accuracy without BN recalibration | | {raw['test']:.2%} | |")
    if before and before is not student and before.get("accuracy") != student.get("accuracy"):
        lines.append(f"| test accuracy before the final fine-tune | | {before['accuracy']:.2%} | |")
    return lines


def write_report(cfg: ReportConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise AmcError(f"{run_dir} is not a search run folder (no config.yaml); pass a folder `amc search` wrote")
    out = Path(cfg.out) if cfg.out else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    scalars = episode_scalars(run_dir)
    if not scalars.get("reward") and (run_dir / "search_state.json").is_file():
        state = json.loads((run_dir / "search_state.json").read_text())
        scalars = {"reward": state.get("recorder", {}).get("rewards", [])}
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    policy_path = run_dir / "policy.json"
    policy = CompressionPolicy.load(policy_path) if policy_path.is_file() else None

    lines = [f"# Search report: {run_dir.name}", ""]
    if policy is not None:
        meta = policy.metadata
        reward_name = meta.get("reward") if isinstance(meta.get("reward"), str) else None  # amc 0.1.0 stored
        episode_reward = meta.get("episode_reward", None if reward_name else meta.get("reward"))  # the value there
        reward_name = reward_name or meta.get("search_config", {}).get("reward", "?")
        achieved = ", ".join(f"{k} {v:.3f}" for k, v in meta.get("achieved", {}).items())
        lines += [
            f"- teacher: {policy.architecture or '?'} (fingerprint {policy.fingerprint or '–'}), mode "
            f"`{meta.get('mode', '?')}`, budget {meta.get('budget', '?')}, reward `{reward_name}`, "
            f"searcher `{meta.get('searcher', '?')}`",
            f"- best episode {meta.get('episode', '?')} with reward {episode_reward}; achieved {achieved}",
        ]
    if results:
        lines.append(f"- {results['episodes']} episodes in {results['search_minutes']:.1f} min "
                     f"(agent overhead {results.get('agent_overhead', 0):.1%})")  # fmt: skip
    written = []
    if scalars.get("reward"):
        plot_rewards(scalars, out / "reward_curve.png")
        written.append("reward_curve.png")
        rewards = scalars["reward"]
        lines += [
            "",
            "## Reward",
            "",
            f"Mean reward over the first 50 episodes {np.mean(rewards[:50]):.4f}, over the "
            f"last 50 {np.mean(rewards[-50:]):.4f}; best {max(rewards):.4f}.",
            "",
            "![reward](reward_curve.png)",
        ]
    if scalars.get("latency_ratio") and scalars.get("accuracy"):
        plot_candidates(scalars, out / "candidates.png")
        written.append("candidates.png")
        lines += ["", "## Accuracy against latency, every episode", "",
                  "Colour runs from the first episode (dark) to the last (light).", "",
                  "![candidates](candidates.png)"]  # fmt: skip
    if policy is not None and policy_rows(policy):
        plot_policy(policy, out / "policy.png")
        written.append("policy.png")
        lines += [
            "",
            "## Best policy, per layer",
            "",
            "![policy](policy.png)",
            "",
            "| # | decision | unit or layer | value |",
            "|---|---|---|---|",
        ]
        lines += [f"| {i} | {k} | `{n}` | {v:.3f} |" for i, (k, n, v) in enumerate(policy_rows(policy))]
        if policy.removed_blocks:
            lines += ["", "Removed blocks: " + ", ".join(f"`{b}`" for b in policy.removed_blocks)]
    channels = layer_channels(run_dir, policy) if policy is not None else None
    if channels is not None:
        plot_channels(channels, out / "channels.png")
        written.append("channels.png")
        where = (f"with each layer's part of the latency predicted by `{channels['table']}`" if channels["table"]
                 else "(no latency table: the search had no latency budget)")  # fmt: skip
        lines += ["", "## Channels per layer, teacher and student", "", f"By layer name, {where}.", "",
                  "![channels](channels.png)"]  # fmt: skip
    deployed = results.get("deployed")
    if deployed:
        lines += [
            "",
            f"## Deployed: {deployed['runtime']} {deployed['precision']}, {deployed['threads']} thread(s), "
            f"{deployed['cpu']}",
            "",
            "| batch | ms / image | speed-up over the teacher there |",
            "|---|---|---|",
        ]
        lines += [f"| {b} | {deployed[f'latency_ms_b{b}']:.4f} | {deployed.get(f'speedup_b{b}', float('nan')):.2f}× |"
                  for b in (1, 64) if f"latency_ms_b{b}" in deployed]  # fmt: skip
        lines += ["", f"Test accuracy from the runtime's outputs: {deployed['accuracy']:.2%}."]
    if results:
        lines += ["", "## Teacher and student", "", *_table(results)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"report": str(out / "report.md"), "pngs": [str(out / name) for name in written]}
