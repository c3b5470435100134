"""A latency table measured in the runtime a student is deployed to.

A runtime fuses conv + BatchNorm + ReLU and picks its kernels by shape, so timing layers alone in PyTorch says
little about it: in OpenVINO int8 on an AMX Xeon, students with odd channel counts and a third of the teacher's
MACs ran slower than the teacher. So whole students are exported, compiled in the target runtime at the target
precision and timed end to end, alternately with the teacher:

1. `fastest_rounding`: uniform students at each channel multiple (1, 4, 8, 16) show which one the kernels like.
2. Random students at that multiple (random keep ratios; half with random blocks removed) are timed, and a linear
   model is fitted to them by non-negative least squares:

       latency = overhead + sum over groups g of (a_g * padded MACs of g + b_g * layers in g)

   where a group is the layers of one kernel size at one resolution, and padded MACs count channels rounded up to
   the runtime's channel block (chosen by cross-validation among 1, 4, 8, 16). A transformer's attention matmuls
   are a group of their own, their MACs following the heads its qkv layer keeps.
3. More random students, timed the same way, give the table's held-out error, stored in it.

Students must then be built at the table's `round_to`. `predict(shapes)` has the interface of
`amc.cost.latency.LatencyTable`, so the environment takes either.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.nn as nn
from scipy.optimize import nnls
from tqdm.auto import tqdm

from amc.compress.export import write_onnx
from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy
from amc.cost.measured import layer_shapes
from amc.cost.predicted import CostModel
from amc.cost.table_checks import require, whole_list
from amc.deploy.deployment import deploy, fastest_activation_type
from amc.deploy.runtimes import Target, describe_cpu
from amc.deploy.timing import example_batch, time_alternated
from amc.errors import AmcError, library_text
from amc.values import finite, whole

FORMAT = "amc-runtime-latency"
BLOCKS = (1, 4, 8, 16)
ROUNDINGS = (1, 4, 8, 16)
"""The channel multiples `fastest_rounding` compares."""


@dataclass
class LayerSpec:
    channels: tuple[int, int]
    """The teacher's (input, output) channels."""
    macs: int
    group: str
    depthwise: bool = False
    attention_macs: int = 0
    """For an attention module's qkv layer: the MACs of its two matmuls, which scale with its kept heads."""
    attention_group: str | None = None
    """Their group (attention at one token count)."""


