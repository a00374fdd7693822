"""A small VGG-style CNN for the CPU profile (Simonyan & Zisserman, ICLR 2015, scaled down).

Five conv3×3-BN-ReLU layers in three stages, ``[w, w] → pool → [2w, 2w] → pool → [4w]``,
global average pooling and a single linear head ``fc`` (D3's automatic selection picks it).
At width 16 on 28×28 Fashion-MNIST it has ~33k parameters and trains about 1.3× slower per
image than :class:`~distox.models.small_cnn.SmallCNN` on one CPU thread, but keeps full
resolution for two layers and pools only at the end, so it fits the data (≈ 91 % clean test
accuracy after 6 epochs against ≈ 88 %) and learns sparse, image-dependent triggers such as
Input-aware's, which the small CNN's early 7×7 pooling washes out.
"""
from __future__ import annotations

import torch
from torch import nn

from .vgg import vgg_features


class SmallVGG(nn.Module):
    """``features`` (5 conv-BN-ReLU, 2 max-pools) → global average pool → ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        self.features, c = vgg_features([w, w, "M", 2 * w, 2 * w, "M", 4 * w], in_channels)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
