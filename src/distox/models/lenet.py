"""LeNet-5 as most Fashion-MNIST tutorials build it: two 5×5 conv stages with max-pooling, the
feature map flattened (not pooled: the first Linear has a weight per position), then the Linear
layers 120 → 84 → classes. ``norm="batch"`` adds a BatchNorm2d after each conv (the study's
variant with BatchNorm; BENCHMARKS.md "Ninth round").
"""
from __future__ import annotations

import torch
from torch import nn

from .image_size import check_image_size

LENET_NORMS = ("none", "batch")


class LeNet5(nn.Module):
    """conv5(6, pad 2) → ReLU → pool2 → conv5(16) → ReLU → pool2 → flatten → 120 → 84 → ``fc``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, norm: str = "none") -> None:
        super().__init__()
        if norm not in LENET_NORMS:
            raise ValueError(f"norm must be one of {LENET_NORMS}; got {norm!r}")
        side = (int(image_size) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"lenet needs images of at least 12×12 (image_size=); got {image_size}")
        self.image_size = int(image_size)

        def bn(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.Identity()

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), bn(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), bn(16), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.hidden = nn.Sequential(nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
                                    nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.fc = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.image_size, "lenet")
        return self.fc(self.hidden(torch.flatten(self.features(x), 1)))
