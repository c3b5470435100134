"""Channel pruning through torch-pruning's dependency graph.

A *pruning unit* is one of torch-pruning's dependency groups: every layer whose input or output channels must
go together (residual adds, depthwise convs, SE gates, concatenations, splits). It has one keep ratio. A unit
is named after its first layer in forward order whose outputs it removes; its channels are those of its
*root*, the layer torch-pruning indexes the group by.

A unit whose root channels reach layers in different ways (the branches of a concatenation, the parts of a
split) is cut into *pieces*, and each piece keeps the same share of its channels. So how many channels every
layer loses depends on the keep ratio alone, and the cost model predicts the student exactly. Within a piece,
channels are ranked by group L1 magnitude. Groups that touch a grouped (not depthwise) convolution are left
whole: torch-pruning cannot cut those evenly per group.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp

from amc.device import model_device
from amc.errors import AmcError
from amc.forward import forward_with_hooks

Layer = (nn.Conv2d, nn.Linear)


@dataclass
class PruningUnit:
    """A group of coupled layers whose channels are kept or removed together."""

    name: str
    root: str
    """The layer whose output channels index the unit (torch-pruning's group root)."""
    channels: int
    """The root's output channels."""
    pieces: list[list[int]]
    """Root channels, split by how they reach the other layers; each piece keeps its share."""
    out_index: dict[str, dict[int, int]]
    """For each layer whose outputs this unit removes: its channel index -> the root channel behind it."""
    in_index: dict[str, dict[int, int]]
    """The same for layers whose inputs this unit removes (the consumers)."""
    norm_index: dict[str, dict[int, int]]
    """The same for normalisation layers whose channels go with the unit (BatchNorm, a LayerNorm over channels)."""
    kind: str
    """"conv" or "linear": the type of the unit's first layer."""
    in_channels: int
    kernel: int
    stride: int
    order: int = 0
    """Forward-execution index of the unit's first layer."""
    depthwise_layers: list[str] = field(default_factory=list)

    @property
    def out_layers(self) -> list[str]:
        return list(self.out_index)

    @property
    def in_layers(self) -> list[str]:
        return list(self.in_index)

    @property
    def norm_layers(self) -> list[str]:
        return list(self.norm_index)

    def kept_per_piece(self, keep_ratio: float, round_to: int = 1) -> list[int]:
        return [kept_channels(len(piece), keep_ratio, round_to) for piece in self.pieces]

    def channel_counts(self, index: dict[int, int]) -> list[int]:
        """How many of a layer's channels (given by `index`) each piece feeds."""
        piece_of = {c: i for i, piece in enumerate(self.pieces) for c in piece}
        counts = [0] * len(self.pieces)
        for root_channel in index.values():
            counts[piece_of[root_channel]] += 1
        return counts


def channel_norm_width(module: nn.Module) -> int | None:
    """The channels a normalisation layer holds one value per: BatchNorm's features, a LayerNorm over one
    dimension (a transformer's or ConvNeXt's channels); None for anything else."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return module.normalized_shape[0]
    return None


def execution_order(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Names of conv/linear layers in the order a forward pass runs them."""
    order: list[str] = []
    forward_with_hooks(model, input_shape, lambda name, *_: order.append(name) if name not in order else None, Layer)
    return order


def build_graph(model: nn.Module, input_shape: Sequence[int]) -> tp.DependencyGraph:
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # torch-pruning traces through autograd, even inside a caller's no_grad
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=torch.randn(1, *input_shape, device=model_device(model))
            )
    finally:
        model.train(was_training)
    return graph


def is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels == module.out_channels


