"""Grayscale input for networks built for RGB (torchvision's classifiers take 3 channels)."""
from __future__ import annotations

import torch
from torch import nn


class GrayToRGB(nn.Module):
    """Wrap ``net`` so that ``forward(x)`` computes ``net(x)`` with the single channel of ``x``
    repeated three times (a grey pixel v becomes the RGB pixel (v, v, v)).

    No parameters or buffers of its own: the wrapped network's state-dict keys appear under
    ``net.`` (``fc.weight`` → ``net.fc.weight``).

    Shapes: (N, 1, H, W) → ``net``'s output.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"GrayToRGB takes 1-channel images; got {x.shape[1]} channels")
        return self.net(x.expand(-1, 3, -1, -1))
