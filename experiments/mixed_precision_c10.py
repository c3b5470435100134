"""Does per-layer int8-or-fp32 pay where the model is deployed? HAQ's question, asked of a real int8 runtime.

    python experiments/mixed_precision_c10.py run --targets openvino-int8-b64 openvino-int8-b1
    python experiments/mixed_precision_c10.py report

For every conv/linear layer of the model (the ResNet-20 teacher by default), that layer alone stays fp32 and the
rest is int8 (the same QDQ file as amc.deploy.deployment makes, with the layer excluded). Each file is measured in the
runtime: validation accuracy from the runtime's own outputs (all 5,000 validation images, not the test split) and
latency timed alternately with the all-int8 file and the fp32 model (amc.deploy.timing's protocol), one thread.
Mixed precision pays where a layer left in fp32 wins back accuracy for little latency. Rows merge into
experiments/results/mixed_precision.json (resumable: measured layers are skipped); `report` writes the .md.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn
from rows import merge_row, page_head, parse_target, read_rows, write_whole
from script_args import run_script
from tqdm.auto import tqdm

from amc.checkpoint import load_checkpoint
from amc.commands.common import load_data_for
from amc.compress.student import model_from_checkpoint
from amc.deploy.deployment import calibration_images, deploy, runtime_accuracy, time_deployed
from amc.deploy.runtimes import Target, describe_cpu
from amc.errors import AmcError

ALL_INT8, ALL_FP32 = "(none: all int8)", "(all: fp32 model)"


@dataclass
class Args:
    command: str
    targets: list[str] = field(default_factory=lambda: ["openvino-int8-b64", "openvino-int8-b1"])
    model: str = "experiments/teachers/resnet20_cifar10.pt"
    data_dir: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    activation_type: str = "uint8"
    """The int8 activation type (deploy_c10's tables measured uint8 as the faster on every target so far)."""
    results: str = "experiments/results/mixed_precision.json"


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def run(args: Args) -> None:
    targets = [parse_target(text) for text in args.targets]
    if any(t.precision != "int8" for t in targets):
        raise AmcError("mixed precision starts from an int8 target, e.g. openvino-int8-b64")
    blob = load_checkpoint(args.model)
    model = model_from_checkpoint(blob).eval()
    data = load_data_for(blob, None, args.data_dir, None, checkpoint=args.model)
    shape, calibration, cpu = data.input_shape, calibration_images(data), describe_cpu()
    done = {r["folder"] for r in json.loads(Path(args.results).read_text())} if Path(args.results).exists() else set()
    for text, target in zip(args.targets, targets, strict=True):
        with tempfile.TemporaryDirectory() as folder:
            fp32 = deploy(model, shape, Target(target.runtime, "fp32", target.batch, 1), folder, name="fp32")
            int8 = deploy(model, shape, target, folder, calibration=calibration, activation_type=args.activation_type,
                          name="int8")  # fmt: skip
            for layer in tqdm([ALL_INT8, ALL_FP32, *layer_names(model)], desc=text, dynamic_ncols=True):
                key = f"{Path(args.model).stem}-{text}-{layer}"
                if key in done:
                    continue
                if layer == ALL_INT8:
                    measured = int8
                elif layer == ALL_FP32:
                    measured = fp32
                else:
                    measured = deploy(model, shape, target, folder, calibration=calibration, name="mixed",
                                      activation_type=args.activation_type, float_layers=[layer])  # fmt: skip
                timings = time_deployed({"measured": measured, "int8": int8, "fp32": fp32}, shape)
                row = {
                    "folder": key, "model": args.model, "layer": layer, "runtime": target.runtime,
                    "batch": target.batch, "threads": 1, "activation_type": args.activation_type,
                    "acc_val": runtime_accuracy(measured, data, "val"),
                    "latency_ms": timings["measured"].median_ms, "int8_latency_ms": timings["int8"].median_ms,
                    "fp32_latency_ms": timings["fp32"].median_ms,
                    "latency_vs_int8": timings["measured"].median_ms / timings["int8"].median_ms,
                    **cpu, "measured_at": time.strftime("%Y-%m-%d %H:%M"),
                }  # fmt: skip
                merge_row(args.results, row)


def report(args: Args) -> None:
    path = Path(args.results)
    rows = read_rows(path, "mixed_precision_c10.py run")
    lines = page_head(
        "mixed_precision_c10.py",
        path,
        "Per-layer int8 or fp32, measured in the runtime",
        "One layer left in fp32, the rest int8 (QDQ, per-channel weights, MinMax activations on 256 "
        "training images). Accuracy: all 5,000 validation images from the runtime's outputs; *gain*: "
        "points over the all-int8 file. Latency: median of alternated runs, over the all-int8 file's.",
    )
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["runtime"], r["batch"], r["cpu"], ", ".join(r["cpu_flags"])), []).append(r)
    for (model, runtime, batch, cpu, flags), members in sorted(groups.items()):
        base = next((r for r in members if r["layer"] == ALL_INT8), None)
        if base is None:
            continue
        lines += [f"## {Path(model).stem}, {runtime} int8, batch {batch}", "", f"On {cpu} ({flags}).", "",
                  "| fp32 layer | val acc | gain (points) | latency vs all-int8 |", "|---|---|---|---|"]  # fmt: skip
        ranked = sorted(members, key=lambda r: (r["layer"] != ALL_FP32, -r["acc_val"], r["latency_vs_int8"]))
        for r in ranked:
            gain = 100 * (r["acc_val"] - base["acc_val"])
            lines.append(f"| {r['layer']} | {100 * r['acc_val']:.2f} | {gain:+.2f} | {r['latency_vs_int8']:.3f} |")
        lines += ["", _verdict(members, base), ""]
    write_whole(path.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {path.with_suffix('.md')}")


def _verdict(members: list[dict], base: dict) -> str:
    """The whole fp32 model's gain and cost, and the best single layer's."""
    whole = next((r for r in members if r["layer"] == ALL_FP32), None)
    single = [r for r in members if r["layer"] not in (ALL_INT8, ALL_FP32)]
    if whole is None or not single:
        return "Not every layer is measured yet."
    best = max(single, key=lambda r: r["acc_val"])
    gaining = sum(r["acc_val"] > base["acc_val"] for r in single)
    return (f"All of the model in fp32 wins back {100 * (whole['acc_val'] - base['acc_val']):+.2f} points at "
            f"{whole['latency_vs_int8']:.2f}× the int8 latency; the best single fp32 layer ({best['layer']}) "
            f"{100 * (best['acc_val'] - base['acc_val']):+.2f} points at {best['latency_vs_int8']:.2f}×, with "
            f"{gaining} of {len(single)} layers gaining any image.")  # fmt: skip


def main(args: Args) -> None:
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    run_script(main, Args, __doc__, ["run", "report"])
