"""A small CNN for CPU work and the demo: two conv-BN-ReLU stages, then a linear head ``fc``."""
from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv(3×3) → BN → ReLU ×2 stages (each followed by 2×2 max-pool when the side allows),
    adaptive average pooling to 2×2, then ``fc`` = Linear(4·c2, num_classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        c1, c2 = width, 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((2, 2)),
        )
        self.fc = nn.Linear(4 * c2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
