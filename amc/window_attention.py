"""Windowed self-attention (Swin) in the form amc prunes by heads, and the swap of torchvision's for it.

torchvision's `ShiftedWindowAttention` computes each head's width as its input's width over `num_heads`, so it
cannot lose a head, nor let its input narrow alone. amc's `WindowAttention` computes the same thing with the
head width taken from its `qkv` layer, and keeps the same parameters and buffers (state dicts load either way).
Models amc builds (`amc.models.create_model`) have each `ShiftedWindowAttention` (not the V2 form) replaced by it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.swin_transformer import ShiftedWindowAttention


class WindowAttention(nn.Module):
    """Multi-head self-attention within (shifted) windows of a (batch, height, width, channels) map, with a
    relative position bias per head: torchvision's `ShiftedWindowAttention`, whose inner width is
    `num_heads * head_dim` from its `qkv` layer rather than its input's."""

    def __init__(self, source: ShiftedWindowAttention):
        super().__init__()
        self.window_size, self.shift_size = list(source.window_size), list(source.shift_size)
        self.num_heads = source.num_heads
        self.attention_dropout, self.dropout = source.attention_dropout, source.dropout
        self.qkv, self.proj = source.qkv, source.proj
        self.relative_position_bias_table = source.relative_position_bias_table
        self.register_buffer("relative_position_index", source.relative_position_index)

    @property
    def head_dim(self) -> int:
        return self.qkv.out_features // (3 * self.num_heads)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The map's size once padded to whole windows (non-negative operands only: exported, `//` truncates)."""
        wh, ww = self.window_size
        return height + (wh - height % wh) % wh, width + (ww - width % ww) % ww

    def relative_position_bias(self) -> torch.Tensor:
        area = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index].view(area, area, -1)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        (wh, ww), (ph, pw) = self.window_size, self.padded_size(h, w)
        x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h))
        shift = [s if size > window else 0 for s, size, window in zip(self.shift_size, (ph, pw), (wh, ww), strict=True)]
        if sum(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = (ph // wh) * (pw // ww)
        x = x.view(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * windows, wh * ww, c)
        heads, dim = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(x.size(0), x.size(1), 3, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * dim**-0.5) @ k.transpose(-2, -1) + self.relative_position_bias()
        if sum(shift):
            scores = scores.view(b, windows, heads, wh * ww, wh * ww) + self._shift_mask(ph, pw, shift, x)
            scores = scores.view(-1, heads, wh * ww, wh * ww)
        weights = F.dropout(scores.softmax(-1), self.attention_dropout, self.training)
        x = (weights @ v).transpose(1, 2).reshape(x.size(0), x.size(1), heads * dim)
        x = F.dropout(self.proj(x), self.dropout, self.training)
        out = x.size(-1)
        x = x.view(b, ph // wh, pw // ww, wh, ww, out).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, out)
        if sum(shift):
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :h, :w, :].contiguous()

    def _shift_mask(self, ph: int, pw: int, shift: list[int], like: torch.Tensor) -> torch.Tensor:
        """-100 between tokens that the cyclic shift brought into one window from different regions."""
        (wh, ww), region = self.window_size, like.new_zeros((ph, pw))
        count = 0
        for rows in (slice(0, -wh), slice(-wh, -shift[0]), slice(-shift[0], None)):
            for cols in (slice(0, -ww), slice(-ww, -shift[1]), slice(-shift[1], None)):
                region[rows, cols] = count
                count += 1
        region = region.view(ph // wh, wh, pw // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
        mask = region.unsqueeze(1) - region.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0).unsqueeze(1).unsqueeze(0)


def replace_window_attention(model: nn.Module) -> list[str]:
    """Swap every torchvision `ShiftedWindowAttention` (exactly that type: V2's cosine attention is not
    followed) in `model` for an equivalent `WindowAttention`, in place; returns the names swapped."""
    swapped = []
    for name, module in list(model.named_modules()):
        if type(module) is ShiftedWindowAttention:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, WindowAttention(module))
            swapped.append(name)
    return swapped