def is_grouped(module: nn.Module) -> bool:
    """A grouped convolution other than a depthwise one."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and not is_depthwise(module)


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
        unit = _unit_of(group, graph, model, names, rank)
        if unit is not None:
            units.append(unit)
    return sorted(units, key=lambda u: u.order)


def _unit_of(group, graph, model, names, rank) -> PruningUnit | None:
    index: dict[str, dict[str, dict[int, int]]] = {"out": defaultdict(dict), "in": defaultdict(dict),
                                                   "norm": defaultdict(dict)}  # fmt: skip
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        if module not in names:
            continue
        if is_grouped(module):
            return None
        if channel_norm_width(module) is not None:
            role = "norm"
        elif isinstance(module, Layer):
            role = "out" if graph.is_out_channel_pruning_fn(handler) else "in"
        else:
            continue
        index[role][names[module]].update(
            zip((int(i) for i in item.idxs), (int(r) for r in item.root_idxs), strict=True)
        )
    if not index["out"]:
        return None
    root = names[group[0].dep.target.module]
    channels = graph.get_pruner_of_module(model.get_submodule(root)).get_out_channels(model.get_submodule(root))

    def by_rank(mapping: dict) -> dict:
        return {n: dict(sorted(mapping[n].items())) for n in sorted(mapping, key=lambda n: rank.get(n, len(rank)))}

    out_index, in_index, norm_index = by_rank(index["out"]), by_rank(index["in"]), by_rank(index["norm"])
    name = next(iter(out_index))
    first = model.get_submodule(name)
    is_conv = isinstance(first, nn.Conv2d)
    return PruningUnit(
        name=name,
        root=root,
        channels=channels,
        pieces=_pieces(channels, [*out_index.values(), *in_index.values(), *norm_index.values()]),
        out_index=out_index,
        in_index=in_index,
        norm_index=norm_index,
        kind="conv" if is_conv else "linear",
        in_channels=first.in_channels if is_conv else first.in_features,
        kernel=first.kernel_size[0] if is_conv else 1,
        stride=first.stride[0] if is_conv else 1,
        order=rank.get(name, len(rank)),
        depthwise_layers=[n for n in out_index if is_depthwise(model.get_submodule(n))],
    )


def _pieces(channels: int, mappings: list[dict[int, int]]) -> list[list[int]]:
    """Root channels grouped by how many channels of each layer they feed (their signature)."""
    counts = []
    for mapping in mappings:
        count = [0] * channels
        for root_channel in mapping.values():
            count[root_channel] += 1
        counts.append(count)
    pieces: dict[tuple, list[int]] = {}
    for c in range(channels):
        pieces.setdefault(tuple(count[c] for count in counts), []).append(c)
    return list(pieces.values())


def kept_channels(channels: int, keep_ratio: float, round_to: int = 1) -> int:
    """Channels left after keeping `keep_ratio` of them, rounded to a multiple of `round_to` (at least one)."""
    step = max(1, min(round_to, channels))
    kept = int(math.floor(channels * keep_ratio / step + 0.5)) * step
    return int(min(channels, max(step, kept)))


def channel_scores(group, importance: str = "l1") -> torch.Tensor:
    """One score per root channel of a torch-pruning group; higher means more important."""
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
        kept = unit.kept_per_piece(ratio, round_to)
        if sum(kept) >= unit.channels:
            continue
        root = model.get_submodule(unit.root)
        prune_out = graph.get_pruner_of_module(root).prune_out_channels
        scores = channel_scores(graph.get_pruning_group(root, prune_out, list(range(unit.channels))), importance)
        pruned = []
        for piece, keep in zip(unit.pieces, kept, strict=True):
            # Stable ranking: ties broken by channel index, so the same policy always removes the same channels.
            ranked = sorted(piece, key=lambda c: (float(scores[c]), c))
            pruned += ranked[: len(piece) - keep]
        graph.get_pruning_group(root, prune_out, sorted(pruned)).prune()
    return [list(entry) for entry in graph.pruning_history()]


def replay_pruning(model: nn.Module, history: list, input_shape: Sequence[int]) -> None:
    """Re-apply a pruning history to a fresh copy of the same architecture (shapes only; weights come later)."""
    graph = build_graph(model, input_shape)
    graph.load_pruning_history([(name, bool(out), list(idxs)) for name, out, idxs in history])
