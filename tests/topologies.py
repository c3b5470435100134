"""Small models with the topologies users bring: concatenation, dense concatenation, parallel branches,
split, grouped and depthwise convs, squeeze-and-excitation gates, residual adds, attention. Inputs are 3x16x16."""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def pooled(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3))


class TwoBranchConcat(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.a, self.b = conv_bn(3, 16), conv_bn(16, 8), conv_bn(16, 12, 1)
        self.post, self.head = conv_bn(20, 16), nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        return self.head(pooled(self.post(torch.cat([self.a(x), self.b(x)], 1))))


class DenseConcat(nn.Module):
    """DenseNet-style: every layer's output is appended to the running feature map; BN after the concat."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.layers = nn.ModuleList([conv_bn(8 + 4 * i, 4) for i in range(3)])
        self.norm, self.transition, self.head = nn.BatchNorm2d(20), nn.Conv2d(20, 8, 1), nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return self.head(pooled(self.transition(torch.relu(self.norm(x)))))


class InceptionBranches(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.b1 = conv_bn(16, 8, 1)
        self.b3 = nn.Sequential(conv_bn(16, 6, 1), conv_bn(6, 8))
        self.b5 = nn.Sequential(conv_bn(16, 4, 1), conv_bn(4, 4, 5))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(16, 4, 1))
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        return self.head(pooled(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)))


class SplitBranches(nn.Module):
    """One conv's channels split in two, each half through its own conv, then concatenated again. (`chunk`,
    not `split` with literal sizes, which no pruner can change.)"""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.left, self.right = conv_bn(3, 16), conv_bn(8, 8), conv_bn(8, 8, 1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        left, right = torch.chunk(self.stem(x), 2, dim=1)
        return self.head(pooled(torch.cat([self.left(left), self.right(right)], 1)))


class GroupedConv(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.grouped, self.post = conv_bn(3, 16), conv_bn(16, 32, groups=4), conv_bn(32, 16)
        self.extra, self.head = conv_bn(16, 16), nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(pooled(self.extra(self.post(self.grouped(self.stem(x))))))


class SqueezeExcite(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.body = conv_bn(3, 16), conv_bn(16, 24)
        self.squeeze, self.excite = nn.Conv2d(24, 6, 1), nn.Conv2d(6, 24, 1)
        self.post, self.head = conv_bn(24, 16), nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.head(pooled(self.post(x * gate)))


class DepthwiseSeparable(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.depthwise, self.pointwise = conv_bn(3, 16), conv_bn(16, 16, groups=16), conv_bn(16, 24, 1)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        return self.head(pooled(self.pointwise(self.depthwise(self.stem(x)))))


class MixedBlock(nn.Module):
    """The model of the budget report: a depthwise-separable branch and a plain branch, concatenated, gated by
    squeeze-and-excitation, then added to the stem's output."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.depthwise, self.pointwise, self.plain = conv_bn(16, 16, groups=16), conv_bn(16, 8, 1), conv_bn(16, 8)
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.post, self.head = conv_bn(16, 16), nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.pointwise(self.depthwise(x)), self.plain(x)], 1)
        y = y * torch.sigmoid(self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        return self.head(pooled(self.post(y) + x))


class LayerNormed(nn.Module):
    """A ConvNeXt block: depthwise conv, a LayerNorm over channels (channels last), an MLP of linears, a residual."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.norm = nn.LayerNorm(16)
        self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        y = self.down(torch.relu(self.up(y))).permute(0, 3, 1, 2)
        return self.head(pooled(x + y))


class HeadAttention(nn.Module):
    """timm's Attention (fused qkv, num_heads, head_dim, proj), its matmuls written out so that
    torch.utils.flop_counter sees them. `fixed_width` reshapes to the input width as timm does, so its heads
    cannot go."""

    def __init__(self, dim: int, num_heads: int, fixed_width: bool = False):
        super().__init__()
        self.num_heads, self.head_dim, self.fixed_width = num_heads, dim // num_heads, fixed_width
        self.scale = self.head_dim**-0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c if self.fixed_width else -1))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, fixed_width: bool = False):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), HeadAttention(dim, num_heads, fixed_width)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A ViT as timm writes one: patch embedding, class token, learned position embedding, pre-norm blocks."""

    fixed_width = False

    def __init__(self, num_classes: int = 10, dim: int = 32, depth: int = 2, num_heads: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        blocks = [TransformerBlock(dim, num_heads, 4 * dim, self.fixed_width) for _ in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, :1]).flatten(1)  # see amc/vision_transformer.py


class FixedWidthViT(TinyViT):
    """timm's own forward: `reshape(B, N, C)` after attention, so a head fewer breaks it."""

    fixed_width = True


class MultiheadBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), nn.MultiheadAttention(dim, num_heads)  # sequence first
        self.norm2, self.mlp = (
            nn.LayerNorm(dim),
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)),
        )

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MultiheadViT(nn.Module):
    """A transformer written with nn.MultiheadAttention (sequence first), mean-pooled: amc swaps its attention."""

    def __init__(self, num_classes: int = 10, dim: int = 32, num_heads: int = 4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.pos_embed = nn.Parameter(torch.randn(16, 1, dim) * 0.02)
        self.blocks = nn.Sequential(MultiheadBlock(dim, num_heads), MultiheadBlock(dim, num_heads))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).permute(2, 0, 1) + self.pos_embed
        return self.head(self.blocks(x).mean(0))


class TorchvisionViT(torchvision.models.VisionTransformer):
    """torchvision's ViT, small: its patches are reshaped to a stored `hidden_dim`, so the embedding stays whole."""

    def __init__(self, num_classes: int = 10):
        super().__init__(image_size=16, patch_size=4, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                         num_classes=num_classes)  # fmt: skip


class TorchvisionSwin(torchvision.models.SwinTransformer):
    """torchvision's Swin, small: shifted windows of 3 x 3 over maps of 8 x 8 and 4 x 4 (both padded), patch
    merging between its two stages."""

    def __init__(self, num_classes: int = 10):
        super().__init__(patch_size=[2, 2], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[3, 3],
                         num_classes=num_classes)  # fmt: skip


ZOO = {cls.__name__: cls for cls in (TwoBranchConcat, DenseConcat, InceptionBranches, SplitBranches, GroupedConv,
                                     SqueezeExcite, DepthwiseSeparable, MixedBlock, LayerNormed, TinyViT,
                                     FixedWidthViT, MultiheadViT, TorchvisionViT, TorchvisionSwin)}  # fmt: skip
