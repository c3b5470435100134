"""Analytic cost prediction: a student's MACs, params and size from keep ratios, removed blocks, bits
and sparsity, without building it. The env and the baselines use it to enforce budgets quickly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch.nn as nn

from amc.compress.heads import attention_macs, find_attention, is_attention
from amc.compress.policy import CompressionPolicy
from amc.compress.pruning import PruningUnit, channel_norm_width, execution_order, followable_units
from amc.compress.removal import removable_blocks
from amc.cost.measured import layer_macs, layer_shapes, norm_channels, sparse_weight_bits
from amc.errors import AmcError

Parts = list[tuple[str, list[int]]]
"""(unit, how many of the layer's channels each piece of the unit feeds), one entry per unit."""


@dataclass
class LayerCost:
    name: str
    macs: int
    weight_params: int
    rows: int
    """Output channels (rows of the weight matrix)."""
    in_channels: int
    bias: int
    outputs: Parts
    """The units that remove this layer's output channels."""
    inputs: Parts
    """The units that remove this layer's input channels."""
    depthwise: bool
    block: str | None
    """The removable block holding this layer, if any."""

    @property
    def out_unit(self) -> str | None:
        return self.outputs[0][0] if len(self.outputs) == 1 else None

    @property
    def in_unit(self) -> str | None:
        return self.inputs[0][0] if len(self.inputs) == 1 else None


@dataclass
class TensorCost:
    """A normalisation layer or a free parameter (a position embedding) whose channels follow units: what it
    stores per channel."""

    name: str
    channels: int
    parts: Parts
    block: str | None
    params_per_channel: int
    """A norm's affine weight and bias: 2 (or 0 without them); a position embedding's tokens."""
    floats_per_channel: int
    """Parameters and float buffers (BatchNorm's running mean and variance), as size_bytes counts them."""
    dim: int | None = None
    """For a free parameter: the dimension its channels run along (None for a norm layer)."""


@dataclass
class AttentionCost:
    """An attention module's two matmuls: their MACs scale with the share of its heads kept."""

    name: str
    macs: int
    unit: str | None
    """The head unit (None where the heads are kept whole)."""
    block: str | None


@dataclass
class Costs:
    macs: float
    params: float
    size_bytes: float


def _refuse_unfollowed_attention(model: nn.Module, input_shape: Sequence[int]) -> None:
    """Attention whose matmuls the cost model cannot count: an `nn.MultiheadAttention` left in the model (amc.models
    swaps the standard ones), or a qkv/proj/num_heads module amc does not follow (e.g. Swin V2's cosine attention).
    Refuse rather than predict a wrong budget."""
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            raise AmcError(
                f"attention {name}: an nn.MultiheadAttention with separate key/value widths, bias_k/bias_v or "
                "add_zero_attn is not followed by the cost model; use self-attention with one width (amc swaps "
                "that for its SelfAttention)"
            )
    attention = [name for name, module in model.named_modules() if is_attention(module)]
    if attention:
        followed = {a.name for a in find_attention(model, input_shape)}
        if unfollowed := [name for name in attention if name not in followed]:
            kind = type(model.get_submodule(unfollowed[0])).__name__
            raise AmcError(
                f"attention {unfollowed[0]} ({kind}): the cost model does not follow this form of attention (it "
                "follows self-attention over a sequence and Swin's windowed attention); please report it with the model"
            )


class CostModel:
    """Per-layer teacher costs plus which pruning units remove each layer's input and output channels.

    A layer's kept channels are its channels less what each unit removes from it; a unit removes the same
    share of every piece (amc/compress/pruning.py), so the prediction is exact for any topology torch-pruning prunes.
    Units left out (`embedding=False`: a transformer's embedding width) are kept whole, and the prediction stays
    exact.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        units: list[PruningUnit] | None = None,
        removable: list[str] | None = None,
        embedding: bool = True,
    ):
        self.latency_table = None
        _refuse_unfollowed_attention(model, input_shape)
        self.units = units if units is not None else followable_units(model, input_shape, embedding)
        self.removable = removable if removable is not None else removable_blocks(model, input_shape)
        self.by_name = {u.name: u for u in self.units}
        self.channels = {u.name: u.channels for u in self.units}
        self.pieces = {u.name: [len(p) for p in u.pieces] for u in self.units}
        parts: dict[str, dict[str, Parts]] = {"out": {}, "in": {}, "tensor": {}}
        for u in self.units:
            for role, index in (("out", u.out_index), ("in", u.in_index), ("tensor", u.tensor_index)):
                for layer, mapping in index.items():
                    parts[role].setdefault(layer, []).append((u.name, u.channel_counts(mapping)))
        depthwise = {layer for u in self.units for layer in u.depthwise_layers}
        macs = layer_macs(model, input_shape)

        def block_of(name: str) -> str | None:
            return next((b for b in self.removable if name == b or name.startswith(b + ".")), None)

        self.layers: list[LayerCost] = []
        self.tensors: list[TensorCost] = []
        head_units = {u.name for u in self.units if u.kind == "heads"}
        self.attention = [
            AttentionCost(name, count, f"{name}.qkv" if f"{name}.qkv" in head_units else None, block_of(name))
            for name, count in attention_macs(model, input_shape).items()
        ]
        parameters = dict(model.named_parameters())
        free = {name for name in parts["tensor"] if name in parameters}  # position embeddings, class tokens
        for name in sorted(free):
            param = parameters[name]
            dim = max(d for d, size in enumerate(param.shape) if size > 1)  # torch-pruning's: the last non-singleton
            per_channel = param.numel() // param.shape[dim]
            self.tensors.append(TensorCost(name, param.shape[dim], parts["tensor"][name], block_of(name),
                                           per_channel, per_channel, dim))  # fmt: skip
        self.fixed_params = 0  # parameters outside conv/linear/norm layers that no unit prunes
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                self.layers.append(
                    LayerCost(
                        name,
                        macs.get(name, 0),
                        module.weight.numel(),
                        module.weight.shape[0],
                        module.in_channels if isinstance(module, nn.Conv2d) else module.in_features,
                        0 if module.bias is None else module.bias.numel(),
                        parts["out"].get(name, []),
                        parts["in"].get(name, []),
                        name in depthwise,
                        block_of(name),
                    )
                )
            elif (channels := channel_norm_width(module)) is not None:
                params = sum(p.numel() for p in module.parameters(recurse=False))
                floats = params + sum(b.numel() for b in module.buffers(recurse=False) if b.is_floating_point())
                self.tensors.append(TensorCost(name, channels, parts["tensor"].get(name, []), block_of(name),
                                               params // channels, floats // channels))  # fmt: skip
            else:
                prefix = f"{name}." if name else ""
                self.fixed_params += sum(p.numel() for n, p in module.named_parameters(recurse=False)
                                         if prefix + n not in free)  # fmt: skip
        self.block_bypass = self._block_bypass(model, input_shape)
        self.teacher = self.predict({}, (), {}, {})

    def _block_bypass(self, model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[str | None, str | None]]:
        """For each removable block: (unit producing its output, unit feeding its input). Once the block is
        gone, layers that consumed the first consume the second (plain nets; a no-op for residual blocks)."""
        order = {name: i for i, name in enumerate(execution_order(model, input_shape))}
        by_name = {layer.name: layer for layer in self.layers}
        bypass = {}
        for block in self.removable:
            inside = sorted((n for n in by_name if by_name[n].block == block), key=lambda n: order.get(n, 0))
            if inside:
                bypass[block] = (by_name[inside[-1]].out_unit, by_name[inside[0]].in_unit)
        return bypass

    def keep_fraction(self, keep_ratios: dict[str, float], unit: str | None, round_to: int) -> float:
        """The share of a unit's channels kept."""
        if unit is None or unit not in keep_ratios:
            return 1.0
        kept = self.by_name[unit].kept_per_piece(keep_ratios[unit], round_to)
        return sum(kept) / self.channels[unit]

    def removed_channels(self, keep_ratios: dict[str, float], parts: Parts, source: dict, round_to: int) -> float:
        """Channels the units in `parts` remove from one layer."""
        removed = 0.0
        for unit, counts in parts:
            if unit in source:  # the layer now reads another unit's channels (a removed block)
                removed += sum(counts) * (1.0 - self.keep_fraction(keep_ratios, source[unit], round_to))
            elif unit in keep_ratios:
                kept = self.by_name[unit].kept_per_piece(keep_ratios[unit], round_to)
                removed += sum(c * (1.0 - k / n) for c, k, n in zip(counts, kept, self.pieces[unit], strict=True))
        return removed

    def _bypass_sources(self, removed: set[str]) -> dict[str, str | None]:
        """Units whose consumers, once their blocks are removed, read another unit's channels instead."""
        source = {}
        for block in removed:
            produced, fed = self.block_bypass.get(block, (None, None))
            if produced is not None and produced != fed:
                source[produced] = fed
        for unit in list(source):
            while source[unit] in source and source[unit] != unit:
                source[unit] = source[source[unit]]
        return source

    def layer_channels(
        self, keep_ratios: dict[str, float], removed: Iterable[str] = (), round_to: int = 1
    ) -> list[tuple[LayerCost, float, float]]:
        """(layer, kept input channels, kept output channels) for every layer left."""
        removed = set(removed)
        source = self._bypass_sources(removed)
        kept = []
        for layer in self.layers:
            if layer.block in removed:
                continue
            outs = layer.rows - self.removed_channels(keep_ratios, layer.outputs, {}, round_to)
            ins = layer.in_channels - self.removed_channels(keep_ratios, layer.inputs, source, round_to)
            kept.append((layer, outs if layer.depthwise else ins, outs))
        return kept

    def layer_shapes(
        self, keep_ratios: dict[str, float], removed: Iterable[str] = (), round_to: int = 1
    ) -> dict[str, tuple[int, int]]:
        """(input, output) channels of every remaining conv/linear layer: what a latency table needs."""
        return {
            layer.name: (round(ins), round(outs))
            for layer, ins, outs in self.layer_channels(keep_ratios, removed, round_to)
        }

    def predict(
        self,
        keep_ratios: dict[str, float],
        removed: Iterable[str] = (),
        bits: dict[str, int] | None = None,
        sparsity: dict[str, float] | None = None,
        round_to: int = 1,
    ) -> Costs:
        removed = set(removed)
        bits, sparsity = bits or {}, sparsity or {}
        macs = params = size_bits = 0.0
        for layer, ins, outs in self.layer_channels(keep_ratios, removed, round_to):
            in_frac, out_frac = ins / layer.in_channels, outs / layer.rows
            # A depthwise conv's per-output cost does not depend on its (tied) input count.
            scale = out_frac if layer.depthwise else out_frac * in_frac
            macs += layer.macs * scale
            weights = layer.weight_params * scale
            rows = layer.rows * out_frac
            params += weights + layer.bias * out_frac
            b = bits.get(layer.name, 32)
            nnz = round(weights * (1.0 - sparsity.get(layer.name, 0.0)))
            size_bits += sparse_weight_bits(round(weights), nnz, b, round(rows)) + layer.bias * out_frac * 32
            if b < 32:
                size_bits += rows * 32
        for attention in self.attention:
            if attention.block not in removed:
                macs += attention.macs * self.keep_fraction(keep_ratios, attention.unit, round_to)
        source = self._bypass_sources(removed)
        for tensor in self.tensors:
            if tensor.block in removed:
                continue
            kept = tensor.channels - self.removed_channels(keep_ratios, tensor.parts, source, round_to)
            params += tensor.params_per_channel * kept
            size_bits += tensor.floats_per_channel * kept * 32
        params += self.fixed_params
        size_bits += self.fixed_params * 32
        return Costs(macs=macs, params=params, size_bytes=size_bits / 8)

    def check_student(self, student: nn.Module, policy: CompressionPolicy) -> None:
        """Raise, naming the first layer, if the built student differs from the prediction: its costs, and so
        the budget, would not be what the search was promised."""
        predicted = self.layer_shapes(policy.keep_ratios, policy.removed_blocks, policy.round_to)
        source = self._bypass_sources(set(policy.removed_blocks))
        predicted_tensors = {
            t.name: round(t.channels - self.removed_channels(policy.keep_ratios, t.parts, source, policy.round_to))
            for t in self.tensors
            if t.block not in policy.removed_blocks
        }
        params = dict(student.named_parameters())
        built_tensors = norm_channels(student) | {
            t.name: params[t.name].shape[t.dim] for t in self.tensors if t.dim is not None and t.name in params
        }
        for expected, built, what in ((predicted, layer_shapes(student), "(in, out) channels"),
                                      (predicted_tensors, built_tensors, "channels")):  # fmt: skip
            for name in expected.keys() | built.keys():
                if expected.get(name) != built.get(name):
                    raise AmcError(
                        f"layer {name}: predicted {what} {expected.get(name)}, built {built.get(name)}; the cost "
                        "model does not follow this topology, so the budget cannot be guaranteed (please report it)"
                    )

    def with_latency(self, table) -> CostModel:
        """Predict latency too, from `table` (`amc.cost.latency.LatencyTable` or
        `amc.cost.runtime_latency.RuntimeLatencyTable`: anything whose `predict` maps layer shapes to milliseconds)."""
        self.latency_table = table
        self.teacher_latency = table.predict(self.layer_shapes({}))
        return self

    def policy_ratios(self, policy: CompressionPolicy) -> dict[str, float]:
        """Each resource of the policy's student as a ratio of the teacher's: flops, params, size, and latency
        with a table."""
        costs = self.predict(policy.keep_ratios, policy.removed_blocks, policy.bits, policy.sparsity, policy.round_to)
        ratios = self.ratios(costs)
        if self.latency_table is not None:
            shapes = self.layer_shapes(policy.keep_ratios, policy.removed_blocks, policy.round_to)
            ratios["latency"] = self.latency_table.predict(shapes) / self.teacher_latency
        return ratios

    def ratios(self, costs: Costs) -> dict[str, float]:
        return {
            "flops": costs.macs / self.teacher.macs,
            "params": costs.params / self.teacher.params,
            "size": costs.size_bytes / self.teacher.size_bytes,
        }
