"""`CandidateEvaluator`: what one search candidate costs to score. It builds the student a policy describes,
recalibrates its BatchNorm, optionally gives it a short KD fine-tune or a least-squares refit, and measures
its validation accuracy and costs.

Everything an evaluation depends on (the validation subset, the BN batches, the seeds) is fixed when the
evaluator is made, so one policy gets one result from any evaluator with the same settings: in this process,
in a worker process or in a Ray actor.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy
from amc.cost.measured import count_macs, count_params, size_bytes
from amc.cost.predicted import CostModel
from amc.data import DataSplits
from amc.deploy.deployment import ACCURACY_BATCH, calibration_images, deploy, runtime_accuracy
from amc.deploy.runtimes import Target
from amc.train.distill import kd_steps, kd_stream, recalibrate_bn_on, recalibration_batches
from amc.train.loop import accuracy_on
from amc.train.precision import memory_format, resolve_precision
from amc.train.settings import FinetuneSettings

KD_CACHE_LIMIT_BYTES = 1 << 30
"""Above this, the reward's KD batches are drawn anew for each candidate rather than kept (a large input)."""


@dataclass(frozen=True)
class EvaluationSettings:
    """How a candidate is scored; the same settings give the same result for the same policy."""

    eval_samples: int = 1000
    """Validation images per evaluation (the first ones of the held-out split)."""
    eval_batch_size: int = 500
    recalibrate_batches: int = 20
    """BatchNorm recalibration batches of 128 training images (0: off)."""
    finetune_steps: int = 0
    """KD steps (lr 0.01, cosine) before the evaluation (0: off)."""
    reconstruct: bool = False
    """Least-squares refit of layers that lost inputs (AMC), before the evaluation."""
    precision: str = "auto"
    seed: int = 0
    """Seed of the BN batches and the short fine-tune."""
    runtime: str = "eager"
    """Where the accuracy is measured: eager (PyTorch, at `precision`), or onnxruntime / openvino, where the
    candidate is exported (and for int8 quantized, calibrated on 256 training images) and run as it will be
    deployed."""
    runtime_precision: str = "fp32"
    activation_type: str = "uint8"
    """int8 activations in the runtime: uint8 or int8 (the latency table's measured choice)."""

    def reward_finetune(self, precision: str) -> FinetuneSettings:
        """The reward's KD fine-tune: `finetune_steps` batches of 128, lr 0.01 cosine-annealed."""
        return FinetuneSettings(steps=self.finetune_steps, optimizer="sgd", lr=0.01, precision=precision,
                                seed=self.seed).resolved()  # fmt: skip

    def cache_bytes(self, input_shape: Sequence[int], num_classes: int) -> dict[str, int]:
        """What one evaluator keeps in memory, at most: the validation subset, the BN images, and the reward's KD
        batches with the teacher's logits (0 where they exceed `KD_CACHE_LIMIT_BYTES` and are drawn per
        candidate instead)."""
        image = 4 * math.prod(input_shape)
        kd = self.finetune_steps * FinetuneSettings().batch_size * (image + 4 * num_classes + 8)
        return {"validation": self.eval_samples * (image + 8), "bn_images": self.recalibrate_batches * 128 * image,
                "kd_batches": kd if kd <= KD_CACHE_LIMIT_BYTES else 0}  # fmt: skip


@dataclass(frozen=True)
class Evaluation:
    """One candidate's outcome: validation accuracy on the subset, and the built student's measured costs."""

    accuracy: float
    flops: int
    params: int
    size_bytes: int
    seconds: float


