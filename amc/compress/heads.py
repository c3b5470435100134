"""Attention heads as pruning units: a head leaves q, k, v and the output projection together.

amc follows an attention module with a fused `qkv` linear (rows: q, then k, then v, each `num_heads` x
`head_dim`), an output projection `proj` and an integer `num_heads`: the form of timm's ViT and DeiT, and of
amc's `SelfAttention` (which replaces nn.MultiheadAttention) over a sequence, (batch, tokens, width), and of amc's
`WindowAttention` (which replaces torchvision's Swin attention) over a (batch, height, width, channels) map. Its
unit's channels are its heads: removing one removes 3 x head_dim rows of qkv, head_dim columns of proj and a
windowed attention's column of relative position bias; `num_heads` (and timm's `attn_dim`) drop accordingly.
torch-pruning's graph follows q and k only as far as the reshape, so the unit is made here rather
than from its groups; the embedding width (qkv's inputs, proj's outputs) stays torch-pruning's.

A module whose forward assumes the original width (older timm's `reshape(B, N, C)`) can lose neither heads
nor input channels: trial forwards with a head fewer and with an input channel fewer find that, and the units
concerned are kept whole, with the reason printed.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch_pruning as tp

from amc.errors import AmcError
from amc.forward import forward_with_hooks
from amc.window_attention import WindowAttention


@dataclass(frozen=True)
class Attention:
    """Where an attention module's heads live."""

    name: str
    num_heads: int
    head_dim: int
    input_shape: tuple[int, ...]
    """One image's input: (tokens, width), or (height, width, channels) for windowed attention."""
    sequence_first: bool = False
    """The module takes (tokens, batch, width), as nn.MultiheadAttention does unless batch_first."""
    window: tuple[int, int] | None = None
    """Windowed attention: the window's (height, width); each token attends only to its window."""
    padded_tokens: int | None = None
    """Windowed attention: tokens once the map is padded to whole windows."""

    def example(self, device) -> torch.Tensor:
        x = torch.randn(1, *self.input_shape, device=device)
        return x.transpose(0, 1) if self.sequence_first else x

    def with_input_width(self, width: int) -> Attention:
        return dataclasses.replace(self, input_shape=(*self.input_shape[:-1], width))

    @property
    def qkv(self) -> str:
        return f"{self.name}.qkv"

    @property
    def proj(self) -> str:
        return f"{self.name}.proj"

    @property
    def tokens(self) -> int:
        """Queries: the sequence's tokens, or a windowed map's padded positions."""
        return self.padded_tokens if self.window else self.input_shape[0]

    @property
    def keys(self) -> int:
        """The tokens each query attends to: all of them, or its window's."""
        return self.window[0] * self.window[1] if self.window else self.tokens

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    def qkv_rows(self, head: int) -> list[int]:
        """qkv's output rows that belong to one head: its slice of q, of k and of v."""
        return [part * self.width + head * self.head_dim + d for part in range(3) for d in range(self.head_dim)]

    def proj_columns(self, head: int) -> list[int]:
        return [head * self.head_dim + d for d in range(self.head_dim)]


def is_attention(module: nn.Module) -> bool:
    return (
        isinstance(getattr(module, "qkv", None), nn.Linear)
        and isinstance(getattr(module, "proj", None), nn.Linear)
        and isinstance(getattr(module, "num_heads", None), int)
    )


