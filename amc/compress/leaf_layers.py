"""Modules torch-pruning takes as one layer (a leaf of its graph) rather than tracing into them, with their pruners.

torch-pruning's tracer reads the token-axis indexing of Swin as channel indexing: the window partition of its
attention (views, permutes, rolls), where its groups then grow without end, and the strided slices of its patch
merging, whose concat it then maps wrongly. These modules are therefore leaves, given to torch-pruning as
customized pruners and, while it traces, run as one autograd node (`opaque_leaves`) so that it sees nothing inside:
- amc's `WindowAttention`: its input channels are its `qkv` layer's inputs, its output channels its `proj` layer's
  outputs (the embedding width); its heads are amc's own units (amc/compress/heads.py);
- torchvision's `PatchMerging`: its input channels are those of each of the four 2x2 neighbours it concatenates
  (four columns of `reduction` and four entries of `norm` per channel), its output channels `reduction`'s outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp
from torchvision.models.swin_transformer import PatchMerging

from amc.window_attention import WindowAttention


@dataclass(frozen=True)
class LeafPart:
    """A layer inside a leaf whose channels follow the leaf's: its channel c + k * n for each copy k (n: the
    leaf's channels)."""

    role: str
    """"out" (output channels), "in" (input channels) or "tensor" (a norm's channels)."""
    layer: str
    """Its name inside the leaf."""
    copies: int = 1


class WindowAttentionPruner(tp.pruner.function.BasePruningFunc):
    """The embedding width through a `WindowAttention`: its qkv layer's inputs and its proj layer's outputs."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tp.prune_linear_out_channels(layer.proj, list(idxs))
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tp.prune_linear_in_channels(layer.qkv, list(idxs))
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj.out_features

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.qkv.in_features


class PatchMergingPruner(tp.pruner.function.BasePruningFunc):
    """A stage's width into a `PatchMerging` (each channel four times: its 2x2 neighbours), and the next stage's
    width out of it."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        tp.prune_linear_out_channels(layer.reduction, list(idxs))
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        channels = self.get_in_channels(layer)
        repeated = sorted(i + k * channels for k in range(4) for i in idxs)
        tp.prune_linear_in_channels(layer.reduction, repeated)
        tp.prune_layernorm_out_channels(layer.norm, repeated)
        layer.dim = channels - len(idxs)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.reduction.out_features

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.reduction.in_features // 4


LEAF_PRUNERS = {WindowAttention: WindowAttentionPruner(), PatchMerging: PatchMergingPruner()}
"""What `tp.DependencyGraph.build_dependency` is given as `customized_pruners`."""

LEAF_PARTS = {
    WindowAttention: {True: [LeafPart("out", "proj")], False: [LeafPart("in", "qkv")]},
    PatchMerging: {True: [LeafPart("out", "reduction")],
                   False: [LeafPart("in", "reduction", 4), LeafPart("tensor", "norm", 4)]},
}  # fmt: skip


def leaf_parts(module: nn.Module, out_channels: bool) -> list[LeafPart] | None:
    """The layers inside a leaf module that its output (or input) channels cut; None if `module` is no leaf."""
    parts = LEAF_PARTS.get(type(module))
    return None if parts is None else parts[out_channels]


def leaf_channels(module: nn.Module, out_channels: bool) -> int:
    pruner = LEAF_PRUNERS[type(module)]
    return pruner.get_out_channels(module) if out_channels else pruner.get_in_channels(module)


class _OneNode(torch.autograd.Function):
    """A module's forward as a single autograd node on its input: what torch-pruning's tracer (which walks
    `grad_fn`s and never runs backward) then sees of it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, forward) -> torch.Tensor:
        with torch.no_grad():
            return forward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        raise RuntimeError("a leaf traced for torch-pruning has no backward")


@contextlib.contextmanager
def opaque_leaves(model: nn.Module):
    """While torch-pruning traces `model`: each leaf module's forward is one autograd node on its input."""
    leaves = [m for m in model.modules() if type(m) in LEAF_PRUNERS]
    for module in leaves:
        module.forward = lambda x, forward=module.forward: _OneNode.apply(x, forward)
    try:
        yield
    finally:
        for module in leaves:
            del module.forward
