"""A small hybrid Vision Transformer (Dosovitskiy et al., ICLR 2021, §3.1 "Hybrid Architecture":
the patch embedding applied to a CNN's feature map instead of raw pixels), built from PyTorch's own
transformer layers.

Layout: ``patch_embed`` = two stride-2 3×3 convolutions, each followed by BatchNorm and ReLU (an
image side of 28 gives a 7×7 grid of tokens) → prepend ``cls_token`` → add ``pos_embed`` →
``blocks`` = ``nn.TransformerEncoder`` of pre-norm ``nn.TransformerEncoderLayer`` (attention in
``nn.MultiheadAttention``, whose query/key/value projection is the parameter ``in_proj_weight``, not
an ``nn.Linear``; GELU feed-forward, no dropout) → ``norm`` (LayerNorm) → ``head`` = Linear on the
class token. Unlike :class:`~distox.models.small_vit.SmallViT` (whose attention is written with
``nn.Linear`` layers and which has no BatchNorm) it has BatchNorm in its stem and attention in
PyTorch's module, as many models built with ``torch.nn`` do. Image sides must be multiples of 4;
the position embedding is stored for an ``image_size`` grid and resized to others (as SmallViT's).
Defaults (width 64, depth 2, 4 heads, MLP ratio 2) give 89,834 parameters for 10 classes on
1-channel input.
"""
from __future__ import annotations

from torch import nn

from .small_vit import SmallViT


def conv_stem(in_channels: int, dim: int) -> nn.Sequential:
    """Two stride-2 3×3 conv–BatchNorm–ReLU stages: (N, C, H, W) → (N, dim, H/4, W/4)."""
    half = max(1, dim // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        nn.Conv2d(half, dim, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True),
    )


class HybridViT(SmallViT):
    """SmallViT with a convolutional stem (BatchNorm) and ``nn.TransformerEncoder`` blocks; same
    arguments as :class:`SmallViT` without ``patch_size`` (the stem's stride is 4)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 2.0, image_size: int = 28) -> None:
        super().__init__(num_classes, in_channels, dim, depth, heads, mlp_ratio, patch_size=4, image_size=image_size)
        self.patch_embed = conv_stem(in_channels, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, max(1, int(round(dim * mlp_ratio))), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
