"""`amc export`: a student as TorchScript, ONNX or a packed file, checked against the model it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amc.checkpoint import input_shape_of, load_checkpoint
from amc.compress.student import model_from_checkpoint
from amc.config import device_field, doc
from amc.cost.measured import size_bytes
from amc.device import resolve_device
from amc.errors import AmcError
from amc.files import check_output_file, refuse_overwriting_inputs


@dataclass
class ExportConfig:
    """Export a student for deployment (TorchScript, ONNX or packed low-bit weights) and check the file."""

    student: str = doc("student.pt", "student (or teacher) checkpoint", positional=True)
    format: str = doc("torchscript", "torchscript, onnx or packed (bits-wide integer codes + per-channel scales)")
    out: str | None = doc(None, "file to write (default: STUDENT with .ts, .onnx or .amcpack)")
    tolerance: float = doc(1e-4, "largest output difference from PyTorch accepted, relative to the largest |output|")
    device: str = device_field("where the written file is checked against PyTorch")


def export_command(cfg: ExportConfig) -> dict:
    import torch

    from amc.compress.export import (
        FORMATS,
        bake,
        export_onnx,
        export_torchscript,
        load_packed,
        relative_difference,
        save_packed,
    )

    if cfg.format not in FORMATS:
        raise AmcError(f"unknown export format {cfg.format!r}; choose one of {', '.join(FORMATS)}")
    device = resolve_device(cfg.device)
    blob = load_checkpoint(cfg.student)
    model = model_from_checkpoint(blob).cpu().eval()
    shape = input_shape_of(blob)
    suffix = {"torchscript": ".ts", "onnx": ".onnx", "packed": ".amcpack"}[cfg.format]
    out = check_output_file(cfg.out or Path(cfg.student).with_suffix(suffix))
    refuse_overwriting_inputs(out, student=cfg.student)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"out": str(out), "format": cfg.format, "checked_on": str(device)}
    tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed: no half-written file at `out`
    try:
        if cfg.format == "torchscript":
            diff = export_torchscript(model, shape, tmp, device)
        elif cfg.format == "onnx":
            diff = export_onnx(model, shape, tmp, device)
        else:
            written = save_packed(model, tmp)
            baked = bake(model)
            baked.load_state_dict(load_packed(tmp))
            x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1)).to(device)
            with torch.no_grad():
                diff = relative_difference(baked.to(device)(x).cpu(), model.to(device)(x).cpu())
            model = model.cpu()
            reported = size_bytes(model)
            result.update(size_bytes_reported=reported, bytes_over_reported=written / reported - 1.0)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    result["bytes"] = out.stat().st_size
    result["relative_diff"] = diff
    if diff is None:
        result["check"] = "skipped: install the onnx package to compare outputs"
    elif diff > cfg.tolerance:
        raise AmcError(f"{out} was written but its outputs differ from PyTorch's by {diff:.2e} of the largest output "
                       f"(> --tolerance {cfg.tolerance:g}); report the model, or raise --tolerance")  # fmt: skip
    return result
