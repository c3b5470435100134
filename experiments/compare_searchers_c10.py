"""Is the learned search worth it? DDPG against what users would pick instead, over seeds, on ResNet-20 /
CIFAR-10 (issue 19): Optuna's TPE and CMA-ES, random search, uniform, and Torch-Pruning's global pruning,
every best student KD fine-tuned with the benchmark's 15-epoch recipe.

    python experiments/compare_searchers_c10.py run --rows ddpg:0 tpe:0 cmaes:0 random:0 uniform:0 global-taylor:0
    python experiments/compare_searchers_c10.py report

A row is METHOD:SEED. The seed is the fine-tune's, and for a search (ddpg, td3, tpe, cmaes, random) the
search's too; uniform and global-IMPORTANCE are deterministic, so only their fine-tune varies. Rows of one seed
share the fine-tune's seed (data order, augmentation), which is what the paired differences pair.
The attempts to make DDPG win (ATTEMPTS: td3, ddpg-normreward, ddpg-warmup200, and `ddpg+global-taylor`, DDPG
whose first episode plays global-taylor's policy, `init_policy: global`) get their own table, paired with DDPG and
with the best method. Every stage of a row is resumable and its folder is keyed by the row's full settings, so changed
settings never reuse an old result. Finished rows are merged into experiments/results/searchers.json; `report`
writes searchers.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rows import (
    finetune_row,
    interval_text,
    keyed_folder,
    merge_row,
    paired,
    read_rows,
    search_in,
    search_settings,
    write_readme_block,
    write_whole,
)
from script_args import run_script

from agents.config import SearchConfig, flat_config, load_config
from agents.search import evaluation_settings, load_teacher_and_data
from amc.checkpoint import load_checkpoint
from amc.commands.evaluate import evaluate_report
from amc.compress.policy import CompressionPolicy
from amc.compress.student import save_student
from amc.cost.budget import Budget
from amc.cost.latency import resolve_round_to
from amc.cost.predicted import CostModel
from amc.errors import AmcError
from amc.evaluate.baselines import GLOBAL_IMPORTANCES, global_pruning
from amc.evaluate.evaluator import CandidateEvaluator

SEARCHES = ("ddpg", "td3", "tpe", "cmaes", "random")
GLOBALS = tuple(f"global-{name}" for name in GLOBAL_IMPORTANCES)
TUNED = {"ddpg-normreward": ("ddpg", {"normalize_reward": True}), "ddpg-warmup200": ("ddpg", {"warmup_episodes": 200})}
"""DDPG with one setting changed: name -> (agent, {search-config key: value})."""
WARM_STARTED = tuple(f"{agent}+{start}" for agent in ("ddpg", "td3") for start in GLOBALS)
"""A search whose first episode plays that global-pruning policy (`init_policy: global`)."""
METHODS = (*SEARCHES, *TUNED, *WARM_STARTED, "uniform", *GLOBALS)
ATTEMPTS = ("td3", *TUNED, *WARM_STARTED)
"""Issue 19's attempts to make DDPG win: reported apart from the methods users would pick, against DDPG. One
with every planned seed also competes for the answer, since it would become the shipped searcher if it won."""
SEEDS_PLANNED = 3


@dataclass
class Args:
    command: str
    rows: list[str] = field(default_factory=list)
    config: str = "experiments/configs/resnet20_c10_flops30.yaml"
    episodes: int = 400
    workers: int = 2
    finetune_epochs: int = 15
    finetune_threads: int = 2
    """Torch threads of the fine-tune (the search's workers take one each, under OMP_NUM_THREADS=1)."""
    set: list[str] = field(default_factory=list)
    """Extra search-config overrides, KEY=VALUE (e.g. data_dir=...)."""
    out_dir: str = "runs/searchers"
    results: str = "experiments/results/searchers.json"
    readme: str = "README.md"
    """README whose searchers block `report` rewrites (left alone where it has none)."""


@dataclass
class Row:
    method: str
    seed: int
    args: Args

    @classmethod
    def parse(cls, text: str, args: Args) -> Row:
        method, _, seed = text.partition(":")
        if method not in METHODS or not seed.isdigit():
            raise AmcError(f"row {text!r} must be METHOD:SEED, METHOD one of {', '.join(METHODS)}, SEED >= 0")
        return cls(method, int(seed), args)

    @property
    def searcher(self) -> str | None:
        agent = self.method.split("+")[0]
        agent = TUNED.get(agent, (agent,))[0]
        return agent if agent in SEARCHES else None

    def config(self) -> SearchConfig:
        overrides = [f"episodes={self.args.episodes}", f"workers={self.args.workers}",
                     f"agent={self.searcher or 'uniform'}", f"seed={self.seed if self.searcher else 0}",
                     *(f"{key}={value}" for key, value in TUNED.get(self.method, (None, {}))[1].items())]  # fmt: skip
        if "+" in self.method:
            importance = self.method.split("+")[1].removeprefix("global-")
            overrides += ["init_policy=global", f"global_importance={importance}"]
        return load_config(self.args.config, [*overrides, *self.args.set])

    @property
    def settings(self) -> dict:
        return {"method": self.method, "seed": self.seed, "search": search_settings(self.config()),
                "finetune_epochs": self.args.finetune_epochs}  # fmt: skip

    @property
    def folder(self) -> Path:
        return keyed_folder(self.args.out_dir, f"{self.method}-s{self.seed}", self.settings)


def searched_student(row: Row) -> tuple[Path, dict]:
    """The row's student before the long fine-tune (what the search reward saw) and its report."""
    cfg = row.config()
    if row.method.startswith("global-"):
        return global_student(row, cfg)
    results = search_in(row.folder, cfg)
    run_dir = Path(results["run_dir"])
    return run_dir / "student.pt", {
        "before": results["student"], "search_minutes": results["search_minutes"], "episodes": results["episodes"],
        "candidates": results.get("evaluations"), "best_reward": results["best_reward"],
    }  # fmt: skip


def global_policy(cfg: SearchConfig, method: str, teacher, data) -> CompressionPolicy:
    """Global pruning (`global-IMPORTANCE`, default per-layer cap) to the config's budget."""
    cost_model = CostModel(teacher, data.input_shape)
    return global_pruning(teacher, data.input_shape, cost_model, Budget.parse(cfg.env.budget),
                          importance=method.removeprefix("global-"), data=data,
                          round_to=resolve_round_to(cfg.env.round_to))  # fmt: skip


def global_student(row: Row, cfg: SearchConfig) -> tuple[Path, dict]:
    """Global pruning to the budget, built the way a search builds its final student."""
    path, report_path = row.folder / "student.pt", row.folder / "student.json"
    if report_path.exists():
        return path, json.loads(report_path.read_text())
    started = time.perf_counter()
    blob = load_checkpoint(cfg.teacher)
    teacher, data = load_teacher_and_data(cfg, blob)
    policy = global_policy(cfg, row.method, teacher, data)
    student = CandidateEvaluator(teacher, data, evaluation_settings(cfg)).build_student(policy).cpu()
    report = {"before": evaluate_report(student, data), "search_minutes": (time.perf_counter() - started) / 60,
              "episodes": 0, "candidates": 1, "best_reward": None}  # fmt: skip
    row.folder.mkdir(parents=True, exist_ok=True)
    save_student(path, student, blob, policy, metrics=report["before"])
    report_path.write_text(json.dumps(report, indent=1))
    return path, report


def run(args: Args) -> None:
    for row in [Row.parse(text, args) for text in args.rows]:  # every row checked before hours of work
        method, seed = row.method, row.seed
        student, searched = searched_student(row)
        cfg = row.config()
        tuned = finetune_row(row.folder, student, cfg.teacher, epochs=row.args.finetune_epochs, seed=row.seed,
                             data_dir=cfg.data_dir, threads=row.args.finetune_threads)  # fmt: skip
        before = searched["before"]
        result = {
            "method": method, "seed": seed, "folder": str(row.folder), "budget": row.config().env.budget,
            "acc_test_noft": before["accuracy"], "acc_val_noft": before["val_accuracy"],
            "acc_test_ft": tuned["accuracy"], "acc_val_ft": tuned["val_accuracy"],
            "flops": before["flops"], "search_minutes": searched["search_minutes"], "episodes": searched["episodes"],
            "candidates": searched["candidates"], "best_reward": searched["best_reward"],
            "finetune_minutes": tuned["finetune_seconds"] / 60, "settings": row.settings,
            "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        }  # fmt: skip
        merge_row(args.results, result)
        print(json.dumps({k: result[k] for k in ("method", "seed", "acc_test_noft", "acc_test_ft")}), flush=True)


EARLIER_ATTEMPT = (
    "AMC's baseline subtracted at sample time (`credit_baseline: sample`) was tried first, at 50% FLOPs with the "
    "default reward and 5 paired seeds: it found no better students than amc's store-time baseline "
    "([credit_assignment.md](credit_assignment.md)), so the rows here keep `store`."
)
README_BLOCK = ("<!-- searchers: written by experiments/compare_searchers_c10.py report -->", "<!-- /searchers -->")


def standings(rows: list[dict]) -> tuple[dict, dict, dict]:
    """Rows as {method: {seed: row}}: (the methods users would pick, the attempts, and the contenders for the
    answer: the methods and every attempt with all its planned seeds)."""
    by_method: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["seed"]] = r
    methods = {m: seeds for m, seeds in by_method.items() if m not in ATTEMPTS}
    attempts = {m: seeds for m, seeds in by_method.items() if m in ATTEMPTS}
    return methods, attempts, {**methods, **{m: s for m, s in attempts.items() if len(s) >= SEEDS_PLANNED}}


def mean_after_finetune(by_method: dict[str, dict[int, dict]]) -> dict[str, float]:
    return {m: statistics.mean(r["acc_test_ft"] for r in seeds.values()) for m, seeds in by_method.items()}


def report(args: Args) -> None:
    rows = read_rows(args.results, "compare_searchers_c10.py run --rows ...")
    methods, attempts, contenders = standings(rows)
    budgets = sorted({r["budget"] for r in rows})
    lines = [f"# Searchers compared over seeds ({', '.join(budgets)})", "",
             "Generated by `python experiments/compare_searchers_c10.py report` from searchers.json. Test accuracy "
             "in %; FT = the benchmark's 15-epoch KD fine-tune. Seed s = search seed s (for the searches) and "
             "fine-tune seed s (for every method; uniform and global pruning are deterministic, so only their "
             "fine-tune varies).", "", *_table(methods)]  # fmt: skip
    means = mean_after_finetune(contenders)
    if len(means) > 1:
        best, verdicts = _paired_against_best(contenders, means)
        lines += ["", f"## Paired differences after FT against {best} (same seed index), 95% t interval", "",
                  f"| method | pairs | {best} minus method, mean (points) | 95% CI |", "|---|---|---|---|"]  # fmt: skip
        lines += [_paired_line(method, pairs, mean, half) for method, pairs, mean, half in verdicts]
        shipped = method_of(load_config(args.config))
        answer = _answer(best, means, verdicts, min(len(contenders[m]) for m in _planned(means)))
        answer[0] += f" The shipped `{args.config}` searches with {shipped}" + (
            "." if shipped == best else f", not {best}: the config is behind the evidence."
        )
        lines += ["", answer[0], *answer[1:]]
        _write_readme_block(Path(args.readme), contenders, means, best, verdicts, answer[0])
        lines += ["", "## Attempts to make DDPG win", "", EARLIER_ATTEMPT]
        if attempts:
            others = ["ddpg"] + ([best] if best != "ddpg" else [])
            lines += ["", "Each row below is DDPG (or TD3) with one thing changed; the differences are the attempt "
                      f"minus {' and minus '.join(others)}, paired by seed, in points.", "", *_table(attempts), "",
                      "| attempt | " + " | ".join(f"minus {o}: pairs, mean [95% CI]" for o in others) + " |",
                      "|---|" + "---|" * len(others)]  # fmt: skip
            for method, seeds in sorted(attempts.items()):
                cells = [_difference(seeds, contenders.get(other, {})) for other in others]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
    out = Path(args.results).with_suffix(".md")
    write_whole(out, "\n".join(lines) + "\n")
    print(f"wrote {out}")
    if len(means) > 1 and shipped != best:  # the report's check: the shipped config follows the evidence
        sys.exit(
            f"{args.config} searches with {shipped}, but {best} has the best mean after fine-tuning; "
            f"point the config at {best}"
        )


def method_of(cfg: SearchConfig) -> str:
    """The comparison's name for the searcher `cfg` runs (what `Row.config` sets, read back)."""
    if cfg.agent.algorithm == "global":
        return f"global-{cfg.agent.global_importance}"
    if cfg.agent.init_policy == "global":
        return f"{cfg.agent.algorithm}+global-{cfg.agent.global_importance}"
    flat = flat_config(cfg)
    tuned = [name for name, (agent, changed) in TUNED.items()
             if flat["agent"] == agent and all(flat[key] == value for key, value in changed.items())]  # fmt: skip
    return tuned[0] if tuned else cfg.agent.algorithm


def _table(by_method: dict[str, dict[int, dict]]) -> list[str]:
    lines = ["| method | seeds | best search reward | before FT, mean ± sd | after FT, mean ± sd | after FT, each seed "
             "| search min | candidates |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, seeds in sorted(by_method.items()):
        rs = [seeds[s] for s in sorted(seeds)]
        each = ", ".join(f"{100 * r['acc_test_ft']:.2f}" for r in rs)
        counted = [r["candidates"] for r in rs if r["candidates"] is not None]
        candidates = f"{statistics.mean(counted):.0f}" if counted else "–"  # None: not counted over a resume
        rewards = [r["best_reward"] for r in rs if r.get("best_reward") is not None]  # None: global pruning
        reward = f"{statistics.mean(rewards):.3f}" if rewards else "–"
        lines.append(f"| {method} | {len(rs)} | {reward} | {_pct(r['acc_test_noft'] for r in rs)} | "
                     f"{_pct(r['acc_test_ft'] for r in rs)} | {each} | "
                     f"{statistics.mean(r['search_minutes'] for r in rs):.1f} | {candidates} |")  # fmt: skip
    return lines


def _paired(seeds: dict[int, dict], others: dict[int, dict]) -> tuple[int, float, float] | None:
    """`seeds` minus `others` after FT over their shared seeds, in points: (pairs, mean, 95% half-width)."""

    def points(rows: dict[int, dict]) -> dict[int, float]:
        return {seed: 100 * r["acc_test_ft"] for seed, r in rows.items()}

    return paired(points(seeds), points(others))


def _difference(seeds: dict[int, dict], others: dict[int, dict]) -> str:
    """`_paired` as 'pairs, mean [95% CI]'."""
    difference = _paired(seeds, others)
    if difference is None:
        return "no pairs yet"
    pairs, mean, half = difference
    return f"{pairs}, {mean:+.2f}" + ("" if half != half else f" {interval_text(mean, half)}")


def _paired_line(method: str, pairs: int, mean: float, half: float) -> str:
    return f"| {method} | {pairs} | {mean:+.2f} | {interval_text(mean, half)} |"


def _pct(values) -> str:
    values = [100 * v for v in values]
    if len(values) < 2:
        return f"{values[0]:.2f} (one seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _paired_against_best(by_method: dict, means: dict) -> tuple[str, list]:
    """The method with the best mean after FT, and (method, pairs, mean, half-width) of best minus each other."""
    ranked = sorted(means, key=means.get, reverse=True)
    best, verdicts = ranked[0], []
    for method in ranked[1:]:
        difference = _paired(by_method[best], by_method[method])
        if difference is not None:
            verdicts.append((method, *difference))
    return best, verdicts


def _planned(means: dict[str, float]) -> list[str]:
    """The methods issue 19 plans 3 seeds of: every search, uniform, and the best global importance."""
    globals_ = [m for m in means if m.startswith("global-")]
    return [m for m in means if not m.startswith("global-")] + ([max(globals_, key=means.get)] if globals_ else [])


def _answer(best: str, means: dict, verdicts: list, fewest_seeds: int) -> list[str]:
    top = f"{100 * means[best]:.2f}%"
    lines = [f"**The answer.** After fine-tuning, {best} has the highest mean test accuracy ({top})."]
    if fewest_seeds < SEEDS_PLANNED:
        lines[0] += f" Provisional: some methods have {fewest_seeds} seed(s) of the {SEEDS_PLANNED} planned."
    beyond = [method for method, _, mean, half in verdicts if mean - half > 0]  # NaN half-width: never beyond
    within = [method for method, _, mean, half in verdicts if half == half and mean - half <= 0]
    if beyond:
        lines[0] += f" It leads {_listed(beyond)} beyond the noise (paired 95% interval above zero)."
    if within:
        lines[0] += f" {_listed(within).capitalize()} {'lies' if len(within) == 1 else 'lie'} within the noise of it."
    for method, _, mean, half in verdicts:
        if half != half:  # one pair: no interval yet
            lines.append(f"- against {method}: {mean:+.2f} points from one pair; no interval until more seeds run.")
        else:
            beyond = mean - half > 0
            lines.append(f"- against {method}: {mean:+.2f} points, "
                         f"{'beyond' if beyond else 'within'} the noise (95% interval ±{half:.2f}).")  # fmt: skip
    return lines


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _write_readme_block(readme: Path, by_method: dict, means: dict, best: str, verdicts: list, answer: str) -> None:
    """The README's summary table, rewritten between its markers so that no figure there goes stale."""
    gaps = {method: (mean, half) for method, _, mean, half in verdicts}
    table = [
        f"| method | seeds | after FT, mean ± sd | {best} minus it [95% CI] | search min |",
        "|---|---|---|---|---|",
    ]
    for method in sorted(means, key=means.get, reverse=True):
        rs = list(by_method[method].values())
        mean, half = gaps.get(method, (None, None))
        gap = "–" if mean is None else f"{mean:+.2f} " + ("[one pair]" if half != half else
                                                           f"[{mean - half:+.2f}, {mean + half:+.2f}]")  # fmt: skip
        table.append(f"| {method} | {len(rs)} | {_pct(r['acc_test_ft'] for r in rs)} | {gap} | "
                     f"{statistics.mean(r['search_minutes'] for r in rs):.1f} |")  # fmt: skip
    write_readme_block(readme, README_BLOCK, [*table, "", answer])


if __name__ == "__main__":
    commands = {"run": run, "report": report}
    run_script(lambda args: commands[args.command](args), Args, __doc__, list(commands))
