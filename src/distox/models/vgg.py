"""VGG19 with batch normalisation (Simonyan & Zisserman, ICLR 2015), CIFAR-style head.

Feature extractor ``features`` (16 conv-BN-ReLU layers, 5 max-pools), then adaptive pooling to
1×1 and a ``classifier`` of Linear(512·w, 4096·w)–ReLU–Dropout–Linear–ReLU–Dropout–Linear.
"""
from __future__ import annotations

import torch
from torch import nn

_CFG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg_features(cfg: list[int | str], in_channels: int, width: float = 1.0) -> tuple[nn.Sequential, int]:
    """VGG feature extractor from a layer list: an int is a conv3×3-BN-ReLU with that many
    channels (times ``width``), ``"M"`` a 2×2 max-pool (ceil mode). Returns (features, channels)."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            out = max(1, int(round(v * width)))
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
    return nn.Sequential(*layers), c


class VGG19BN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 hidden: int = 4096) -> None:
        super().__init__()
        self.features, c = vgg_features(_CFG19, in_channels, width)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        h = max(1, int(round(hidden * width)))
        self.classifier = nn.Sequential(
            nn.Linear(c, h), nn.ReLU(True), nn.Dropout(),
            nn.Linear(h, h), nn.ReLU(True), nn.Dropout(),
            nn.Linear(h, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
