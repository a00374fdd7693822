"""Normalisation as part of the model, so that every distox API takes images in [0, 1]."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalized(nn.Module):
    """Wrap ``net`` so that ``forward(x)`` computes ``net((x - mean) / std)``.

    Triggers are stamped on un-normalised images (SPEC §3); keeping the normalisation inside
    the model means attacks, defenses and metrics never have to know the statistics.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
