"""Channel pruning through torch-pruning's dependency graph.

Coupled layers (residual adds, depthwise convs) form one *pruning unit* with one keep ratio. A unit is
named after its first conv/linear layer in forward order. Channels are ranked by group L1 magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from amc.cost import model_device
from amc.errors import AmcError

Layer = (nn.Conv2d, nn.Linear)


@dataclass
class PruningUnit:
    """A group of coupled layers whose output channels are kept or removed together."""

    name: str
    channels: int
    out_layers: list[str]
    """Layers whose output channels this unit removes."""
    in_layers: list[str]
    """Layers whose input channels this unit removes (the consumers)."""
    kind: str
    """"conv" or "linear": the type of the unit's first layer."""
    in_channels: int
    kernel: int
    stride: int
    order: int = 0
    """Forward-execution index of the unit's first layer."""
    depthwise_layers: list[str] = field(default_factory=list)
    norm_layers: list[str] = field(default_factory=list)
    """BatchNorm layers whose channels go with the unit."""


def execution_order(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Names of conv/linear layers in the order a forward pass runs them."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=name: order.append(n) if n not in order else None)
        for name, m in model.named_modules()
        if isinstance(m, Layer)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(1, *input_shape, device=model_device(model)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order


def build_graph(model: nn.Module, input_shape: Sequence[int]) -> tp.DependencyGraph:
    was_training = model.training
    model.eval()
    try:
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=torch.randn(1, *input_shape, device=model_device(model))
        )
    finally:
        model.train(was_training)
    return graph


def find_units(
    model: nn.Module, input_shape: Sequence[int], graph: tp.DependencyGraph | None = None
) -> list[PruningUnit]:
    """The model's prunable units in forward order. The classifier's outputs are left alone."""
    graph = graph or build_graph(model, input_shape)
    order = execution_order(model, input_shape)
    rank = {name: i for i, name in enumerate(order)}
    names = {m: n for n, m in model.named_modules()}
    classifier = model.get_submodule(order[-1])
    units = []
    for group in graph.get_all_groups(ignored_layers=[classifier], root_module_types=Layer):
        out_layers, in_layers, depthwise, norms = [], [], [], []
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module in names:
                norms.append(names[module])
            if not isinstance(module, Layer) or module not in names:
                continue
            name = names[module]
            if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
                depthwise.append(name)
            if graph.is_out_channel_pruning_fn(handler):
                out_layers.append(name)
            else:
                in_layers.append(name)
        out_layers = sorted(set(out_layers), key=lambda n: rank.get(n, len(rank)))
        in_layers = sorted(set(in_layers) - set(out_layers), key=lambda n: rank.get(n, len(rank)))
        if not out_layers:
            continue
        first = model.get_submodule(out_layers[0])
        is_conv = isinstance(first, nn.Conv2d)
        units.append(
            PruningUnit(
                name=out_layers[0],
                channels=first.out_channels if is_conv else first.out_features,
                out_layers=out_layers,
                in_layers=in_layers,
                kind="conv" if is_conv else "linear",
                in_channels=first.in_channels if is_conv else first.in_features,
                kernel=first.kernel_size[0] if is_conv else 1,
                stride=first.stride[0] if is_conv else 1,
                order=rank.get(out_layers[0], len(rank)),
                depthwise_layers=sorted(set(depthwise)),
                norm_layers=sorted(set(norms)),
            )
        )
    return sorted(units, key=lambda u: u.order)


def kept_channels(channels: int, keep_ratio: float, round_to: int = 1) -> int:
    """Channels left after keeping `keep_ratio` of them, rounded to a multiple of `round_to` (at least one)."""
    step = max(1, min(round_to, channels))
    kept = int(math.floor(channels * keep_ratio / step + 0.5)) * step
    return int(min(channels, max(step, kept)))


def channel_scores(group, importance: str = "l1") -> torch.Tensor:
    """One score per channel of a torch-pruning group; higher means more important."""
    if importance == "l1":
        scorer = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    elif importance == "l2":
        scorer = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    else:
        raise AmcError(f"unknown channel importance {importance!r}; use l1 or l2")
    return scorer(group)


def prune_channels(
    model: nn.Module,
    keep_ratios: dict[str, float],
    input_shape: Sequence[int],
    *,
    round_to: int = 1,
    importance: str = "l1",
) -> list:
    """Physically remove channels in place; returns torch-pruning's replayable pruning history."""
    graph = build_graph(model, input_shape)
    units = {u.name: u for u in find_units(model, input_shape, graph)}
    for name, ratio in keep_ratios.items():
        if name not in units:
            continue  # e.g. a unit inside a removed block
        unit = units[name]
        keep = kept_channels(unit.channels, ratio, round_to)
        if keep >= unit.channels:
            continue
        leader = model.get_submodule(name)
        pruner = graph.get_pruner_of_module(leader)
        group = graph.get_pruning_group(leader, pruner.prune_out_channels, list(range(unit.channels)))
        scores = channel_scores(group, importance)
        # Stable ranking: ties broken by channel index, so the same policy always removes the same channels.
        ranked = sorted(range(unit.channels), key=lambda c: (float(scores[c]), c))
        pruned = sorted(ranked[: unit.channels - keep])
        graph.get_pruning_group(leader, pruner.prune_out_channels, pruned).prune()
    return [list(entry) for entry in graph.pruning_history()]


def replay_pruning(model: nn.Module, history: list, input_shape: Sequence[int]) -> None:
    """Re-apply a pruning history to a fresh copy of the same architecture (shapes only; weights come later)."""
    graph = build_graph(model, input_shape)
    graph.load_pruning_history([(name, bool(out), list(idxs)) for name, out, idxs in history])
