"""A small Vision Transformer for CPU work (Dosovitskiy et al., "An Image is Worth 16x16
Words", ICLR 2021), scaled down from the paper's ViT-B/16.

Layout: ``patch_embed`` (Conv2d, kernel = stride = ``patch_size``) → prepend ``cls_token`` →
add ``pos_embed`` → ``blocks`` (pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)), with
multi-head self-attention and a GELU MLP) → ``norm`` (LayerNorm) → ``head`` = Linear on the
class token. The classifier is named ``head`` as in ViT-B/16, and it is the last
``nn.Linear`` to run, so D3's automatic selection picks it.

Sizes: the default patch size 4 divides 28 (Fashion-MNIST, a 7×7 grid), 32 (CIFAR, 8×8) and
64 (Tiny-ImageNet, 16×16); image sides must be multiples of it (no padding). The learned
position embedding is stored for an ``image_size`` grid (default 32 → 8×8) and bilinearly
resized to the input's grid when that differs, so one model takes any multiple of the patch
size. The class token gets no position embedding of its own: it is itself a learned vector.
Defaults (dim 64, depth 4, 4 heads, MLP ratio 2) give 139,914 parameters for 10 classes on
1-channel input. No dropout.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention: ``qkv`` (one Linear for queries, keys and
    values), softmax(q kᵀ / √d_head) v per head, then the output projection ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, d_head)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer encoder block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """ViT classifier; see the module docstring for the layout and sizes.

    Args:
        num_classes: outputs of ``head``.
        in_channels: image channels (any).
        dim: token width (``create_model``'s ``width``; a multiple of ``heads``).
        depth: number of transformer blocks.
        heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        patch_size: side of the square patches (kernel and stride of ``patch_embed``).
        image_size: side the stored position embedding is laid out for (a multiple of
            ``patch_size``); other sides are served by resizing it.

    Shapes: (N, in_channels, H, W) with H and W multiples of ``patch_size`` → (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0, patch_size: int = 4, image_size: int = 32) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"small_vit: width (dim) {dim} must be a positive multiple of heads {heads}")
        if depth < 1 or patch_size < 1 or mlp_ratio <= 0:
            raise ValueError(f"small_vit: depth {depth}, patch_size {patch_size} and mlp_ratio {mlp_ratio} "
                             "must be positive")
        if image_size < patch_size or image_size % patch_size:
            raise ValueError(f"small_vit: image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, grid, grid))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """ViT initialisation: truncated normal (std 0.02) for the tokens, position embedding and
        Linear weights, zero biases; the head is not zeroed, so D3's norm constraint stays non-trivial."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens plus position embedding, class token first: (N, 1 + h·w, dim)."""
        side = self.patch_size
        if x.shape[-2] % side or x.shape[-1] % side:
            raise ValueError(f"small_vit: image size {tuple(x.shape[-2:])} is not a multiple of the "
                             f"patch size {side}")
        patches = self.patch_embed(x)  # (N, dim, h, w)
        pos = self.pos_embed
        if pos.shape[-2:] != patches.shape[-2:]:
            pos = F.interpolate(pos, size=patches.shape[-2:], mode="bilinear", align_corners=False)
        patches = (patches + pos).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(x), -1, -1), patches], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the normalised class token, (N, dim)."""
        return self.norm(self.blocks(self.tokens(x)))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
