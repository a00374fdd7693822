"""A small CNN for CPU work and the demo: two conv-BN-ReLU stages, then a linear head ``fc``.

``norm`` picks what follows each conv: ``"batch"`` (BatchNorm, the default), ``"group"``
(GroupNorm, 4 groups) or ``"none"`` (conv → ReLU, as many home-made CNNs are) — the same network
with and without BatchNorm, for the D3 study of how normalisation changes what D3 should do.
``head`` picks the classifier: ``"linear"`` (``fc``, the default) or ``"conv"`` (``classifier``:
a 1×1 convolution to one map per class, averaged over the image, as in Network-in-Network and
SqueezeNet: a model without any nn.Linear).
"""
from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "group", "none")
HEADS = ("linear", "conv")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """What follows a conv: BatchNorm2d, GroupNorm(4 groups) or nothing (Identity: no
    parameters, so the other layers keep their state-dict keys)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}; got {kind!r}")


class SmallCNN(nn.Module):
    """conv(3×3) → norm → ReLU ×2 stages (each followed by 2×2 max-pool when the side allows),
    adaptive average pooling to 2×2, then ``fc`` = Linear(4·c2, num_classes) (``head="linear"``) or
    ``classifier`` = Conv2d(c2, num_classes, 1) with the class maps averaged (``head="conv"``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, norm: str = "batch",
                 head: str = "linear") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {head!r}")
        c1, c2 = width, 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), norm_layer(norm, c1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c1, 3, padding=1), norm_layer(norm, c1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), norm_layer(norm, c2), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((2, 2)),
        )
        self.head = head
        if head == "linear":
            self.fc = nn.Linear(4 * c2, num_classes)
        else:
            self.classifier = nn.Conv2d(c2, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head == "conv":
            return self.classifier(self.features(x)).mean((2, 3))
        return self.fc(torch.flatten(self.features(x), 1))
