"""What every experiment's rows share (Torch-Pruning's `reproduce/` keeps its helpers in one place, too):

- the machine a figure was measured on;
- a row's settings as a digest that keys its run folder (rows with other settings never reuse an old result),
  and its search in that folder, reused when finished and resumed when interrupted;
- a row's 15-epoch KD fine-tune, resumable, run once;
- result rows merged row by row and every page and README block written whole (never a half-written file);
- paired differences over seeds with Student's t 95% intervals;
- a deployment target named on the command line (`openvino-int8-b64`).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

import torch

from agents.config import SearchConfig, flat_config, load_config
from agents.search import resume_config_path, run_search
from agents.workers import available_cores
from amc.commands.finetune import FinetuneConfig, finetune_command
from amc.cost.latency import resolve_round_to
from amc.deploy.runtimes import RUNTIMES, Target, describe_cpu
from amc.errors import AmcError

# the machine


def describe() -> dict:
    """CPU model and flags, cores, torch version and GPU, recorded beside every row."""
    info = {**describe_cpu(), "cores": available_cores(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# a row's settings and its search

# Where and how fast a search runs, and how its final report is sized, not what it computes. Keep this list in
# step with new config keys, or finished rows stop matching their folders.
RUNTIME_KEYS = ("workers", "backend", "ray_address", "worker_threads", "out_dir", "name", "device", "report_samples",
                "report_latency_repeats", "resume_without_buffer")  # fmt: skip


# Keys added after rows were keyed: left out of the digest at these defaults, so those rows keep their folders.
ADDED_LATER = {"credit_baseline": "store", "init_policy": None, "global_importance": "taylor",
               "max_pruning_ratio": 0.8, "normalize_reward": False, "runtime": "eager",
               "runtime_precision": "fp32", "reward_in_runtime": False}  # fmt: skip


def search_settings(cfg: SearchConfig) -> dict:
    settings = flat_config(cfg)
    for key in RUNTIME_KEYS:
        settings.pop(key)
    if settings["runtime"] == "eager" and settings["runtime_precision"] == "fp32":
        settings.pop("reward_in_runtime", None)  # no runtime to score in
    for key, default in ADDED_LATER.items():
        if settings.get(key, default) == default:
            settings.pop(key, None)
    if not settings["latency_table"]:  # round_to was a number before `auto`; without a table auto means 1
        settings["round_to"] = resolve_round_to(settings["round_to"])
    settings["checkpoint_every"] = 10  # does not change the result; pinned to the value the first rows were keyed with
    return settings


def keyed_folder(parent: str | Path, name: str, settings: dict) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return Path(parent) / f"{name}-{digest}"


def search_in(folder: Path, cfg: SearchConfig) -> dict:
    """The results of `cfg`'s search in `folder`: read when it finished, resumed when it was interrupted."""
    runs = sorted(folder.glob("search-*"))
    done = [r for r in runs if (r / "results.json").exists()]
    if done:
        return json.loads((done[-1] / "results.json").read_text())
    if runs:
        return run_search(load_config(resume_config_path(runs[-1])), resume_dir=runs[-1])
    cfg.run.out_dir, cfg.run.name = str(folder), "search"
    return run_search(cfg)


def finetune_row(
    folder: Path,
    student: str | Path,
    teacher: str,
    *,
    epochs: int,
    seed: int = 0,
    data_dir: str | None = None,
    threads: int | None = None,
) -> dict:
    """The row's KD fine-tune of `student` in `folder` (`student_ft.pt`, `finetune.json`): read when it finished,
    resumed when it was interrupted; `threads` torch threads while it runs."""
    done, out = folder / "finetune.json", folder / "student_ft.pt"
    if done.exists():
        return json.loads(done.read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        result = finetune_command(FinetuneConfig(student=str(student), teacher=teacher, out=str(out), seed=seed,
                                                 epochs=epochs, data_dir=data_dir), resume=out.exists())  # fmt: skip
    finally:
        torch.set_num_threads(before)
    write_whole(done, json.dumps(result, indent=1))
    return result


# rows and pages on disk


def write_whole(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place: never a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def page_head(script: str, results: Path, title: str, about: str) -> list[str]:
    """A generated page's first lines: its title, which script wrote it from which rows, and what it measures."""
    return [f"# {title}", "", f"Generated by `python experiments/{script} report` from {results.name}. {about}", ""]


def read_rows(path: str | Path, make_them: str) -> list[dict]:
    """A report's rows; one line saying how to make them (`make_them`: the command) where there are none."""
    path = Path(path)
    if not path.exists():
        raise AmcError(f"{path} does not exist yet; make rows with `python experiments/{make_them}`")
    return json.loads(path.read_text())


def merge_row(path: str | Path, row: dict, key: str = "folder") -> None:
    """Replace the row with the same `key` (or add it)."""
    path = Path(path)
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if r.get(key) != row[key]] + [row]
    write_whole(path, json.dumps(rows, indent=1) + "\n")


def write_readme_block(readme: str | Path, markers: tuple[str, str], lines: list[str]) -> bool:
    """Rewrite the README's text between `markers` (left alone, and False, where it has none)."""
    readme = Path(readme)
    text = readme.read_text() if readme.exists() else ""
    begin, end = markers
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    write_whole(readme, head + "\n".join([begin, "", *lines, "", end]) + rest.split(end, 1)[1])
    return True


# paired statistics


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width (Student's t) of paired differences; the half-width is nan for one pair."""
    from scipy import stats

    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, float("nan")
    return mean, stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5


def paired(mine: dict[int, float], others: dict[int, float]) -> tuple[int, float, float] | None:
    """`mine` minus `others` over their shared seeds: (pairs, mean, 95% half-width), or None without a pair."""
    seeds = sorted(set(mine) & set(others))
    if not seeds:
        return None
    return len(seeds), *t_interval([mine[s] - others[s] for s in seeds])


def mean_sd(values: list, scale: float = 1.0) -> str:
    """`mean ± sd` of the values given (None skipped), times `scale`; the value alone for one, – for none."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def interval_text(mean: float, half: float) -> str:
    """'[low, high]' in signed points, or '–' for a single pair."""
    return "–" if half != half else f"[{mean - half:+.2f}, {mean + half:+.2f}]"


def parse_target(text: str) -> Target:
    """`RUNTIME-PRECISION-bBATCH` (e.g. openvino-int8-b64) as a one-thread deployment target."""
    parts = text.split("-")
    if len(parts) != 3 or parts[0] not in RUNTIMES or not parts[2].startswith("b") or not parts[2][1:].isdigit():
        raise AmcError(f"target {text!r} must be RUNTIME-PRECISION-bBATCH, e.g. openvino-int8-b64")
    return Target(parts[0], parts[1], int(parts[2][1:]), threads=1)
