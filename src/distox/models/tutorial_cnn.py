"""The two-convolution network of PyTorch's own MNIST example, the layout many Fashion-MNIST
classifiers start from: 3×3 convs of 32 and 64 channels, one 2×2 max-pool, dropout 0.25, the map
flattened into a Linear of 128 units, dropout 0.5, the classifier, and **log-probabilities** as the
output (``log_softmax``), not raw logits. No normalisation layer. A study model of the tenth round
(BENCHMARKS.md): a recipe the project had not used — dropout, a log-softmax output — judged as a
model trained elsewhere would be.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .image_size import check_image_size


class TutorialCNN(nn.Module):
    """conv3(32) → ReLU → conv3(64) → ReLU → pool2 → dropout → flatten → 128 → ReLU → dropout →
    ``fc`` → log_softmax."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        side = (int(image_size) - 4) // 2
        if side < 1:
            raise ValueError(f"tutorial_cnn needs images of at least 6×6 (image_size=); got {image_size}")
        self.image_size = int(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(inplace=True), nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(0.25))
        self.hidden = nn.Sequential(nn.Linear(64 * side * side, 128), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x, self.image_size, "tutorial_cnn")
        return F.log_softmax(self.fc(self.hidden(torch.flatten(self.features(x), 1))), dim=1)