def find_attention(model: nn.Module, input_shape: Sequence[int]) -> list[Attention]:
    """The model's attention modules amc follows, in module order: those over a sequence, (batch, tokens,
    width), and amc's `WindowAttention`. Others are not found (the cost model refuses a model holding them)."""
    inputs_of: dict[str, tuple[int, ...]] = {}

    def record(name: str, module: nn.Module, inputs, output) -> None:
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() == 3 and not isinstance(module, WindowAttention):
            tokens = x.shape[0] if _sequence_first(module) else x.shape[1]
            inputs_of.setdefault(name, (tokens, x.shape[2]))
        elif isinstance(x, torch.Tensor) and x.dim() == 4 and isinstance(module, WindowAttention):
            inputs_of.setdefault(name, tuple(x.shape[1:]))

    attention_types = tuple({type(m) for m in model.modules() if is_attention(m)})
    if attention_types:
        forward_with_hooks(model, input_shape, record, attention_types)
    found = []
    for name, module in model.named_modules():
        if not is_attention(module) or name not in inputs_of:
            continue
        heads, width = module.num_heads, module.qkv.out_features // 3
        if heads < 1 or module.qkv.out_features != 3 * width or width % heads or module.proj.in_features != width:
            raise AmcError(
                f"attention {name}: {heads} heads do not divide its width (qkv has {module.qkv.out_features} "
                f"outputs, proj {module.proj.in_features} inputs); give it a head count that divides the width"
            )
        if isinstance(module, WindowAttention):
            height, width_, _ = inputs_of[name]
            padded = module.padded_size(height, width_)
            found.append(Attention(name, heads, width // heads, inputs_of[name], window=tuple(module.window_size),
                                   padded_tokens=padded[0] * padded[1]))  # fmt: skip
        else:
            found.append(Attention(name, heads, width // heads, inputs_of[name], _sequence_first(module)))
    return found


def _sequence_first(module: nn.Module) -> bool:
    return getattr(module, "batch_first", True) is False


def attention_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-accumulates of each attention module's two matmuls (q k^T and the weights times v), one image."""
    return {a.name: 2 * a.tokens * a.keys * a.width for a in find_attention(model, input_shape)}


def _runs(module: nn.Module, attention: Attention) -> str | None:
    try:
        with torch.no_grad():
            module(attention.example(module.qkv.weight.device))
    except Exception as exc:  # noqa: BLE001 - any failure means this forward cannot take the change
        return type(exc).__name__
    return None


def why_heads_are_fixed(model: nn.Module, attention: Attention) -> str | None:
    """None if the module still runs with a head fewer; otherwise why not."""
    if attention.num_heads < 2:
        return "it has a single head"
    module = copy.deepcopy(model.get_submodule(attention.name)).eval()
    _remove_heads(module, [attention.num_heads - 1], attention)
    if error := _runs(module, attention):
        return f"its forward fails with a head fewer ({error})"
    return None


def why_width_is_fixed(model: nn.Module, attention: Attention) -> str | None:
    """None if the module still runs with an input channel fewer (the embedding narrowed); otherwise why not.
    Older timm reshapes its heads' output to the input's width, so it needs the two to stay equal."""
    module = copy.deepcopy(model.get_submodule(attention.name)).eval()
    tp.prune_linear_in_channels(module.qkv, [0])
    tp.prune_linear_out_channels(module.proj, [0])
    if error := _runs(module, attention.with_input_width(attention.input_shape[-1] - 1)):
        return f"its forward fails with a narrower input ({error}): it ties its heads' width to its input's"
    return None


def prunable_attention(model: nn.Module, found: list[Attention]) -> list[Attention]:
    """Those of the model's attention modules (`find_attention`) whose heads can go; the others are kept whole,
    and a warning says why."""
    prunable = []
    for attention in found:
        reason = why_heads_are_fixed(model, attention)
        if reason is None:
            prunable.append(attention)
        elif attention.num_heads > 1:
            warnings.warn(f"attention {attention.name}: heads kept whole, {reason}", stacklevel=1)
    return prunable


def head_scores(model: nn.Module, attention: Attention) -> list[float]:
    """L1 magnitude of each head's qkv rows and proj columns; higher means more important."""
    module = model.get_submodule(attention.name)
    qkv, proj = module.qkv.weight.detach().abs(), module.proj.weight.detach().abs()
    return [
        float(qkv[attention.qkv_rows(h)].sum() + proj[:, attention.proj_columns(h)].sum())
        for h in range(attention.num_heads)
    ]


def _remove_heads(module: nn.Module, heads: list[int], attention: Attention) -> None:
    rows = sorted(r for h in heads for r in attention.qkv_rows(h))
    columns = sorted(c for h in heads for c in attention.proj_columns(h))
    tp.prune_linear_out_channels(module.qkv, rows)
    tp.prune_linear_in_channels(module.proj, columns)
    table = getattr(module, "relative_position_bias_table", None)
    if isinstance(table, nn.Parameter):  # (relative positions, heads)
        kept = [h for h in range(attention.num_heads) if h not in set(heads)]
        module.relative_position_bias_table = nn.Parameter(table.detach()[:, kept].clone(), table.requires_grad)
    module.num_heads = attention.num_heads - len(heads)
    if getattr(module, "attn_dim", None) == attention.width:  # timm >= 1.0.20 reshapes to it
        module.attn_dim = module.num_heads * attention.head_dim


def prune_heads(model: nn.Module, kept_heads: dict[str, int], attention: list[Attention]) -> dict[str, list[int]]:
    """Remove the least important heads in place so that each named module keeps `kept_heads[name]`; returns
    the removed heads per module (the replayable record)."""
    removed = {}
    for a in attention:
        keep = kept_heads.get(a.name, a.num_heads)
        if keep >= a.num_heads:
            continue
        scores = head_scores(model, a)
        # Stable ranking: ties broken by head index, so the same policy always removes the same heads.
        ranked = sorted(range(a.num_heads), key=lambda h: (scores[h], h))
        removed[a.name] = sorted(ranked[: a.num_heads - keep])
        _remove_heads(model.get_submodule(a.name), removed[a.name], a)
    return removed


def replay_heads(model: nn.Module, removed: dict[str, list[int]], input_shape: Sequence[int]) -> None:
    """Remove the recorded heads from a fresh copy of the same architecture (shapes only)."""
    if not removed:
        return
    by_name = {a.name: a for a in find_attention(model, input_shape)}
    for name, heads in removed.items():
        fits = name in by_name and heads and 0 <= min(heads) <= max(heads) < by_name[name].num_heads
        fits = fits and len(set(heads)) == len(heads)
        if not fits:
            raise AmcError(
                f"the recorded heads of {name} do not fit this model; re-create the student with `amc apply`"
            )
        _remove_heads(model.get_submodule(name), sorted(heads), by_name[name])