class CandidateEvaluator:
    """Scores policies for one teacher on one data set. Holds the teacher, the validation batches and the
    BN batches, made once."""

    def __init__(self, teacher: nn.Module, data: DataSplits, settings: EvaluationSettings = EvaluationSettings(),
                 input_shape: Sequence[int] | None = None, cost_model: CostModel | None = None):  # fmt: skip
        self.teacher = teacher.eval()
        self.data = data
        self.device = next(teacher.parameters()).device
        self.settings = settings
        self.precision = resolve_precision(settings.precision, self.device)
        self.input_shape = tuple(input_shape or data.input_shape)
        self.memory_format = memory_format(self.precision, self.device)
        self._val = [
            (x.to(self.device), y)
            for x, y in data.batches("val", settings.eval_batch_size, limit=settings.eval_samples,
                                     channels_last=self.memory_format == torch.channels_last)
        ]  # fmt: skip
        self._bn_images = [
            x.contiguous(memory_format=self.memory_format)
            for x in recalibration_batches(data, settings.recalibrate_batches, seed=settings.seed)
        ]
        self.cost_model = cost_model or CostModel(teacher, self.input_shape)  # checks every student it builds
        self._teacher_accuracy: float | None = None
        self._calibration = None
        self._kd_batches: list | None = None
        """The reward's KD batches and the teacher's logits on them, made at the first fine-tune (all candidates
        share them); None while not made, or when larger than `KD_CACHE_LIMIT_BYTES` (then drawn per candidate)."""

    @property
    def teacher_accuracy(self) -> float:
        """The teacher's accuracy on the same validation subset (computed once)."""
        if self._teacher_accuracy is None:
            self._teacher_accuracy = self.accuracy(self.teacher)
        return self._teacher_accuracy

    def accuracy(self, model: nn.Module) -> float:
        if self.settings.runtime == "eager":
            return accuracy_on(model, self._val, precision=self.precision, device=self.device)
        return self._runtime_accuracy(model)

    def _runtime_accuracy(self, model: nn.Module) -> float:
        """Accuracy on the validation subset from the runtime's outputs, the model deployed as `deploy` does."""
        target = Target(self.settings.runtime, self.settings.runtime_precision, ACCURACY_BATCH,
                        threads=torch.get_num_threads())  # fmt: skip
        if target.precision == "int8" and self._calibration is None:
            self._calibration = calibration_images(self.data)
        with tempfile.TemporaryDirectory() as folder:
            deployed = deploy(model, self.input_shape, target, folder, calibration=self._calibration,
                              activation_type=self.settings.activation_type)  # fmt: skip
            return runtime_accuracy(deployed, self.data, "val", limit=self.settings.eval_samples)

    def build_student(self, policy: CompressionPolicy, short_finetune: bool = True) -> nn.Module:
        """The student a policy describes, BN-recalibrated and (unless `short_finetune` is False) given the
        reward's brief KD fine-tune."""
        reconstruction = self.data if self.settings.reconstruct else None
        student = apply_policy(self.teacher, policy, self.input_shape, validate=False,
                               reconstruction_data=reconstruction)  # fmt: skip
        self.cost_model.check_student(student, policy)
        student.to(memory_format=self.memory_format)
        if self.settings.recalibrate_batches:
            recalibrate_bn_on(student, self._bn_images, precision=self.precision)
        if short_finetune:
            self.short_finetune(student)
        return student

    def short_finetune(self, student: nn.Module) -> None:
        """The reward's KD fine-tune of `finetune_steps` steps (lr 0.01, cosine), in place; no-op at 0. It runs
        the optimisation steps alone, on batches and teacher logits made once per evaluator."""
        if not self.settings.finetune_steps:
            return
        settings = self.settings.reward_finetune(self.precision)
        keep = self.settings.cache_bytes(self.input_shape, self.data.num_classes)["kd_batches"] > 0
        if self._kd_batches is None and keep:
            self._kd_batches = list(kd_stream(self.teacher, self.data, settings, self.device))
        batches = self._kd_batches or kd_stream(self.teacher, self.data, settings, self.device)
        kd_steps(student, batches, settings, self.device)

    def evaluate(self, policy: CompressionPolicy) -> Evaluation:
        """Build, recalibrate, optionally fine-tune, then score one policy. Global RNG state is untouched."""
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            student = self.build_student(policy)
            flops = count_macs(student, self.input_shape)  # its example input draws from the RNG
        return Evaluation(
            accuracy=self.accuracy(student), flops=flops, params=count_params(student),
            size_bytes=size_bytes(student), seconds=time.perf_counter() - started,
        )  # fmt: skip

    def evaluate_many(self, policies: Sequence[CompressionPolicy]) -> list[Evaluation]:
        return [self.evaluate(p) for p in policies]

    def close(self) -> None:
        pass


class CachedEvaluator:
    """Evaluates each distinct student once. `backend` is anything with `evaluate_many(policies)`,
    `teacher_accuracy` and `close()`: a `CandidateEvaluator` here, or a pool of them in other processes.
    `evaluate_many` sends the policies it has not seen to the backend together, so a pool scores them at once."""

    def __init__(self, backend, pieces: dict[str, list[int]]):
        self.backend, self.pieces = backend, pieces
        self._results: dict[tuple, Evaluation] = {}
        self._unclaimed: set[tuple] = set()
        """Results evaluated ahead (`evaluate_many`) that no `claim` has handed out yet."""
        self.evaluations = 0
        """Policies the backend really evaluated."""
        self.evaluation_seconds = 0.0
        """Their summed evaluation time, measured where each ran."""

    def evaluate_many(self, policies: Sequence[CompressionPolicy]) -> list[Evaluation]:
        keys = [p.structure_key(self.pieces) for p in policies]
        new = {k: p for k, p in zip(keys, policies, strict=True) if k not in self._results}
        if new:
            results = self.backend.evaluate_many(list(new.values()))
            self._results.update(zip(new, results, strict=True))
            self._unclaimed.update(new)
            self.evaluations += len(new)
            self.evaluation_seconds += sum(r.seconds for r in results)
        return [self._results[k] for k in keys]

    def evaluate(self, policy: CompressionPolicy) -> Evaluation:
        return self.evaluate_many([policy])[0]

    def claim(self, policy: CompressionPolicy) -> tuple[Evaluation, bool]:
        """The policy's evaluation, and whether this is the first time it is handed out: a result evaluated
        ahead counts as new once, so an episode whose student was evaluated in a batch is not `cached`."""
        key = policy.structure_key(self.pieces)
        evaluation = self.evaluate(policy)
        first = key in self._unclaimed
        self._unclaimed.discard(key)
        return evaluation, first

    @property
    def teacher_accuracy(self) -> float:
        return self.backend.teacher_accuracy

    def close(self) -> None:
        self.backend.close()