@dataclass
class RuntimeLatencyTable:
    target: dict
    """`Target.describe()`: runtime, precision, batch, threads, runtime version, CPU and its flags."""
    layers: dict[str, LayerSpec]
    block: int
    groups: list[str]
    coefficients: list[float]
    """overhead, then a_g for each group, then b_g for each group (ms per image)."""
    teacher_ms: float
    round_to: int = 1
    """The channel multiple the table was fitted for, the fastest one measured (students must use it)."""
    activation_type: str | None = None
    metadata: dict = field(default_factory=dict)

    def features(self, shapes: dict[str, tuple[int, int]], block: int | None = None) -> np.ndarray:
        return _features(self.layers, self.groups, shapes, block or self.block)

    def predict(self, shapes: dict[str, tuple[int, int]]) -> float:
        """Milliseconds per image for a student whose remaining conv/linear layers have these channels."""
        unknown = set(shapes) - set(self.layers)
        if unknown:
            raise AmcError(f"latency table has no entry for layers {sorted(unknown)[:3]}; was it built for this model?")
        return float(self.features(shapes) @ np.asarray(self.coefficients))

    def layer_ms(self, shapes: dict[str, tuple[int, int]]) -> dict[str, float]:
        """Each layer's part of the predicted latency (its group's MAC and per-layer terms; the overhead is the
        rest)."""
        index = {g: i for i, g in enumerate(self.groups)}
        coefficients, groups = np.asarray(self.coefficients), len(self.groups)
        parts = {}
        for name, shape in shapes.items():
            spec, x = self.layers[name], self.features({name: shape})
            own = [index[spec.group]] + ([index[spec.attention_group]] if spec.attention_group else [])
            parts[name] = float(sum(x[1 + g] * coefficients[1 + g] + x[1 + groups + g] * coefficients[1 + groups + g]
                                    for g in own))  # fmt: skip
        return parts

    def check_target(self, runtime: str, precision: str, where: str) -> None:
        """Refuse, in one line, a table measured for another runtime, precision or CPU."""
        t = self.target
        asked = {"runtime": runtime, "precision": precision, "cpu": describe_cpu()["cpu"]}
        for key, value in asked.items():
            if t.get(key) != value:
                raise AmcError(
                    f"the latency table {where} was measured for {key} {t.get(key)!r}, not {value!r}; build one "
                    f"here with `amc profile-latency TEACHER --runtime {runtime} --runtime-precision {precision}`"
                )
        if t.get("cpu_flags") != describe_cpu()["cpu_flags"]:
            raise AmcError(
                f"the latency table {where} was measured on a CPU with flags {t.get('cpu_flags')}, this one has "
                f"{describe_cpu()['cpu_flags']}; build one here with `amc profile-latency`"
            )

    def save(self, path: str | Path) -> None:
        blob = {"format": FORMAT, **self.__dict__, "layers": {n: s.__dict__ for n, s in self.layers.items()}}
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        tmp.write_text(json.dumps(blob, indent=1))
        tmp.replace(path)

    @classmethod
    def from_blob(cls, blob: dict, path: str | Path) -> RuntimeLatencyTable:
        try:
            layers = {n: LayerSpec(tuple(s.pop("channels")), **s) for n, s in blob.pop("layers").items()}
            blob.pop("format")
            table = cls(layers=layers, **blob)
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise AmcError(f"{path} is a damaged runtime latency table ({library_text(exc)}); build it again") from None
        table.check_fields(path)
        return table

    def check_fields(self, path: str | Path) -> None:
        """Every field of the right kind: whole counts, finite coefficients (one overhead, two per group), and
        every layer in a known group."""
        require(isinstance(self.target, dict) and isinstance(self.metadata, dict), path, "target and metadata")
        require(whole(self.block, 1) and whole(self.round_to, 1), path, "block and round_to must be whole numbers")
        require(isinstance(self.groups, list) and all(isinstance(g, str) for g in self.groups), path, "groups")
        coefficients = self.coefficients
        require(isinstance(coefficients, list) and len(coefficients) == 1 + 2 * len(self.groups)
                and all(finite(c) for c in coefficients), path, "coefficients")  # fmt: skip
        require(finite(self.teacher_ms, 0), path, "teacher_ms")
        require(self.activation_type in (None, "uint8", "int8"), path, "activation_type is uint8, int8 or absent")
        for name, s in self.layers.items():
            ok = (whole_list(s.channels) and len(s.channels) == 2 and whole(s.macs, 0) and s.group in self.groups
                  and isinstance(s.depthwise, bool) and whole(s.attention_macs, 0)
                  and (s.attention_group is None or s.attention_group in self.groups))  # fmt: skip
            require(ok, path, f"layer {name}: channels, MACs and a known group")


def _padded(channels: float, block: int) -> float:
    return math.ceil(channels / block) * block if channels > 0 else 0.0


def _features(layers: dict[str, LayerSpec], groups: list[str], shapes: dict[str, tuple[int, int]], block: int):
    index = {g: i for i, g in enumerate(groups)}
    macs, count = np.zeros(len(groups)), np.zeros(len(groups))
    for name, (cin, cout) in shapes.items():
        spec = layers[name]
        full_in, full_out = spec.channels
        in_share = 1.0 if spec.depthwise else _padded(cin, block) / _padded(full_in, block)
        out_share = _padded(cout, block) / _padded(full_out, block)
        g = index[spec.group]
        macs[g] += spec.macs * in_share * out_share
        count[g] += 1
        if spec.attention_group:  # its heads' matmuls: as many as it has outputs (whole heads)
            a = index[spec.attention_group]
            macs[a] += spec.attention_macs * cout / full_out
            count[a] += 1
    return np.concatenate([[1.0], macs / 1e6, count])


