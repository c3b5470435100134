"""The search layer's typed configs (`SearchConfig`, `PredictConfig`, `ReportConfig`; amc/config.py holds the
core commands'), and how any command's config is resolved: defaults, then a YAML file, then `--flags`, then
`--set key=value`, every value checked against the field's type (one line naming the key when it is wrong)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from amc.config import doc
from amc.device import DEVICE_HELP
from amc.errors import AmcError
from amc.files import read_user_text


@dataclass
class SearchConfig:
    """Search a per-layer compression policy for a teacher under a budget."""

    name: str = doc("search", "run name; the run folder is <out_dir>/<name>-<timestamp>")
    teacher: str = doc("teacher.pt", "teacher checkpoint")
    dataset: str | None = doc(None, "data set (default: the teacher's)")
    data_dir: str | None = doc(None, "data folder or .tar.gz (default: the teacher's)")
    budget: str = doc("flops=0.5", "budget as ratios of the teacher: flops=0.5, size=0.1, latency=0.6, ...")
    mode: str = doc("channel", "channel, fine-grained, removal, removal+channel, quantize, channel+quantize")
    reward: str = doc("acc", "acc, err_log_flops, n2n or haq")
    agent: str = doc(
        "ddpg",
        "ddpg, td3, sac; tpe or cmaes (Optuna); random (random keep ratios scaled to the budget), random-actions; "
        "or one-shot: uniform, global (global pruning by global_importance)",
    )
    episodes: int = doc(400, "episodes in total, warm-up included")
    warmup_episodes: int = doc(100, "episodes of uniformly random actions before the agent learns")
    hidden: list[int] = doc([300, 300], "hidden layers of actor and critic")
    actor_lr: float = doc(1e-4, "actor learning rate")
    critic_lr: float = doc(1e-3, "critic learning rate")
    tau: float = doc(0.01, "target-network soft update")
    gamma: float = doc(1.0, "discount")
    batch_size: int = doc(64, "agent batch size")
    noise_sigma: float = doc(0.5, "initial exploration noise (action units)")
    noise_decay: float = doc(0.95, "noise decay per episode after warm-up")
    baseline_decay: float = doc(0.5, "moving-average rate of the reward baseline")
    credit_baseline: str = doc(
        "store", "where the baseline is subtracted: store (when an episode is stored) or sample (AMC's code)"
    )
    normalize_reward: bool = doc(False, "divide sampled rewards by the std of all stored rewards (unit-scale critic)")
    eval_samples: int = doc(1000, "validation images per reward evaluation")
    recalibrate_batches: int = doc(20, "BatchNorm recalibration batches before each evaluation (0: off)")
    finetune_steps: int = doc(0, "KD fine-tuning steps before each evaluation (0: off)")
    reconstruct: bool = doc(False, "least-squares refit of layers that lost inputs, before each evaluation")
    min_keep: float = doc(0.2, "smallest keep ratio an action can choose")
    max_sparsity: float = doc(0.9, "largest fine-grained sparsity an action can choose")
    min_bits: int = doc(2, "smallest weight bit width")
    max_bits: int = doc(8, "largest weight bit width")
    round_to: str = doc("auto", "round kept channels to a multiple of this; auto: the latency table's fastest, else 1")
    latency_table: str | None = doc(
        None, "latency table JSON (from `amc profile-latency --runtime R --runtime-precision P`), for latency budgets"
    )
    runtime: str = doc("eager", "where latency is measured: eager, onnxruntime or openvino (the table must match)")
    runtime_precision: str = doc("fp32", "the deployed precision: fp32 or int8 (the table must match)")
    reward_in_runtime: bool = doc(
        True, "with a runtime: score candidates by their accuracy there, at runtime_precision (off: PyTorch fp32)"
    )
    global_importance: str = doc("taylor", "agent global: l1, l1-normalized, lamp or taylor (Torch-Pruning's)")
    max_pruning_ratio: float = doc(0.8, "agent global: the most of any one unit's channels removed (<= 1 - min_keep)")
    init_agent: str | None = doc(
        None, "warm-start actor and critic from a saved agent.pt (another budget or model); shorten warmup_episodes"
    )
    init_policy: str | None = doc(
        None,
        "a policy that ddpg, td3 or sac play first, so the search starts from it: global or uniform (that one-shot "
        "policy, made for this teacher and budget) or a channel policy.json (e.g. from `amc baseline global`)",
    )
    checkpoint_every: int = doc(1, "save the agent and the search state every this many episodes (0: only on stop)")
    resume_without_buffer: bool = doc(
        False, "resume a run whose replay_buffer.npz is gone, with the agent's memory empty (refused otherwise)"
    )
    final_finetune_epochs: int = doc(0, "KD fine-tune the best student for this many epochs at the end")
    report_samples: int | None = doc(None, "test and val images in the final report (default: all)")
    report_latency_repeats: int = doc(20, "timed repeats per batch size in the final report's latencies")
    precision: str = doc("auto", "auto (bf16 where the device runs it natively, else fp32), bf16 or fp32")
    seed: int = doc(0, "seed of the agent, its noise and the random searcher")
    device: str = doc("auto", DEVICE_HELP)
    workers: int = doc(1, "episodes run side by side, each student evaluated by its own worker")
    backend: str = doc("auto", "where workers run: local (processes here; auto's choice for workers > 1) or ray")
    ray_address: str | None = doc(None, "backend ray: join this cluster (auto or host:port); unset starts a local Ray")
    worker_threads: int | None = doc(None, "torch threads per worker (default: this machine's cores / workers)")
    out_dir: str = doc("runs", "parent folder of run folders")


@dataclass
class PredictConfig:
    """Run a saved agent greedily on a teacher and budget and write the policy it chooses."""

    agent: str = doc("agent.pt", "agent saved by `amc search` (its config.yaml beside it sets mode and ranges)")
    teacher: str = doc("teacher.pt", "teacher checkpoint to compress")
    budget: str | None = doc(None, "budget, e.g. flops=0.4 (default: the search's)")
    mode: str | None = doc(None, "compression mode (default: the search's)")
    data_dir: str | None = doc(None, "data for the accuracy check (default: the teacher's)")
    out: str = doc("policy.json", "policy JSON to write")
    device: str = doc("auto", DEVICE_HELP)
    json: bool = doc(False, "print one JSON object as the last line of stdout")


@dataclass
class ReportConfig:
    """Write a one-page Markdown summary with PNG plots of a search run."""

    run_dir: str = doc("runs/search", "run folder written by `amc search`", positional=True)
    out: str | None = doc(None, "folder for report.md and the PNGs (default: RUN_DIR/report)")
    json: bool = doc(False, "print one JSON object as the last line of stdout")


_EXAMPLES = {"int": "a whole number, e.g. 400", "float": "a number, e.g. 0.5", "list": "a list, e.g. [300, 300]",
             "bool": "true or false", "str": "text"}  # fmt: skip
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def coerce(value, hint, label: str):
    """`value` as the field type `hint` (X | None allowed); AmcError naming `label` when it is not one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    target = typing.get_origin(hint) or hint
    if value is None:
        return None
    try:
        if target is list:
            items = value if isinstance(value, list) else yaml.safe_load(str(value))
            if not isinstance(items, list):
                raise ValueError(value)
            return [int(v) for v in items]
        if target is bool:
            if isinstance(value, bool):
                return value
            return _BOOLS[str(value).lower()]
        if isinstance(value, (list, dict)):
            raise ValueError(value)
        if target is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)  # int(1.7) would silently become 1
        return target(value)
    except (TypeError, ValueError, KeyError) as exc:
        example = _EXAMPLES.get(target.__name__, target.__name__)
        raise AmcError(f"{label} is not a valid {target.__name__}; write {example}") from exc


