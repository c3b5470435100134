"""The search layer's typed configs: `SearchConfig` (a tree of env, evaluation, agent and run sections),
`PredictConfig` and `ReportConfig`. The core commands' configs live with their commands in amc/commands/, and
agents/cli_config.py resolves any of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from agents.cli_config import resolve_config
from amc.config import data_dir_field, device_field, doc, section, teacher_field


@dataclass
class EnvConfig:
    """What is compressed and under which budget: the env's walk and its action ranges."""

    budget: str = doc("flops=0.5", "budget as ratios of the teacher: flops=0.5, size=0.1, latency=0.6, ...")
    mode: str = doc("channel", "channel, fine-grained, removal, removal+channel, quantize, channel+quantize")
    reward: str = doc("acc", "acc, err_log_flops, n2n or haq")
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
    embedding: bool = doc(False, "transformers: search the embedding width (the residual stream) too")


@dataclass
class EvaluationConfig:
    """How each candidate student is scored (the reward's accuracy)."""

    eval_samples: int = doc(1000, "validation images per reward evaluation")
    recalibrate_batches: int = doc(20, "BatchNorm recalibration batches before each evaluation (0: off)")
    finetune_steps: int = doc(0, "KD fine-tuning steps before each evaluation (0: off)")
    reconstruct: bool = doc(False, "least-squares refit of layers that lost inputs, before each evaluation")
    precision: str = doc("auto", "auto (bf16 where the device runs it natively, else fp32), bf16 or fp32")
    reward_in_runtime: bool = doc(
        True, "with a runtime: score candidates by their accuracy there, at runtime_precision (off: PyTorch fp32)"
    )


@dataclass
class AgentConfig:
    """Who chooses the actions: the RL agent, a black-box optimiser or a one-shot baseline."""

    algorithm: str = doc(
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
    seed: int = doc(0, "seed of the agent, its noise and the random searcher")


@dataclass
class RunConfig:
    """Where and how the search runs, what it saves, and what it reports at the end."""

    name: str = doc("search", "run name; the run folder is <out_dir>/<name>-<timestamp>")
    out_dir: str = doc("runs", "parent folder of run folders")
    device: str = device_field()
    workers: int = doc(1, "episodes run side by side, each student evaluated by its own worker")
    backend: str = doc("auto", "where workers run: local (processes here; auto's choice for workers > 1) or ray")
    ray_address: str | None = doc(None, "backend ray: join this cluster (auto or host:port); unset starts a local Ray")
    worker_threads: int | None = doc(None, "torch threads per worker (default: this machine's cores / workers)")
    checkpoint_every: int = doc(1, "save the agent and the search state every this many episodes (0: only on stop)")
    resume_without_buffer: bool = doc(
        False, "resume a run whose replay_buffer.npz is gone, with the agent's memory empty (refused otherwise)"
    )
    final_finetune_epochs: int = doc(0, "KD fine-tune the best student for this many epochs at the end")
    report_samples: int | None = doc(None, "test and val images in the final report (default: all)")
    report_latency_repeats: int = doc(20, "timed repeats per batch size in the final report's latencies")


@dataclass
class SearchConfig:
    """Search a per-layer compression policy for a teacher under a budget."""

    teacher: str = teacher_field()
    dataset: str | None = doc(None, "data set (default: the teacher's)")
    data_dir: str | None = data_dir_field()
    env: EnvConfig = section(EnvConfig, "the budget, the compression mode and the action ranges")
    evaluation: EvaluationConfig = section(EvaluationConfig, "how each candidate is scored")
    agent: AgentConfig = section(AgentConfig, "the searcher and its hyper-parameters")
    run: RunConfig = section(RunConfig, "where it runs, what it saves and reports")


@dataclass
class PredictConfig:
    """Run a saved agent greedily on a teacher and budget and write the policy it chooses."""

    agent: str = doc("agent.pt", "agent saved by `amc search` (its config.yaml beside it sets mode and ranges)")
    teacher: str = doc("teacher.pt", "teacher checkpoint to compress")
    budget: str | None = doc(None, "budget, e.g. flops=0.4 (default: the search's)")
    mode: str | None = doc(None, "compression mode (default: the search's)")
    data_dir: str | None = data_dir_field("data for the accuracy check (default: the teacher's)")
    out: str = doc("policy.json", "policy JSON to write")
    device: str = device_field()


@dataclass
class ReportConfig:
    """Write a one-page Markdown summary with PNG plots of a search run."""

    run_dir: str = doc("runs/search", "run folder written by `amc search`", positional=True)
    out: str | None = doc(None, "folder for report.md and the PNGs (default: RUN_DIR/report)")


def flat_config(cfg: SearchConfig) -> dict:
    """The config as one flat mapping under its earlier names (`agent` for `agent.algorithm`): what row digests,
    TensorBoard's table and comparisons by key read."""
    flat = {}
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, dict):
            flat.update({("agent" if (key, k) == ("agent", "algorithm") else k): v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def load_config(path: str | Path | None = None, overrides=()) -> SearchConfig:
    """A `SearchConfig` from a YAML file and `key=value` overrides."""
    return resolve_config(SearchConfig, path, None, overrides, command="search")
