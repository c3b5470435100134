"""A per-layer latency lookup table: predicts a student's latency from its layer shapes, so latency
budgets can be enforced without running the student (NetAdapt / HAQ style).

Each conv/linear layer of the teacher (with the BatchNorm and ReLU that follow a conv) is timed alone on
a grid of (input channels, output channels). A student's latency is the sum of bilinear interpolations
over its remaining layers, times one calibration factor: the teacher's measured latency over the sum of
its own layers' entries (it absorbs adds, pooling and what isolated timing misses or double-counts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.nn as nn
from tqdm.auto import tqdm

from amc.cost import runtime_latency
from amc.cost.measured import layer_shapes, measure_latency
from amc.cost.table_checks import require, whole_list
from amc.device import model_device
from amc.errors import AmcError, library_text
from amc.forward import forward_with_hooks
from amc.values import finite, whole

FORMAT = "amc-latency-table"


@dataclass
class LayerEntry:
    kind: str
    in_grid: list[int]
    out_grid: list[int]
    ms: list[list[float]]
    """ms[i][j]: milliseconds per image with in_grid[i] inputs and out_grid[j] outputs."""

    def predict(self, in_channels: int, out_channels: int) -> float:
        return float(_bilinear(self.in_grid, self.out_grid, np.asarray(self.ms), in_channels, out_channels))


@dataclass
class LatencyTable:
    batch_size: int
    threads: int
    layers: dict[str, LayerEntry]
    calibration: float
    teacher_ms: float
    metadata: dict = field(default_factory=dict)

    def predict(self, shapes: dict[str, tuple[int, int]]) -> float:
        """Milliseconds per image for a model whose remaining layers have these (in, out) channels."""
        unknown = set(shapes) - set(self.layers)
        if unknown:
            raise AmcError(f"latency table has no entry for layers {sorted(unknown)[:3]}; was it built for this model?")
        return self.calibration * sum(self.layers[name].predict(cin, cout) for name, (cin, cout) in shapes.items())

    def layer_ms(self, shapes: dict[str, tuple[int, int]]) -> dict[str, float]:
        """Each layer's part of the predicted latency."""
        return {name: self.calibration * self.layers[name].predict(cin, cout) for name, (cin, cout) in shapes.items()}

    def predict_model(self, model: nn.Module) -> float:
        return self.predict(layer_shapes(model))

    def save(self, path: str | Path) -> None:
        blob = {
            "format": FORMAT,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "calibration": self.calibration,
            "teacher_ms": self.teacher_ms,
            "metadata": self.metadata,
            "layers": {n: e.__dict__ for n, e in self.layers.items()},
        }
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        tmp.write_text(json.dumps(blob, indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        table = load_latency_table(path, "eager", "fp32")
        if not isinstance(table, cls):
            raise AmcError(f"{path} is a runtime latency table; read it with amc.cost.latency.load_latency_table")
        return table

    def check_fields(self, path: str | Path) -> None:
        """Every field of the right kind: whole counts, finite times, one time per grid point."""
        require(
            whole(self.batch_size, 1) and whole(self.threads, 1), path, "batch_size and threads must be whole numbers"
        )
        require(finite(self.calibration, 0) and finite(self.teacher_ms, 0), path, "calibration and teacher_ms")
        require(isinstance(self.metadata, dict), path, "metadata must be a mapping")
        for name, e in self.layers.items():
            grids = whole_list(e.in_grid) and whole_list(e.out_grid)
            rows = isinstance(e.ms, list) and grids and len(e.ms) == len(e.in_grid)
            ok = rows and all(isinstance(r, list) and len(r) == len(e.out_grid) and all(finite(v, 0) for v in r)
                              for r in e.ms)  # fmt: skip
            require(isinstance(e.kind, str) and ok, path, f"layer {name}: grids and an in x out grid of times")

    def check_target(self, runtime: str, precision: str, where: str) -> None:
        """A table timed layer by layer in PyTorch serves eager fp32 only."""
        if (runtime, precision) != ("eager", "fp32"):
            raise AmcError(
                f"the latency table {where} was timed in eager PyTorch, not {runtime} {precision}; build one with "
                f"`amc profile-latency TEACHER --runtime {runtime} --runtime-precision {precision}`"
            )


def resolve_round_to(value: str | int, table=None) -> int:
    """A channel multiple from a config value: a whole number, or `auto` (the runtime table's fastest measured
    multiple; 1 without one)."""
    if str(value).strip().lower() == "auto":
        return getattr(table, "round_to", 1)
    try:
        multiple = int(str(value))
    except ValueError:
        raise AmcError(f"round_to is {value!r}; write a whole number such as 8, or auto") from None
    if multiple < 1:
        raise AmcError(f"round_to is {multiple}; it must be at least 1 (or auto)")
    if table is not None and getattr(table, "round_to", multiple) != multiple:
        raise AmcError(
            f"round_to is {multiple} but the latency table was fitted for students rounded to {table.round_to}; "
            f"use round_to auto or {table.round_to}"
        )
    return multiple


def require_latency_table(budget, table) -> None:
    """A latency budget cannot be checked without a table: say how to build one."""
    if budget.latency is not None and table is None:
        raise AmcError(
            "a latency budget needs a latency table measured where the student will run; build one with "
            "`amc profile-latency TEACHER --runtime openvino --runtime-precision int8 --batch-size 64 --out lut.json` "
            "and pass `--latency-table lut.json --runtime openvino --runtime-precision int8`"
        )


def load_latency_table(path: str | Path, runtime: str, precision: str):
    """A `LatencyTable` (eager PyTorch, per layer) or an `amc.cost.runtime_latency.RuntimeLatencyTable`, refused in one
    line unless it was measured for `runtime` at `precision` (and, for a runtime table, on this CPU)."""
    try:
        blob = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AmcError(
            f"cannot read latency table {path}: {library_text(exc)}; build one with `amc profile-latency`"
        ) from exc
    kind = blob.get("format") if isinstance(blob, dict) else None
    if kind == FORMAT:
        blob.pop("format")
        try:
            table = LatencyTable(layers={n: LayerEntry(**e) for n, e in blob.pop("layers").items()}, **blob)
        except (TypeError, AttributeError, KeyError) as exc:
            raise AmcError(f"{path} is a damaged latency table ({library_text(exc)}); build it again") from None
        table.check_fields(path)
    elif kind == runtime_latency.FORMAT:
        table = runtime_latency.RuntimeLatencyTable.from_blob(blob, path)
    else:
        raise AmcError(f"{path} is not an amc latency table; build one with `amc profile-latency`")
    table.check_target(runtime, precision, str(path))
    return table


def _bilinear(xs: Sequence[int], ys: Sequence[int], grid: np.ndarray, x: float, y: float) -> float:
    def locate(points: Sequence[int], v: float) -> tuple[int, int, float]:
        points = list(points)
        if len(points) == 1:
            return 0, 0, 0.0
        i = int(np.clip(np.searchsorted(points, v) - 1, 0, len(points) - 2))
        # no extrapolation: below the grid a layer costs what its smallest timed shape did (noisy
        # timings extrapolated downwards can turn negative)
        return i, i + 1, float(np.clip((v - points[i]) / (points[i + 1] - points[i]), 0.0, 1.0))

    i0, i1, tx = locate(xs, x)
    j0, j1, ty = locate(ys, y)
    top = grid[i0, j0] * (1 - ty) + grid[i0, j1] * ty
    bottom = grid[i1, j0] * (1 - ty) + grid[i1, j1] * ty
    return top * (1 - tx) + bottom * tx


def _channel_grid(channels: int, points: int) -> list[int]:
    return sorted({max(1, round(channels * f)) for f in np.linspace(1.0 / points, 1.0, points)})


def _layer_inputs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, module: nn.Module, inputs, output) -> None:
        shapes.setdefault(name, tuple(inputs[0].shape[1:]))

    forward_with_hooks(model, input_shape, record, (nn.Conv2d, nn.Linear))
    return shapes


def _timed_layer(module: nn.Module, cin: int, cout: int) -> nn.Module:
    if isinstance(module, nn.Linear):
        return nn.Linear(cin, cout, bias=module.bias is not None)
    groups = cin if module.groups > 1 and module.groups == module.in_channels else 1
    if groups > 1:
        cout = cin
    conv = nn.Conv2d(
        cin, cout, module.kernel_size, module.stride, module.padding, groups=groups, bias=module.bias is not None
    )
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())


