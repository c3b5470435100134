"""Every core command's typed config. A config's fields carry their help text, so each is also its command's
--help, and `amc <command> --config file.yaml` reads the same keys (agents/config.py holds the search's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from amc.device import DEVICE_HELP
from amc.errors import AmcError


def doc(default, help: str, **metadata):
    """A dataclass field with a default and a help string (`positional=True` makes it a CLI argument)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class TrainConfig:
    """Train a teacher network from scratch."""

    model: str = doc("resnet20", "registry name, tv:<torchvision name> or path/to/file.py:ClassName")
    dataset: str = doc("cifar10", "cifar10, digits, imagefolder or synthetic")
    data_dir: str | None = doc(None, "data folder or ImageFolder .tar.gz (cifar10, imagefolder)")
    download: bool = doc(False, "download CIFAR-10 through torchvision if it is missing")
    image_size: int | None = doc(None, "imagefolder: resize every image to NxN (default: keep their own size)")
    channels: int | None = doc(None, "imagefolder: 1 (grayscale) or 3 (RGB) (default: what the images are)")
    epochs: int = doc(40, "training epochs; 0 writes an untrained teacher, for structural checks")
    batch_size: int = doc(128, "batch size")
    lr: float = doc(0.2, "peak learning rate")
    momentum: float = doc(0.9, "Nesterov momentum")
    weight_decay: float = doc(5e-4, "weight decay on conv and linear weights")
    schedule: str = doc("onecycle", "learning-rate schedule: onecycle or cosine")
    precision: str = doc("auto", "auto (bf16 where native), bf16 (autocast + channels_last) or fp32; reports are fp32")
    seed: int = doc(0, "seed for initialisation, the val split, shuffling and augmentation")
    device: str = doc("auto", DEVICE_HELP)
    out: str = doc("teacher.pt", "checkpoint path; rewritten after every epoch")
    tb_dir: str | None = doc(None, "TensorBoard folder (default: <out without suffix>.tb)")
    resume: bool = doc(False, "continue from the checkpoint at --out")


@dataclass
class EvaluateConfig:
    """Report accuracy, MACs, params, size and latency (on --device) of a checkpoint."""

    model: str = doc("teacher.pt", "teacher or student checkpoint", positional=True)
    dataset: str | None = doc(None, "data set name (default: the one stored in the checkpoint)")
    data_dir: str | None = doc(None, "data folder or .tar.gz (default: the one stored in the checkpoint)")
    seed: int | None = doc(None, "val-split seed (default: the one the checkpoint was trained with)")
    latency_repeats: int = doc(20, "timed repeats per batch size (median reported)")
    threads: int | None = doc(None, "CPU threads for latency (default: torch's current setting)")
    device: str = doc("auto", DEVICE_HELP)
    speedup_over: str | None = doc(
        None, "a reference checkpoint (e.g. the teacher): both are timed alternately, adding speedup_b<batch>"
    )
    runtime: str = doc("eager", "where to measure: eager (PyTorch), onnxruntime or openvino (the exported model)")
    runtime_precision: str = doc("fp32", "onnxruntime/openvino: fp32, or int8 (static QDQ, calibrated on train images)")
    rounds: int | None = doc(
        None, "alternating timing rounds of --speedup-over and runtimes (default: 20 at batch 1, 10 above)"
    )
    json: bool = doc(False, "print one JSON object as the last line of stdout")


@dataclass
class FinetuneSettings:
    """How a student is fine-tuned against its teacher."""

    epochs: int = doc(15, "KD fine-tuning epochs (ignored when --steps is set)")
    steps: int | None = doc(None, "fine-tune for this many batches instead of whole epochs")
    batch_size: int = doc(128, "batch size")
    lr: float = doc(0.05, "initial learning rate, cosine-annealed to 0")
    momentum: float = doc(0.9, "Nesterov momentum")
    weight_decay: float = doc(5e-4, "weight decay")
    alpha: float = doc(0.9, "weight of the soft-target KL term; 1 - alpha weighs cross-entropy")
    temperature: float = doc(4.0, "softmax temperature T of the soft targets")
    mse_weight: float = doc(0.0, "weight of N2N's MSE between student and teacher logits")
    precision: str = doc("auto", "auto (bf16 where native), bf16 or fp32 for training")
    seed: int = doc(0, "seed for shuffling and augmentation")

    def check(self) -> None:
        if (self.steps if self.steps is not None else self.epochs) < 1:
            raise AmcError("fine-tuning would run no steps; set --epochs or --steps above 0")


