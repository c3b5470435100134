"""Figures the experiment reports share."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_reward_curves(curves: dict[str, list[float]], title: str, path: Path) -> None:
    """Each search's best reward so far (solid) over its per-episode rewards (faint), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rewards in curves.items():
        line = ax.plot(np.maximum.accumulate(rewards), label=f"{name} (best so far)")[0]
        ax.plot(rewards, alpha=0.25, linewidth=0.8, color=line.get_color())
    ax.set(xlabel="episode", ylabel="reward (val-subset accuracy)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