def layer_specs(cost_model: CostModel, model: nn.Module) -> dict[str, LayerSpec]:
    """Each layer's teacher channels, MACs, and group (kernel size and MACs per channel pair: one resolution)."""
    modules = dict(model.named_modules())
    attention = {f"{a.name}.qkv": a for a in cost_model.attention}
    specs = {}
    for layer in cost_model.layers:
        module = modules[layer.name]
        kernel = "x".join(map(str, getattr(module, "kernel_size", (1,))))
        pairs = layer.rows * (1 if layer.depthwise else layer.in_channels)
        specs[layer.name] = LayerSpec(
            (layer.in_channels, layer.rows), layer.macs, f"{type(module).__name__}{kernel}@{layer.macs // pairs}",
            layer.depthwise,
        )  # fmt: skip
        if (a := attention.get(layer.name)) is not None:
            specs[layer.name].attention_macs = a.macs
            specs[layer.name].attention_group = f"attention@{a.macs // layer.rows}"  # MACs per qkv output
    return specs


def random_students(cost_model: CostModel, count: int, rng: np.random.Generator, round_to: int, min_keep: float = 0.2):
    """Random policies: keep ratios in [min_keep, 1], channels rounded to `round_to`, and (where the model has
    removable blocks) each block removed with probability 0.3 in half of them."""
    for i in range(count):
        keep = {u.name: float(rng.uniform(min_keep, 1.0)) for u in cost_model.units}
        removed = [b for b in cost_model.removable if i % 2 and rng.random() < 0.3]
        yield CompressionPolicy(keep_ratios=keep, removed_blocks=removed, round_to=round_to)


def measure_students(
    teacher: nn.Module,
    input_shape: Sequence[int],
    target: Target,
    policies: list[CompressionPolicy],
    *,
    calibration: np.ndarray | None,
    activation_type: str,
    rounds: int,
    desc: str,
) -> tuple[list[dict[str, tuple[int, int]]], list[float], float]:
    """Each policy's student timed end to end in the target, alternately with the teacher. Returns the students'
    layer shapes, their latencies (their ratio to the teacher times the teacher's overall median, so that drift
    between students cancels) and that median."""
    inputs = example_batch(input_shape, target.batch)
    with tempfile.TemporaryDirectory() as folder:
        reference = deploy(teacher, input_shape, target, folder, calibration=calibration,
                           activation_type=activation_type, name="teacher")  # fmt: skip
        shapes, ratios, teacher_ms = [], [], []
        for policy in tqdm(policies, desc=desc, dynamic_ncols=True):
            student = apply_policy(teacher, policy, input_shape, validate=False)
            built = deploy(student, input_shape, target, folder, calibration=calibration,
                           activation_type=activation_type, name="student")  # fmt: skip
            timings = time_alternated({"teacher": reference.run, "student": built.run}, inputs, rounds=rounds,
                                      warmup=5)  # fmt: skip
            shapes.append(layer_shapes(student))
            ratios.append(timings["student"].median_ms / timings["teacher"].median_ms)
            teacher_ms.append(timings["teacher"].median_ms)
    median = statistics.median(teacher_ms)
    return shapes, [r * median for r in ratios], median


def fastest_rounding(
    teacher: nn.Module, input_shape, target: Target, cost_model: CostModel, candidates=ROUNDINGS, **measured
) -> tuple[int, dict[str, float]]:
    """The channel multiple whose uniform students run fastest for their MACs in the target: for each candidate,
    students keeping 35%, 50% and 70% are timed against the teacher, and their latency ratio over their MAC ratio
    is averaged (1 means latency falls with MACs; above 1, the kernels lose to odd shapes)."""
    names = [u.name for u in cost_model.units]
    keeps = (0.35, 0.5, 0.7)
    policies = [CompressionPolicy(keep_ratios=dict.fromkeys(names, k), round_to=r) for r in candidates for k in keeps]
    shapes, latency, teacher_ms = measure_students(teacher, input_shape, target, policies,
                                                   desc="timing roundings", **measured)  # fmt: skip
    scores: dict[str, list[float]] = {}
    for policy, ms in zip(policies, latency, strict=True):
        macs = cost_model.policy_ratios(policy)["flops"]
        scores.setdefault(str(policy.round_to), []).append(ms / teacher_ms / macs)
    means = {r: float(np.mean(v)) for r, v in scores.items()}
    return int(min(means, key=means.get)), means


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # relative error matters: weight each student by 1 / its latency
    coefficients, _ = nnls(x / y[:, None], np.ones_like(y))
    return coefficients


