"""Channel pruning through torch-pruning's dependency graph.

A *pruning unit* is one of torch-pruning's dependency groups: every layer whose input or output channels must
go together (residual adds, depthwise convs, SE gates, concatenations, splits). It has one keep ratio. A unit
is named after its first layer in forward order whose outputs it removes; its channels are those of its
*root*, the layer torch-pruning indexes the group by.

A unit whose root channels reach layers in different ways (the branches of a concatenation, the parts of a
split) is cut into *pieces*, and each piece keeps the same share of its channels. So how many channels every
layer loses depends on the keep ratio alone, and the cost model predicts the student exactly. Within a piece,
channels are ranked by group L1 magnitude. Groups that touch a grouped (not depthwise) convolution are left
whole: torch-pruning cannot cut those evenly per group. An attention module's heads are a unit of their own
(amc/compress/heads.py); its fused qkv layer is never a torch-pruning root.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.dependency import index_mapping

from amc.compress.heads import Attention, find_attention, prunable_attention, prune_heads, why_width_is_fixed
from amc.compress.leaf_layers import LEAF_PRUNERS, leaf_channels, leaf_parts, opaque_leaves
from amc.device import model_device
from amc.errors import AmcError, library_text
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
    tensor_index: dict[str, dict[int, int]]
    """The same for other tensors whose channels go with the unit: normalisation layers (BatchNorm, a LayerNorm
    over channels) and free parameters (a position embedding, a class token)."""
    kind: str
    """"conv" or "linear": the type of the unit's first layer; "heads" for an attention module's heads (its
    channels are heads, and `round_to` does not apply: a head is already head_dim channels)."""
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
    def tensors(self) -> list[str]:
        return list(self.tensor_index)

    def kept_per_piece(self, keep_ratio: float, round_to: int = 1) -> list[int]:
        step = 1 if self.kind == "heads" else round_to
        return [kept_channels(len(piece), keep_ratio, step) for piece in self.pieces]

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
        with torch.enable_grad(), warnings.catch_warnings(), opaque_leaves(model):  # it traces through autograd
            # Free parameters (position embeddings) are followed on purpose: amc.cost.predicted counts them.
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=torch.randn(1, *input_shape, device=model_device(model)),
                customized_pruners=LEAF_PRUNERS,
            )
    except (ArithmeticError, IndexError, KeyError, ValueError) as exc:  # its tracer's own failures
        raise AmcError(
            f"torch-pruning cannot follow this model's graph ({library_text(exc)}); please report it with the model"
        ) from exc
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
    """The model's prunable units in forward order: attention heads and torch-pruning's channel groups. The
    classifier's outputs are left alone; trial forwards keep whole the heads, and the units feeding attention, that
    a forward ties to a fixed width (amc/compress/heads.py), with a warning."""
    attention = find_attention(model, input_shape)
    fixed_width = {a.qkv for a in attention if why_width_is_fixed(model, a)}
    rank = {name: i for i, name in enumerate(execution_order(model, input_shape))}
    units = [_head_unit(a, model, rank) for a in prunable_attention(model, attention)]
    for unit in channel_units(model, input_shape, graph, attention):
        if fixed := fixed_width & set(unit.in_index):
            # Such a forward ties its heads' width to its input's: the embedding cannot narrow alone either.
            warnings.warn(f"unit {unit.name}: kept whole, {min(fixed).removesuffix('.qkv')} ties its heads' width "
                          "to its input's", stacklevel=1)  # fmt: skip
            continue
        units.append(unit)
    return sorted(units, key=lambda u: u.order)


def channel_units(
    model: nn.Module,
    input_shape: Sequence[int],
    graph: tp.DependencyGraph | None = None,
    attention: list[Attention] | None = None,
) -> list[PruningUnit]:
    """torch-pruning's channel groups as units (no trial forwards: what `prune_channels` needs on every student).
    An attention module's fused qkv layer is never a root."""
    graph = graph or build_graph(model, input_shape)
    order = execution_order(model, input_shape)
    rank = {name: i for i, name in enumerate(order)}
    names = {id(m): n for n, m in model.named_modules()} | {id(p): n for n, p in model.named_parameters()}
    attention = find_attention(model, input_shape) if attention is None else attention
    ignored = [model.get_submodule(order[-1]), *(model.get_submodule(a.qkv) for a in attention)]
    units = []
    with index_mappings_unchanged(graph):
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=Layer):
            unit = _unit_of(group, graph, model, names, rank)
            if unit is not None:
                units.append(unit)
    return units


