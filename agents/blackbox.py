"""Black-box searchers from Optuna (TPE, CMA-ES) over the same per-step actions the RL agents choose.

Each episode is one Optuna trial whose parameters are the episode's actions in [-1, 1]; the env still maps
and walls them, so every episode meets the budget, and its reward is the trial's value. N workers ask N
trials at once (TPE's constant liar keeps them apart). The trials are kept as JSON in the search state;
on resume TPE sees them all again and CMA-ES warm-starts from them (Optuna's `source_trials`).
"""

from __future__ import annotations

import numpy as np

from amc.errors import AmcError

BLACKBOX_AGENTS = ("tpe", "cmaes")
OPTUNA_INSTALL = "pip install 'amc[optuna]' (or: pip install optuna==5.0.0 cmaes==0.13.1)"


def import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise AmcError(f"agents tpe and cmaes need Optuna, which is not installed; {OPTUNA_INSTALL}") from exc
    return optuna


class OptunaSearcher:
    """Asks Optuna for episodes' actions and tells it their rewards; `history` is the JSON trial record."""

    def __init__(self, algorithm: str, steps: int, seed: int, warmup_episodes: int, history: list[dict]):
        optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.history = optuna, history
        self.names = [f"a{t:03d}" for t in range(steps)]
        self.distributions = {n: optuna.distributions.FloatDistribution(-1.0, 1.0) for n in self.names}
        past = [optuna.trial.create_trial(params=h["params"], distributions=self.distributions, value=h["reward"])
                for h in history]  # fmt: skip
        if algorithm == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=warmup_episodes)
        elif algorithm == "cmaes":
            sampler = optuna.samplers.CmaEsSampler(seed=seed, source_trials=past or None,
                                                   warn_independent_sampling=False)  # fmt: skip
        else:
            raise AmcError(f"unknown black-box agent {algorithm!r}; choose one of {', '.join(BLACKBOX_AGENTS)}")
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.study.add_trials(past)
        self._asked: list = []

    def ask(self, n: int) -> np.ndarray:
        """Actions for `n` episodes, shape (n, steps)."""
        self._asked = [self.study.ask(self.distributions) for _ in range(n)]
        return np.asarray([[trial.params[name] for name in self.names] for trial in self._asked])

    def tell(self, rewards: list[float]) -> None:
        for trial, reward in zip(self._asked, rewards, strict=True):
            self.study.tell(trial, reward)
            self.history.append({"params": trial.params, "reward": float(reward)})
        self._asked = []