def _choose_block(specs, groups, shapes, y: np.ndarray) -> tuple[int, dict[int, float]]:
    """The channel block whose fit predicts best, by 5-fold cross-validation on the fitting students."""
    folds = np.arange(len(y)) % 5
    cv_error = {}
    for block in BLOCKS:
        x = np.stack([_features(specs, groups, s, block) for s in shapes])
        errors = []
        for k in range(5):
            fitted = _fit(x[folds != k], y[folds != k])
            errors.extend(_relative_errors(x[folds == k] @ fitted, y[folds == k]))
        cv_error[block] = float(np.median(errors))
    return min(cv_error, key=cv_error.get), cv_error


def _relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(predicted - measured) / measured


def build_runtime_table(
    teacher: nn.Module,
    input_shape: Sequence[int],
    target: Target,
    *,
    calibration: np.ndarray | None = None,
    students: int = 90,
    check: int = 30,
    seed: int = 0,
    rounds: int = 6,
    round_to: int | None = None,
) -> RuntimeLatencyTable:
    """Time `students` random students to fit the table and `check` more to measure its error, all with channels
    rounded to `round_to` (default: the `fastest_rounding`)."""
    teacher = teacher.cpu().eval()
    cost_model = CostModel(teacher, input_shape)
    specs = layer_specs(cost_model, teacher)
    groups = sorted({s.group for s in specs.values()} | {s.attention_group for s in specs.values()
                                                          if s.attention_group})  # fmt: skip
    activation_type = "uint8"
    if target.precision == "int8":
        if calibration is None:
            raise ValueError("an int8 latency table needs calibration images")
        with tempfile.TemporaryDirectory() as folder:
            fp32 = Path(folder) / "teacher.onnx"
            write_onnx(teacher, input_shape, fp32)
            activation_type = fastest_activation_type(fp32, input_shape, target, calibration)
    measured = dict(calibration=calibration, activation_type=activation_type, rounds=rounds)
    if round_to is None:
        round_to, rounding_scores = fastest_rounding(teacher, input_shape, target, cost_model, **measured)
    else:
        rounding_scores = {}
    rng = np.random.default_rng(seed)
    policies = list(random_students(cost_model, students + check, rng, round_to))
    shapes, latency, teacher_ms = measure_students(teacher, input_shape, target, policies[:students],
                                                   desc=f"timing students ({target.label})", **measured)  # fmt: skip
    check_shapes, check_latency, _ = measure_students(teacher, input_shape, target, policies[students:],
                                                      desc="timing held-out students", **measured)  # fmt: skip
    y = np.asarray(latency)
    block, cv_error = _choose_block(specs, groups, shapes, y)
    x = np.stack([_features(specs, groups, s, block) for s in shapes])
    coefficients = _fit(x, y)
    teacher_shapes = {name: spec.channels for name, spec in specs.items()}
    table = RuntimeLatencyTable(
        target.describe(), specs, block, groups, coefficients.tolist(), teacher_ms, round_to,
        activation_type if target.precision == "int8" else None,
    )  # fmt: skip
    predicted = np.asarray([table.predict(s) for s in check_shapes])
    errors = _relative_errors(predicted, np.asarray(check_latency))
    table.metadata = {
        "input_shape": list(input_shape),
        "students": students,
        "rounds": rounds,
        "seed": seed,
        "latency_per_mac_by_rounding": rounding_scores,
        "block_cv_median_error": {str(b): e for b, e in cv_error.items()},
        "teacher_predicted_ms": table.predict(teacher_shapes),
        "check": {
            "students": len(errors),
            "median_error": float(np.median(errors)) if len(errors) else None,
            "p90_error": float(np.percentile(errors, 90)) if len(errors) else None,
            "max_error": float(errors.max()) if len(errors) else None,
        },
    }
    return table