def _yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AmcError(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resolve_config(cls, path: str | Path | None = None, flags: dict | None = None, overrides=(), command: str = ""):
    """A `cls` from its defaults, then the YAML file at `path`, then `flags` ({field: raw value}), then
    `key=value` overrides (YAML values); unknown keys and values of the wrong type are refused."""
    hints = typing.get_type_hints(cls)
    values: dict = {}
    if path is not None:
        path = Path(path)
        text = read_user_text(
            path, "config file", "pass a YAML file such as experiments/configs/resnet20_c10_flops30.yaml"
        )
        loaded = _yaml(text, str(path)) or {}
        if not isinstance(loaded, dict):
            raise AmcError(f"{path} must hold a YAML mapping of {cls.__name__} fields")
        values.update({k: (v, f"config key {k}={v!r} in {path}") for k, v in loaded.items()})
    for key, raw in (flags or {}).items():
        values[key] = (raw, f"config key {key}={raw}")
    for item in overrides:
        if "=" not in item:
            raise AmcError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        parsed = _yaml(raw, f"--set {item}")
        values[key] = (parsed, f"config key {key}={parsed!r}")
    unknown = set(values) - set(hints)
    if unknown:
        raise AmcError(f"unknown config keys {sorted(unknown)}; see `amc {command or '<command>'} --help`")
    return cls(**{k: coerce(v, hints[k], label) for k, (v, label) in values.items()})


def load_config(path: str | Path | None = None, overrides=()) -> SearchConfig:
    """A `SearchConfig` from a YAML file and `key=value` overrides."""
    return resolve_config(SearchConfig, path, None, overrides, command="search")


def dump_config(cfg, path: Path) -> None:
    """The resolved config as YAML, written atomically; `--config` reads it back."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    tmp.replace(path)


def config_help(cls) -> str:
    hints = typing.get_type_hints(cls)
    lines = ["config keys (in the --config YAML file, as --set key=value, or as flags: --data-dir x for data_dir=x):"]
    for f in dataclasses.fields(cls):
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name} ({kind}, default {default!r}): {f.metadata['help']}")
    return "\n".join(lines)
