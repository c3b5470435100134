"""A small Vision Transformer for 32x32 images (the registry's `vit_tiny`), written the way timm writes ViTs,
with amc's `SelfAttention` (a fused `qkv` linear, `num_heads`, `proj`, whose output keeps whatever width its
heads have), so that amc can remove heads (amc/compress/heads.py)."""

from __future__ import annotations

import torch
import torch.nn as nn

from amc.attention import SelfAttention
from amc.errors import AmcError


class Block(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding (a strided conv), a class token, a learned position embedding, `depth` blocks, and a
    linear head on the class token."""

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 2.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise AmcError(f"vit: {num_heads} heads do not divide the width {dim}; choose a head count that divides it")
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, int(dim * mlp_ratio)) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        # The head reads a (batch, 1, width) slice: torch-pruning cannot trace `[:, 0]` once every block is gone.
        return self.head(self.norm(self.blocks(x))[:, :1]).flatten(1)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
