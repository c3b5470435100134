"""Self-attention in the form amc prunes by heads, and the swap of `nn.MultiheadAttention` for it.

`nn.MultiheadAttention` keeps q, k and v in one parameter (`in_proj_weight`) and its inner width equal to
the embedding width, so neither torch-pruning's groups nor the cost model can take a head out of it. Models
amc builds (`amc.models.create_model`) have each standard self-attention `nn.MultiheadAttention` replaced by
`SelfAttention`: the same computation with a fused `qkv` linear, `proj` and `num_heads`
(amc/compress/heads.py), called the same way.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from amc.errors import AmcError


class SelfAttention(nn.Module):
    """`nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first)` for self-attention
    (query, key and value the same tensor), with q, k and v in one `qkv` linear. Its inner width is
    `num_heads * head_dim`, which need not stay the embedding width."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False):  # fmt: skip
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise AmcError(f"attention: {num_heads} heads do not divide the width {embed_dim}; choose a head count "
                           "that divides it")  # fmt: skip
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> SelfAttention:
        attention = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None, mha.batch_first)
        with torch.no_grad():
            attention.qkv.weight.copy_(mha.in_proj_weight)
            attention.proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                attention.qkv.bias.copy_(mha.in_proj_bias)
                attention.proj.bias.copy_(mha.out_proj.bias)
        return attention.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype).train(mha.training)

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):  # fmt: skip
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise AmcError("attention: amc's SelfAttention takes query, key and value as one tensor (self-attention)")
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        mask = _additive_mask(attn_mask, key_padding_mask, is_causal, n, scores)
        weights = (scores if mask is None else scores + mask).softmax(-1)
        out = F.dropout(weights, self.dropout, self.training) @ v
        out = self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        out = out if self.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights


def _additive_mask(attn_mask, key_padding_mask, is_causal, tokens, scores) -> torch.Tensor | None:
    """nn.MultiheadAttention's masks (boolean: True masks out; float: added) as one additive mask."""

    def additive(mask):
        return torch.zeros_like(mask, dtype=scores.dtype).masked_fill(mask, float("-inf")) if mask.dtype == torch.bool \
            else mask.to(scores.dtype)  # fmt: skip

    total = None
    if is_causal and attn_mask is None:
        attn_mask = torch.ones(tokens, tokens, dtype=torch.bool, device=scores.device).triu(1)
    if attn_mask is not None:
        mask = additive(attn_mask)  # (L, S) or (batch * heads, L, S)
        total = mask if mask.dim() == 2 else mask.view(scores.shape)
    if key_padding_mask is not None:
        padding = additive(key_padding_mask)[:, None, None, :]  # (batch, S) -> broadcast over heads and queries
        total = padding if total is None else total + padding
    return total


def is_standard_self_attention(module: nn.Module) -> bool:
    """An `nn.MultiheadAttention` that `SelfAttention` reproduces: one embedding width for q, k and v, no extra
    key/value bias, no zero attention."""
    return (
        isinstance(module, nn.MultiheadAttention)
        and module._qkv_same_embed_dim
        and module.bias_k is None
        and not module.add_zero_attn
    )


def replace_multihead_attention(model: nn.Module) -> list[str]:
    """Swap every standard `nn.MultiheadAttention` in `model` for an equivalent `SelfAttention`, in place;
    returns the names swapped."""
    swapped = []
    for name, module in list(model.named_modules()):
        if is_standard_self_attention(module):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr,
                    SelfAttention.from_multihead(module))  # fmt: skip
            swapped.append(name)
    return swapped