@dataclass
class ApplyConfig:
    """Apply a compression policy to a teacher and save the student (a search's policy reproduces its
    student.pt exactly, BatchNorm recalibration included)."""

    teacher: str = doc("teacher.pt", "teacher checkpoint")
    policy: str = doc("policy.json", "policy JSON (from `amc baseline` or `amc search`)")
    out: str = doc("student.pt", "student checkpoint to write")
    recalibrate_bn: int | None = doc(
        None, "re-estimate BatchNorm statistics from this many training batches (default: as the search did, else 0)"
    )
    recalibrate_precision: str | None = doc(None, "bf16 or fp32 for recalibration (default: as the search did)")
    reconstruct: bool | None = doc(None, "refit layers that lost inputs by least squares (default: as the search)")
    force: bool = doc(False, "apply a policy searched on another model of the same family (warns)")
    data_dir: str | None = doc(None, "data for recalibration and reconstruction (default: the teacher's)")
    device: str = doc("auto", DEVICE_HELP)
    json: bool = doc(False, "print one JSON object as the last line of stdout")


@dataclass
class BaselineConfig:
    """Write a baseline policy that meets a budget: uniform, random, or Torch-Pruning's global pruning."""

    method: str = doc("uniform", "uniform, random or global", positional=True)
    teacher: str = doc("teacher.pt", "teacher checkpoint")
    flops: float | None = doc(None, "FLOPs budget as a ratio of the teacher's")
    params: float | None = doc(None, "parameter budget as a ratio of the teacher's")
    size: float | None = doc(None, "size budget as a ratio of the teacher's")
    latency: float | None = doc(None, "latency budget as a ratio of the teacher's, predicted by --latency-table")
    latency_table: str | None = doc(None, "latency table from `amc profile-latency` (for --latency)")
    runtime: str = doc("eager", "the runtime the latency table must be measured in: eager, onnxruntime or openvino")
    runtime_precision: str = doc("fp32", "the precision the latency table must be measured at: fp32 or int8")
    round_to: str = doc("auto", "round kept channels to a multiple of this; auto: the latency table's fastest, else 1")
    seed: int = doc(0, "seed of the random policy")
    importance: str = doc("l1", "global: channel importance, l1, l1-normalized, lamp or taylor (needs data)")
    max_pruning_ratio: float = doc(0.8, "global: the most of any one layer's channels that may be removed")
    data_dir: str | None = doc(None, "global with taylor: data folder or .tar.gz (default: the teacher's)")
    out: str = doc("policy.json", "policy JSON to write")
    device: str = doc("auto", DEVICE_HELP)
    json: bool = doc(False, "print one JSON object as the last line of stdout")


@dataclass
class FinetuneConfig(FinetuneSettings):
    """KD fine-tune a student against its teacher; checkpoint every epoch."""

    student: str = doc("student.pt", "student checkpoint (from `amc apply`)")
    teacher: str = doc("teacher.pt", "teacher checkpoint")
    out: str = doc("student_ft.pt", "fine-tuned student checkpoint; rewritten after every epoch")
    data_dir: str | None = doc(None, "data (default: the teacher's)")
    tb_dir: str | None = doc(None, "TensorBoard folder (default: <out without suffix>.tb)")
    device: str = doc("auto", DEVICE_HELP)
    resume: bool = doc(False, "continue from the checkpoint at --out")
    json: bool = doc(False, "print one JSON object as the last line of stdout")


@dataclass
class ProfileLatencyConfig:
    """Build a latency table for a teacher in the runtime it is deployed to, and report its error on random
    students timed end to end there."""

    model: str = doc("teacher.pt", "checkpoint, or a registry name with --input-shape", positional=True)
    out: str = doc("lut.json", "latency table to write")
    input_shape: str = doc("3,32,32", "input shape C,H,W when MODEL is a registry name")
    runtime: str = doc("eager", "eager (layers timed alone in PyTorch), onnxruntime or openvino (whole students)")
    runtime_precision: str = doc("fp32", "onnxruntime/openvino: fp32 or int8 (static QDQ)")
    batch_size: int = doc(1, "batch size the table is built for")
    threads: int = doc(1, "CPU threads used for every measurement")
    grid_points: int = doc(6, "eager: channel-count grid points per dimension")
    students: int = doc(90, "onnxruntime/openvino: random students timed to fit the table")
    check: int = doc(30, "random students to measure prediction error on (eager: 0 skips)")
    seed: int = doc(0, "seed of the random students")
    device: str = doc("auto", DEVICE_HELP)
    json: bool = doc(False, "print one JSON object as the last line of stdout")


@dataclass
class ExportConfig:
    """Export a student for deployment (TorchScript, ONNX or packed low-bit weights) and check the file."""

    student: str = doc("student.pt", "student (or teacher) checkpoint", positional=True)
    format: str = doc("torchscript", "torchscript, onnx or packed (bits-wide integer codes + per-channel scales)")
    out: str | None = doc(None, "file to write (default: STUDENT with .ts, .onnx or .amcpack)")
    tolerance: float = doc(1e-4, "largest output difference from PyTorch accepted, relative to the largest |output|")
    device: str = doc("auto", f"where the written file is checked against PyTorch: {DEVICE_HELP}")
    json: bool = doc(False, "print one JSON object as the last line of stdout")
