"""`CompressionEnv`: one episode walks a teacher's prunable units and builds a student at the end."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch.nn as nn
from gymnasium import spaces

from amc.compress.policy import CompressionPolicy
from amc.cost.budget import Budget
from amc.cost.latency import LatencyTable, require_latency_table
from amc.cost.predicted import CostModel
from amc.cost.runtime_latency import RuntimeLatencyTable
from amc.data import DataSplits
from amc.errors import AmcError
from amc.evaluate.evaluator import CachedEvaluator, CandidateEvaluator, EvaluationSettings
from amc.evaluate.rewards import Outcome, get_reward

MODES = ("channel", "fine-grained", "removal", "removal+channel", "quantize", "channel+quantize")
STAGES = {"removal": 0, "channel": 1, "fine-grained": 1, "quantize": 2}
UNIT_TYPE = {"conv": 1.0, "heads": 0.75, "depthwise": 0.5, "linear": 0.0}
OBSERVATION_FEATURES = (
    "index", "type", "in_channels", "out_channels", "stride", "kernel", "flops", "reduced", "remaining",
    "previous_action", "stage",
)  # fmt: skip


@dataclass
class Step:
    """One decision of an episode: a unit (channel), a layer (sparsity, bits) or a block (removal)."""

    stage: str
    name: str
    type_code: float
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    flops: float


class CompressionEnv(gym.Env):
    """Learn a per-layer compression policy for a teacher network under a hardware budget.

    ## Description
    AMC (He et al., ECCV 2018) as a Gymnasium environment, extended with N2N-style block removal and
    HAQ-style bit widths. An episode walks the teacher's units in forward order, one step each; the
    agent answers with one continuous action per unit. After the last step an `amc.evaluate.evaluator` really
    builds the student, recalibrates its BatchNorm statistics, optionally KD fine-tunes it for a few
    steps, and evaluates it on a subset of the held-out validation split. The env keeps the walk, the
    action wall, the observation and the reward; the evaluator (possibly shared by several envs, with
    its workers in other processes or on a Ray cluster) does the building and scoring.

    ## Action Space
    `Box(-1, 1, (1,), float32)`, mapped linearly onto the current stage's range:

    | stage | a = -1 | a = +1 | meaning |
    |---|---|---|---|
    | channel | `min_keep` | 1.0 | keep ratio of the unit's output channels |
    | fine-grained | `max_sparsity` | 0.0 | fraction of the layer's weights zeroed |
    | removal | remove | keep | the block is removed when a < `removal_threshold` |
    | quantize | `min_bits` | `max_bits` | weight bit width (rounded) |

    Every action is then clipped by the *action wall*: the most generous value such that the budget
    is still met if every later step takes its most aggressive value. Every episode meets the budget.

    ## Observation Space
    `Box(0, 1, (11,), float32)`, the AMC layer embedding, each column scaled to [0, 1]:

    | index | feature | scaling |
    |---|---|---|
    | 0 | step index | / (steps - 1) |
    | 1 | type: conv 1, attention heads 0.75, depthwise conv 0.5, block 0.25, linear 0 | as is |
    | 2 | input channels | / max over steps |
    | 3 | output channels | / max over steps |
    | 4 | stride (a head unit: its heads) | / max over steps |
    | 5 | kernel size (a unit of linear layers: its tokens) | / max over steps |
    | 6 | FLOPs of the unit | / max over steps |
    | 7 | FLOPs reduced so far | / teacher FLOPs |
    | 8 | FLOPs of the steps still to come | / teacher FLOPs |
    | 9 | previous action | (a + 1) / 2 |
    | 10 | stage: removal 0, channel or sparsity 0.5, quantize 1 | as is |

    For a transformer, a head unit (type 0.75) has as output channels its heads' width (heads x head dim: the
    keep ratio removes whole heads), as input channels the embedding width, as *stride* its number of heads, as
    *kernel* its tokens, and as FLOPs those of its fused qkv layer. An MLP unit is a linear one (type 0; input:
    embedding width, output: hidden width) whose *kernel* is its tokens (1 for a classifier after pooling), its
    FLOPs counted over every token. The embedding width (the residual stream, one unit feeding every block's
    attention) is a step only with `embedding=True`. A convolution's features are unchanged by this: an agent
    trained on CNNs reads CNNs as before.

    ## Rewards
    Zero on every step but the last; the last step returns the named reward from `amc.evaluate.rewards`:
    `acc` (validation accuracy, AMC's default under a hard budget), `err_log_flops` (-error * log FLOPs),
    `n2n` (R_a * C(2 - C)) or `haq` (accuracy minus the teacher's).

    ## Starting State
    Always the first unit. The env draws nothing at random: an episode is a deterministic function of its
    actions, whatever the seed (`reset(seed=...)` is accepted and seeds `self.np_random`, which the env does
    not use), and the evaluation is deterministic too (fixed validation subset, BN batches and KD seed).

    ## Episode End
    `terminated=True` after the last unit; never truncated. `info` at the end holds `accuracy`,
    `reward`, one `<resource>_ratio` per cost, `policy` (a `CompressionPolicy` dict), `values` (the
    per-step values after the wall) and `cached` (the student was evaluated before).

    ## Helpers for drivers of the walk
    `at_last_step`, and `final_policy(action)`: the policy the episode ends with if `action` is the
    last step's (a vectorized driver hands these to the evaluator together, before stepping).
    `values_to_actions(values)` inverts the action mapping, for scripted searchers.

    ## Arguments
    - `teacher`: the trained `nn.Module` (never modified). `data`: an `amc.data.DataSplits`.
    - `budget`: an `amc.cost.budget.Budget` or a dict such as `{"flops": 0.5}`.
    - `mode`: one of `channel`, `fine-grained`, `removal`, `removal+channel`, `quantize`, `channel+quantize`.
    - `reward`: a registered reward name.
    - `evaluator`: an `amc.evaluate.evaluator.CachedEvaluator` to share (e.g. a pool of workers). Without one the
      env makes its own in this process from `evaluation`, an `amc.evaluate.evaluator.EvaluationSettings`
      (validation images per evaluation, BN recalibration batches, the reward's KD steps, least-squares refit,
      precision, seed, and the runtime the accuracy is measured in), passed whole.
    - `latency_table`: an `amc.cost.latency.LatencyTable` (eager PyTorch) or
      `amc.cost.runtime_latency.RuntimeLatencyTable` (measured in ONNX Runtime or OpenVINO), required for a
      latency budget; both predict from layer shapes.
    - `min_keep`, `max_sparsity`, `min_bits`, `max_bits`, `removal_threshold`, `round_to`: action ranges.
    - `embedding`: a transformer's embedding width is a unit too (off: kept whole, the heads and MLP widths
      searched).

    ## Version History
    - v1: the evaluation settings are one `evaluation` argument; v0's `eval_samples`, `eval_batch_size`,
      `recalibrate_batches`, `finetune_steps`, `precision`, `reconstruct` and `evaluation_seed` are its fields.
    - v0: initial version. Added later, backward compatible: the `evaluator` argument, `values` in the
      final `info`, `precision` defaulting to `auto`, `embedding` (CNNs have none).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        teacher: nn.Module,
        data: DataSplits,
        budget: Budget | dict,
        *,
        mode: str = "channel",
        reward: str = "acc",
        input_shape: Sequence[int] | None = None,
        evaluation: EvaluationSettings | None = None,
        latency_table: LatencyTable | RuntimeLatencyTable | None = None,
        min_keep: float = 0.2,
        max_sparsity: float = 0.9,
        min_bits: int = 2,
        max_bits: int = 8,
        removal_threshold: float = 0.0,
        round_to: int = 1,
        evaluator: CachedEvaluator | None = None,
        embedding: bool = False,
    ):
        super().__init__()
        if mode not in MODES:
            raise AmcError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.teacher = teacher.eval()
        self.data = data
        self.budget = budget if isinstance(budget, Budget) else Budget(**budget)
        self.mode = mode
        self.reward_name, self.reward_fn = reward, get_reward(reward)
        self.input_shape = tuple(input_shape or data.input_shape)
        self.latency_table = latency_table
        self.min_keep, self.max_sparsity = min_keep, max_sparsity
        self.min_bits, self.max_bits = min_bits, max_bits
        self.removal_threshold, self.round_to = removal_threshold, round_to
        require_latency_table(self.budget, latency_table)

        self.cost_model = CostModel(teacher, self.input_shape, embedding=embedding)
        if latency_table is not None:
            self.cost_model.with_latency(latency_table)
        self.steps = self._plan_steps()
        if not self.steps:
            raise AmcError(f"the teacher has nothing to decide in mode {mode!r}")
        self.teacher_macs = self.cost_model.teacher.macs
        self._static = self._static_features()
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (len(OBSERVATION_FEATURES),), np.float32)
        if evaluator is None:
            settings = evaluation or EvaluationSettings()
            evaluator = CachedEvaluator(CandidateEvaluator(teacher, data, settings, self.input_shape, self.cost_model),
                                        self.cost_model.pieces)  # fmt: skip
        self.evaluator = evaluator
        self.teacher_accuracy = evaluator.teacher_accuracy
        if not self.budget.met_by(self._ratios(self._most_aggressive_policy())):
            raise AmcError(
                f"budget {dict(self.budget.items())} is impossible in mode {mode!r} even at the most aggressive "
                "action on every unit; relax the budget or widen the action range"
            )
        self.evaluation_seconds = 0.0
        self.env_seconds = 0.0
        """Wall time spent inside step(); the rest of a search's time is the agent's overhead."""
        self._reset_episode()

    # ------------------------------------------------------------------ planning

    def _plan_steps(self) -> list[Step]:
        stages = {
            "channel": ["channel"],
            "fine-grained": ["fine-grained"],
            "removal": ["removal"],
            "removal+channel": ["removal", "channel"],
            "quantize": ["quantize"],
            "channel+quantize": ["channel", "quantize"],
        }[self.mode]
        layer_flops = {layer.name: layer.macs for layer in self.cost_model.layers}
        positions = {layer.name: layer.macs // max(layer.rows * layer.in_channels, 1)  # tokens, for a linear layer
                     for layer in self.cost_model.layers}  # fmt: skip
        modules = dict(self.teacher.named_modules())
        steps: list[Step] = []
        for stage in stages:
            if stage == "channel":
                for u in self.cost_model.units:
                    flops = sum(layer_flops.get(n, 0) for n in u.out_layers)
                    type_code = UNIT_TYPE["depthwise" if u.depthwise_layers else u.kind]
                    width = len(u.out_index[u.name]) // 3 if u.kind == "heads" else u.channels  # q, k, v rows
                    stride = u.channels if u.kind == "heads" else u.stride  # a head unit: its heads
                    kernel = u.kernel if u.kind == "conv" else positions.get(u.name, 1)  # linear layers: tokens
                    steps.append(Step(stage, u.name, type_code, u.in_channels, width, stride, kernel, flops))
            elif stage == "removal":
                for block in self.cost_model.removable:
                    inside = [layer for layer in self.cost_model.layers if layer.block == block]
                    steps.append(
                        Step(stage, block, 0.25, inside[0].in_channels, inside[-1].rows, 1, 1,
                             sum(layer.macs for layer in inside))
                    )  # fmt: skip
            else:
                for layer in self.cost_model.layers:
                    m = modules[layer.name]
                    conv = isinstance(m, nn.Conv2d)
                    type_code = (0.5 if m.groups > 1 else 1.0) if conv else 0.0
                    steps.append(
                        Step(stage, layer.name, type_code, layer.in_channels, layer.rows,
                             m.stride[0] if conv else 1, m.kernel_size[0] if conv else 1, layer.macs)
                    )  # fmt: skip
        return steps

    def _static_features(self) -> np.ndarray:
        columns = np.array(
            [[s.in_channels, s.out_channels, s.stride, s.kernel, s.flops] for s in self.steps], dtype=np.float64
        )
        columns /= np.maximum(columns.max(axis=0), 1e-12)
        return columns

    # ------------------------------------------------------------------ decisions -> policy

    def _value(self, step: Step, action: float) -> float:
        """Map an action in [-1, 1] onto the stage's range."""
        t = (float(np.clip(action, -1.0, 1.0)) + 1.0) / 2.0
        if step.stage == "channel":
            return self.min_keep + t * (1.0 - self.min_keep)
        if step.stage == "fine-grained":
            return self.max_sparsity * (1.0 - t)
        if step.stage == "removal":
            return 0.0 if action < self.removal_threshold else 1.0
        return float(round(self.min_bits + t * (self.max_bits - self.min_bits)))

    def _most_aggressive(self, step: Step) -> float:
        return {"channel": self.min_keep, "fine-grained": self.max_sparsity, "removal": 0.0}.get(
            step.stage, float(self.min_bits)
        )

    def _policy(self, values: Sequence[float]) -> CompressionPolicy:
        policy = CompressionPolicy(round_to=self.round_to)
        for step, value in zip(self.steps, values, strict=False):
            if step.stage == "channel":
                policy.keep_ratios[step.name] = float(value)
            elif step.stage == "fine-grained":
                policy.sparsity[step.name] = float(value)
            elif step.stage == "removal":
                if value < 0.5:
                    policy.removed_blocks.append(step.name)
            else:
                policy.bits[step.name] = int(value)
        return policy

    def _most_aggressive_policy(self, values: Sequence[float] = ()) -> CompressionPolicy:
        """The given values for the first steps, then the most aggressive value for every later step."""
        return self._policy(list(values) + [self._most_aggressive(s) for s in self.steps[len(values) :]])

    def _ratios(self, policy: CompressionPolicy) -> dict[str, float]:
        return self.cost_model.policy_ratios(policy)

    def _action_wall(self, value: float) -> float:
        """The most generous value for the current step that keeps the budget reachable."""
        step = self.steps[self.t]
        aggressive = self._most_aggressive(step)

        def feasible(v: float) -> bool:
            return self.budget.met_by(self._ratios(self._most_aggressive_policy(self.values + [v])))

        if feasible(value):
            return value
        if step.stage == "removal":
            return aggressive
        if step.stage == "quantize":
            for bits in range(int(value) - 1, self.min_bits - 1, -1):
                if feasible(float(bits)):
                    return float(bits)
            return aggressive
        low, high = aggressive, value  # low is feasible (checked at reset), high is not
        for _ in range(30):
            mid = 0.5 * (low + high)
            if feasible(mid):
                low = mid
            else:
                high = mid
        return low

    # ------------------------------------------------------------------ gym API

    def _reset_episode(self) -> None:
        self.t = 0
        self.values: list[float] = []
        self.actions: list[float] = []
        self.previous_action = 1.0

    def _observation(self) -> np.ndarray:
        t = min(self.t, len(self.steps) - 1)
        step = self.steps[t]
        decided = self._policy(self.values + [1.0 if s.stage != "quantize" else 32 for s in self.steps[t:]])
        reduced = (
            1.0
            - self.cost_model.predict(decided.keep_ratios, decided.removed_blocks, round_to=self.round_to).macs
            / self.teacher_macs
        )
        remaining = sum(s.flops for s in self.steps[t + 1 :] if s.stage == step.stage) / self.teacher_macs
        obs = [
            t / max(len(self.steps) - 1, 1),
            step.type_code,
            *self._static[t][:4],
            self._static[t][4],
            reduced,
            remaining,
            (self.previous_action + 1.0) / 2.0,
            STAGES[step.stage] / 2.0,
        ]
        return np.clip(np.asarray(obs, dtype=np.float32), 0.0, 1.0)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._reset_episode()
        return self._observation(), {}

    def step(self, action):
        started = time.perf_counter()
        try:
            return self._step(action)
        finally:
            self.env_seconds += time.perf_counter() - started

    @property
    def at_last_step(self) -> bool:
        return self.t == len(self.steps) - 1

    def final_policy(self, action) -> CompressionPolicy:
        """The policy this episode ends with if `action` is the last step's action."""
        if not self.at_last_step:
            raise AmcError("final_policy() is only defined at the last step of an episode")
        return self._policy(self.values + [self._walled_value(action)])

    def _walled_value(self, action) -> float:
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        return self._action_wall(self._value(self.steps[self.t], a))

    def _step(self, action):
        if self.t >= len(self.steps):
            raise AmcError("step() called after the episode ended; call reset() first")
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        value = self._walled_value(a)
        self.values.append(value)
        self.actions.append(a)
        self.previous_action = float(np.clip(a, -1.0, 1.0))
        self.t += 1
        if self.t < len(self.steps):
            return self._observation(), 0.0, False, False, {"value": value}
        return self._observation(), *self._finish()

    def _finish(self) -> tuple[float, bool, bool, dict]:
        policy = self._policy(self.values)
        ratios = self._ratios(policy)
        evaluation, first = self.evaluator.claim(policy)
        cached = not first
        if first:
            self.evaluation_seconds += evaluation.seconds
        outcome = Outcome(evaluation.accuracy, self.teacher_accuracy, ratios, ratios["flops"] * self.teacher_macs)
        reward = float(self.reward_fn(outcome))
        if not math.isfinite(reward):  # one bad reward would poison the critic for good
            raise AmcError(f"the {self.reward_name} reward came out {reward} (accuracy {evaluation.accuracy}, ratios "
                           f"{ {k: round(v, 4) for k, v in ratios.items()} }); the search stops, its last checkpoint "
                           "kept; fix the reward or the data, then --resume")  # fmt: skip
        info = {
            "value": self.values[-1],
            "accuracy": evaluation.accuracy,
            "reward": reward,
            **{f"{k}_ratio": v for k, v in ratios.items()},
            "policy": policy.to_dict(),
            "values": list(self.values),
            "cached": cached,
        }
        return reward, True, False, info

    def values_to_actions(self, values: Sequence[float]) -> list[float]:
        """Inverse of the action mapping: the actions that reproduce given per-step values."""
        actions = []
        for step, v in zip(self.steps, values, strict=True):
            if step.stage == "channel":
                t = (v - self.min_keep) / (1.0 - self.min_keep)
            elif step.stage == "fine-grained":
                t = 1.0 - v / self.max_sparsity
            elif step.stage == "removal":
                t = 0.0 if v < 0.5 else 1.0
            else:
                t = (v - self.min_bits) / (self.max_bits - self.min_bits)
            actions.append(float(np.clip(2.0 * t - 1.0, -1.0, 1.0)))
        return actions
