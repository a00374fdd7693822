"""A small multi-layer perceptron: the image flattened, ``depth`` hidden Linear layers, then a
linear head ``fc`` — a network with no convolution at all, as many first Fashion-MNIST models
are. ``norm`` picks what follows each hidden Linear: ``"none"`` (Linear → ReLU, the default) or
``"batch"`` (BatchNorm1d), the same network with and without BatchNorm for the D3 study
(BENCHMARKS.md "Eighth round").
"""
from __future__ import annotations

import torch
from torch import nn

from .image_size import check_image_size

MLP_NORMS = ("none", "batch")


class SmallMLP(nn.Module):
    """flatten → [Linear(·, width) → norm → ReLU] × depth → ``fc`` = Linear(width, num_classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 256, depth: int = 2,
                 image_size: int = 28, norm: str = "none") -> None:
        super().__init__()
        if norm not in MLP_NORMS:
            raise ValueError(f"norm must be one of {MLP_NORMS}; got {norm!r}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1; got {depth}")
        self.image_size = int(image_size)
        layers: list[nn.Module] = []
        features = in_channels * self.image_size ** 2
        for _ in range(int(depth)):
            layers += [nn.Linear(features, int(width)),
                       nn.BatchNorm1d(int(width)) if norm == "batch" else nn.Identity(), nn.ReLU(inplace=True)]
            features = int(width)
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.image_size, "small_mlp")
        return self.fc(self.hidden(torch.flatten(x, 1)))
