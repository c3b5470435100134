"""NVIDIA ModelOpt's FastNAS, the pruner users pick today, as a peer in amc's comparisons.

FastNAS scores each layer's width choices alone (validation accuracy after BatchNorm calibration), then meets a
FLOPs target by thresholding those sensitivities. amc's budgets are latencies measured in a runtime, so
`fastnas_student` bisects FastNAS's FLOPs target until the subnet meets the latency budget, measured in the runtime
(the table's prediction misses FastNAS's channel multiples, which the runtime's kernels like less). FastNAS keeps
the most important channels first and reorders them; its weights are kept as they are, in an amc student of the
same widths (so the student saves, loads, fine-tunes and deploys like every other).

Settings, following ModelOpt's ResNet-20 example and issue 31: channel divisor = the table's rounding (its default
of 32 cannot prune 16-channel layers), 50 calibration batches of 64 training images, the score is accuracy on
`score_samples` validation images, and the returned subnet's BatchNorm is recalibrated.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from amc.compress.policy import CompressionPolicy
from amc.compress.pruning import find_units
from amc.compress.student import apply_policy
from amc.cost.budget import Budget
from amc.cost.measured import count_macs
from amc.cost.predicted import CostModel
from amc.data import DataSplits
from amc.errors import AmcError
from amc.train.distill import recalibrate_bn
from amc.train.loop import evaluate_accuracy

CALIBRATION_BATCHES = 50
CALIBRATION_BATCH_SIZE = 64


def _rules(divisor: int) -> dict:
    every = {"*": {"channel_divisor": divisor}}
    features = {"*": {"feature_divisor": divisor}}
    return {"nn.Conv2d": every, "nn.BatchNorm2d": features, "nn.Linear": features}


class FastNAS:
    """One teacher's FastNAS: the sensitivity map is measured once, then reused for every FLOPs target."""

    def __init__(self, teacher: nn.Module, data: DataSplits, *, divisor: int, score_samples: int = 1000):
        try:
            import modelopt.torch.prune  # noqa: F401
        except ImportError:
            raise AmcError("nvidia-modelopt is not installed; pip install -e '.[peers]'") from None
        self.teacher, self.data, self.divisor = teacher.eval(), data, divisor
        self.score_samples = score_samples
        self.calibration = [x for x, _ in data.batches("train", CALIBRATION_BATCH_SIZE,
                                                       limit=CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE)]  # fmt: skip
        self._folder = tempfile.TemporaryDirectory()  # the search checkpoint: written and read by this object only
        self.teacher_flops = count_macs(teacher, data.input_shape)

    def score(self, model: nn.Module) -> float:
        return evaluate_accuracy(model, self.data, "val", limit=self.score_samples)

    def prune(self, flops_ratio: float) -> nn.Module | None:
        """FastNAS's subnet of the teacher under `flops_ratio` of its FLOPs; None below its smallest subnet."""
        import modelopt.torch.prune as mtp

        model = copy.deepcopy(self.teacher)
        dummy = torch.zeros(1, *self.data.input_shape)
        try:
            subnet, _ = mtp.prune(
                model, mode=[("fastnas", _rules(self.divisor))], constraints={"flops": f"{100 * flops_ratio:.4f}%"},
                dummy_input=dummy, config={"data_loader": self.calibration, "collect_func": lambda batch: batch,
                                           "score_func": self.score, "verbose": False,
                                           "checkpoint": str(Path(self._folder.name) / "fastnas.pth")},
            )  # fmt: skip
        except ValueError as exc:  # ModelOpt's word for a target below its smallest subnet
            if "can be satisfied" not in str(exc):
                raise
            return None
        return subnet.eval()


def widths_policy(teacher: nn.Module, subnet: nn.Module, input_shape) -> CompressionPolicy:
    """The amc policy whose student has `subnet`'s widths: each unit keeps as many channels as its root layer has."""
    layers = dict(subnet.named_modules())
    keep = {}
    for unit in find_units(teacher, input_shape):
        kept = layers[unit.root].out_channels if hasattr(layers[unit.root], "out_channels") else None
        if kept is None:
            raise AmcError(f"FastNAS's subnet has no layer {unit.root!r} with output channels")
        keep[unit.name] = kept / unit.channels
    return CompressionPolicy(keep_ratios=keep, round_to=1, metadata={"method": "fastnas"})


def as_amc_student(teacher: nn.Module, subnet: nn.Module, input_shape) -> tuple[nn.Module, CompressionPolicy]:
    """An amc student with FastNAS's widths and FastNAS's own weights."""
    policy = widths_policy(teacher, subnet, input_shape)
    student = apply_policy(teacher, policy, input_shape)
    try:
        student.load_state_dict(subnet.state_dict())
    except RuntimeError as exc:
        raise AmcError(f"FastNAS's subnet does not fit amc's student of the same widths: {str(exc)[:200]}") from exc
    return student.eval(), policy


def fastnas_student(
    teacher: nn.Module,
    data: DataSplits,
    cost_model: CostModel,
    budget: Budget,
    *,
    divisor: int,
    steps: int = 8,
    measured_latency: Callable[[nn.Module], float] | None = None,
) -> tuple[nn.Module, CompressionPolicy, dict]:
    """FastNAS's student meeting `budget`: its FLOPs target bisected, `steps` times. Latency is what
    `measured_latency(student)` returns (the ratio to the teacher, timed in the runtime), else what `cost_model`
    predicts.

    Returns the student (BatchNorm recalibrated), its policy and a record of the bisection."""
    search = FastNAS(teacher, data, divisor=divisor)
    low, high, best, tried = 0.0, 1.0, None, []
    for _ in range(steps):
        target = (low + high) / 2
        subnet = search.prune(target)
        if subnet is None:  # below every subnet: the answer, if any, is a larger target
            tried.append({"flops_target": target, "met": False, "satisfiable": False})
            low = target
            continue
        student, policy = as_amc_student(teacher, subnet, data.input_shape)
        ratios = cost_model.policy_ratios(policy)
        if measured_latency is not None and budget.latency is not None:
            ratios = {**ratios, "predicted_latency": ratios.get("latency"), "latency": measured_latency(student)}
        met = budget.met_by({k: v for k, v in ratios.items() if k != "predicted_latency"})
        tried.append({"flops_target": target, **ratios, "met": met})
        if met:
            low, best = target, (student, policy, ratios)
        else:
            high = target
    if best is None:
        limits = ", ".join(f"{name} {value:g}" for name, value in budget.items())
        least = min((t["latency"] for t in tried if "latency" in t), default=None)
        fastest = "" if least is None else f"; its fastest keeps {least:.3f} of the teacher's latency"
        raise AmcError(f"FastNAS found no subnet within {limits} in {steps} bisection steps{fastest}")
    student, policy, ratios = best
    recalibrate_bn(student, data)
    policy.metadata.update({"flops_target": low, "predicted": ratios})
    return student, policy, {"bisection": tried, "predicted": ratios, "flops_target": low}