@contextlib.contextmanager
def index_mappings_unchanged(graph: tp.DependencyGraph):
    """Groups taken while `graph` does not change, from index mappings brought up to date once. torch-pruning
    recomputes every concat's and split's mapping for each group it makes: on a DenseNet most of a student's build
    (experiments/results/candidate_cost.md). Nothing may prune inside the block."""
    index_mapping.update_index_mapping(graph)
    update = index_mapping.update_index_mapping
    index_mapping.update_index_mapping = lambda graph: None
    try:
        yield
    finally:
        index_mapping.update_index_mapping = update


def followable_units(model: nn.Module, input_shape: Sequence[int], embedding: bool = True) -> list[PruningUnit]:
    """`find_units`, less the units this model's forward cannot run without: every unit is cut to half once, on
    a copy, and units under which the forward fails (e.g. torchvision's ViT reshapes its patches to a stored
    `hidden_dim`) are found by bisection and kept whole, with a warning naming each. `embedding=False` leaves
    out a transformer's embedding width too (`is_embedding`)."""
    units = find_units(model, input_shape)
    if not embedding:
        qkv = {a.qkv for a in find_attention(model, input_shape)}
        units = [u for u in units if not is_embedding(u, qkv)]
    failing = _failing_units(model, input_shape, units)
    for unit, error in failing.items():
        warnings.warn(f"unit {unit}: kept whole, the model's forward fails once it is cut ({error})", stacklevel=1)
    kept = [u for u in units if u.name not in failing]
    if failing and (error := _cut_fails(model, input_shape, kept)):
        raise AmcError(f"this model's forward fails once its units are cut ({error}); please report it with the model")
    return kept


def is_embedding(unit: PruningUnit, qkv_layers: set[str]) -> bool:
    """A transformer's embedding width (its residual stream): channels that feed attention's qkv layers. One
    unit, since the residual adds couple every block of a stage."""
    return unit.kind != "heads" and not qkv_layers.isdisjoint(unit.in_index)


def _failing_units(model: nn.Module, input_shape: Sequence[int], units: list[PruningUnit]) -> dict[str, str]:
    error = _cut_fails(model, input_shape, units)
    if error is None:
        return {}
    if len(units) == 1:
        return {units[0].name: error}
    half = len(units) // 2
    return _failing_units(model, input_shape, units[:half]) | _failing_units(model, input_shape, units[half:])