def build_latency_table(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    threads: int = 1,
    grid_points: int = 6,
    repeats: int = 15,
) -> LatencyTable:
    """Time every conv/linear layer of `model` on a (grid_points x grid_points) channel grid, on the model's
    device."""
    model = model.eval()
    device = model_device(model)
    inputs = _layer_inputs(model, input_shape)
    layers: dict[str, LayerEntry] = {}
    cache: dict[tuple, float] = {}
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name, module in tqdm(modules, desc="profiling layers", dynamic_ncols=True):
        conv = isinstance(module, nn.Conv2d)
        full_in, full_out = (
            (module.in_channels, module.out_channels) if conv else (module.in_features, module.out_features)
        )
        in_grid, out_grid = _channel_grid(full_in, grid_points), _channel_grid(full_out, grid_points)
        spatial = inputs[name][1:]
        ms = []
        for cin in in_grid:
            row = []
            for cout in out_grid:
                key = (
                    type(module).__name__,
                    cin,
                    cout,
                    spatial,
                    getattr(module, "kernel_size", None),
                    getattr(module, "stride", None),
                    getattr(module, "groups", 1),
                )
                if key not in cache:
                    cache[key] = measure_latency(
                        _timed_layer(module, cin, cout).to(device),
                        (cin, *spatial),
                        batch_size,
                        threads=threads,
                        repeats=repeats,
                        warmup=3,
                    )
                row.append(cache[key])
            ms.append(row)
        layers[name] = LayerEntry("conv" if conv else "linear", in_grid, out_grid, ms)
    teacher_ms = measure_latency(model, input_shape, batch_size, threads=threads, repeats=repeats * 2)
    full = sum(e.predict(e.in_grid[-1], e.out_grid[-1]) for e in layers.values())
    return LatencyTable(
        batch_size,
        threads,
        layers,
        teacher_ms / full,
        teacher_ms,
        {"input_shape": list(input_shape), "grid_points": grid_points, "device": str(device)},
    )
