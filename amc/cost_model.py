"""Analytic cost prediction: a student's MACs, params and size from keep ratios, removed blocks, bits
and sparsity, without building it. The env and the baselines use it to enforce budgets quickly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch.nn as nn

from amc.cost import layer_macs, sparse_weight_bits
from amc.pruning import PruningUnit, execution_order, find_units, kept_channels
from amc.removal import removable_blocks


@dataclass
class LayerCost:
    name: str
    macs: int
    weight_params: int
    rows: int
    """Output channels (rows of the weight matrix)."""
    in_channels: int
    bias: int
    out_unit: str | None
    in_unit: str | None
    depthwise: bool
    block: str | None
    """The removable block holding this layer, if any."""


@dataclass
class Costs:
    macs: float
    params: float
    size_bytes: float


class CostModel:
    """Per-layer teacher costs plus which pruning unit controls each layer's input and output channels."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        units: list[PruningUnit] | None = None,
        removable: list[str] | None = None,
    ):
        self.units = units if units is not None else find_units(model, input_shape)
        self.removable = removable if removable is not None else removable_blocks(model, input_shape)
        self.channels = {u.name: u.channels for u in self.units}
        out_unit = {layer: u.name for u in self.units for layer in u.out_layers}
        in_unit = {layer: u.name for u in self.units for layer in u.in_layers}
        norm_unit = {layer: u.name for u in self.units for layer in u.norm_layers}
        depthwise = {layer for u in self.units for layer in u.depthwise_layers}
        macs = layer_macs(model, input_shape)

        def block_of(name: str) -> str | None:
            return next((b for b in self.removable if name == b or name.startswith(b + ".")), None)

        self.layers: list[LayerCost] = []
        self.norms: list[tuple[str, int, str | None, str | None]] = []  # name, channels, unit, block
        self.fixed_params = 0  # parameters outside conv/linear/norm layers, never pruned
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
                        out_unit.get(name),
                        in_unit.get(name),
                        name in depthwise,
                        block_of(name),
                    )
                )
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                self.norms.append((name, module.num_features, norm_unit.get(name), block_of(name)))
            else:
                self.fixed_params += sum(p.numel() for p in module.parameters(recurse=False))
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
        if unit is None or unit not in keep_ratios:
            return 1.0
        channels = self.channels[unit]
        return kept_channels(channels, keep_ratios[unit], round_to) / channels

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

    def layer_fractions(
        self, keep_ratios: dict[str, float], removed: Iterable[str] = (), round_to: int = 1
    ) -> list[tuple[LayerCost, float, float]]:
        """(layer, kept fraction of its inputs, kept fraction of its outputs) for every layer left."""
        removed = set(removed)
        source = self._bypass_sources(removed)
        fractions = []
        for layer in self.layers:
            if layer.block in removed:
                continue
            out_frac = self.keep_fraction(keep_ratios, layer.out_unit, round_to)
            in_unit = source.get(layer.in_unit, layer.in_unit)
            in_frac = out_frac if layer.depthwise else self.keep_fraction(keep_ratios, in_unit, round_to)
            fractions.append((layer, in_frac, out_frac))
        return fractions

    def layer_shapes(
        self, keep_ratios: dict[str, float], removed: Iterable[str] = (), round_to: int = 1
    ) -> dict[str, tuple[int, int]]:
        """(input, output) channels of every remaining conv/linear layer: what a latency table needs."""
        return {
            layer.name: (round(layer.in_channels * in_frac), round(layer.rows * out_frac))
            for layer, in_frac, out_frac in self.layer_fractions(keep_ratios, removed, round_to)
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
        for layer, in_frac, out_frac in self.layer_fractions(keep_ratios, removed, round_to):
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
        source = self._bypass_sources(removed)
        for _, channels, unit, block in self.norms:
            if block in removed:
                continue
            kept = channels * self.keep_fraction(keep_ratios, source.get(unit, unit), round_to)
            params += 2 * kept
            size_bits += 4 * kept * 32  # weight, bias, running mean and variance
        params += self.fixed_params
        size_bits += self.fixed_params * 32
        return Costs(macs=macs, params=params, size_bytes=size_bits / 8)

    def ratios(self, costs: Costs) -> dict[str, float]:
        return {
            "flops": costs.macs / self.teacher.macs,
            "params": costs.params / self.teacher.params,
            "size": costs.size_bytes / self.teacher.size_bytes,
        }