def _cut_fails(model: nn.Module, input_shape: Sequence[int], units: list[PruningUnit]) -> str | None:
    """None if a copy of the model still runs with each of these units cut to half; else the error's type."""
    trial = copy.deepcopy(model).eval()
    try:
        heads = {u.name for u in units if u.kind == "heads"}
        attention = [a for a in find_attention(trial, input_shape) if a.qkv in heads]
        prune_heads(trial, {a.name: max(1, a.num_heads // 2) for a in attention}, attention)
        prune_channels(trial, {u.name: 0.5 for u in units if u.kind != "heads"}, input_shape)
        with torch.no_grad():
            trial(torch.randn(1, *input_shape, device=model_device(trial)))
    except Exception as exc:  # noqa: BLE001 - any failure means the forward cannot take the cut
        return f"{type(exc).__name__}: {library_text(exc, limit=80)}"
    return None


def _head_unit(attention: Attention, model: nn.Module, rank: dict[str, int]) -> PruningUnit:
    heads = range(attention.num_heads)
    table = f"{attention.name}.relative_position_bias_table"  # windowed attention: a column per head
    has_table = isinstance(getattr(model.get_submodule(attention.name), "relative_position_bias_table", None),
                           nn.Parameter)  # fmt: skip
    return PruningUnit(
        name=attention.qkv,
        root=attention.qkv,
        channels=attention.num_heads,
        pieces=[list(heads)],
        out_index={attention.qkv: {r: h for h in heads for r in attention.qkv_rows(h)}},
        in_index={attention.proj: {c: h for h in heads for c in attention.proj_columns(h)}},
        tensor_index={table: {h: h for h in heads}} if has_table else {},
        kind="heads",
        in_channels=model.get_submodule(attention.qkv).in_features,
        kernel=1,
        stride=1,
        order=rank.get(attention.qkv, len(rank)),
    )


def _unit_of(group, graph, model, names, rank) -> PruningUnit | None:
    index: dict[str, dict[str, dict[int, int]]] = {"out": defaultdict(dict), "in": defaultdict(dict),
                                                   "tensor": defaultdict(dict)}  # fmt: skip
    for item in group:
        module, handler = item.dep.target.module, item.dep.handler
        if id(module) not in names:
            continue
        if is_grouped(module):
            return None
        layer, out = names[id(module)], graph.is_out_channel_pruning_fn(handler)
        pairs = [(int(i), int(r)) for i, r in zip(item.idxs, item.root_idxs, strict=True)]
        if (parts := leaf_parts(module, out)) is not None:
            channels = leaf_channels(module, out)
            for part in parts:
                index[part.role][f"{layer}.{part.layer}"].update(
                    (i + k * channels, r) for i, r in pairs for k in range(part.copies)
                )
            continue
        if isinstance(module, nn.Parameter) or channel_norm_width(module) is not None:
            role = "tensor"
        elif isinstance(module, Layer):
            role = "out" if out else "in"
        else:
            continue
        index[role][layer].update(pairs)
    if not index["out"]:
        return None
    root = names[id(group[0].dep.target.module)]
    channels = graph.get_pruner_of_module(model.get_submodule(root)).get_out_channels(model.get_submodule(root))

    def by_rank(mapping: dict) -> dict:
        return {n: dict(sorted(mapping[n].items())) for n in sorted(mapping, key=lambda n: rank.get(n, len(rank)))}

    out_index, in_index, tensor_index = by_rank(index["out"]), by_rank(index["in"]), by_rank(index["tensor"])
    name = next(iter(out_index))
    first = model.get_submodule(name)
    is_conv = isinstance(first, nn.Conv2d)
    return PruningUnit(
        name=name,
        root=root,
        channels=channels,
        pieces=_pieces(channels, [*out_index.values(), *in_index.values(), *tensor_index.values()]),
        out_index=out_index,
        in_index=in_index,
        tensor_index=tensor_index,
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
    units = {u.name: u for u in channel_units(model, input_shape, graph)}
    for name, ratio in keep_ratios.items():
        if name not in units:
            continue  # a unit inside a removed block, or heads (amc.compress.heads.prune_heads)
        unit = units[name]
        kept = unit.kept_per_piece(ratio, round_to)
        if sum(kept) >= unit.channels:
            continue
        root = model.get_submodule(unit.root)
        prune_out = graph.get_pruner_of_module(root).prune_out_channels
        with index_mappings_unchanged(graph):  # both groups from one mapping: the graph changes at prune()
            scores = channel_scores(graph.get_pruning_group(root, prune_out, list(range(unit.channels))), importance)
            pruned = []
            for piece, keep in zip(unit.pieces, kept, strict=True):
                # Stable ranking: ties broken by channel index, so the same policy always removes the same channels.
                ranked = sorted(piece, key=lambda c: (float(scores[c]), c))
                pruned += ranked[: len(piece) - keep]
            group = graph.get_pruning_group(root, prune_out, sorted(pruned))
        group.prune()
    return [list(entry) for entry in graph.pruning_history()]


def replay_pruning(model: nn.Module, history: list, input_shape: Sequence[int]) -> None:
    """Re-apply a pruning history to a fresh copy of the same architecture (shapes only; weights come later)."""
    graph = build_graph(model, input_shape)
    graph.load_pruning_history([(name, bool(out), list(idxs)) for name, out, idxs in history])
