"""BadNets (Gu et al., "BadNets: Identifying Vulnerabilities in the Machine Learning Model
Supply Chain", 2017), SPEC §3.

A white square patch pasted into the bottom-right corner: 3×3 at 32×32, scaled with the image
side for other sizes (side = max(1, round(3·H/32))), 0 px from the edges. Pixels under the
patch are replaced by 1.0 in every channel; all others are unchanged.

Differs from the reference: the reference resizes a 32×32 trigger image bilinearly and then
treats every non-zero pixel as trigger, which turns the patch into a 7×7 grey-rimmed block at
64×64; distox scales the square itself (a 6×6 white square at 64×64).

Example:
    >>> atk = BadNets(target=0, poison_rate=0.1)
    >>> x_bd = atk.apply(torch.rand(4, 3, 32, 32))   # x_bd[..., 29:, 29:] == 1
"""
from __future__ import annotations

import torch

from .base import Attack
from .registry import register


def patch_side(image_side: int, base: int = 3, base_image: int = 32) -> int:
    """Patch side scaled with the image: max(1, round(base·side/base_image))."""
    return max(1, int(round(base * image_side / base_image)))


@register
class BadNets(Attack):
    """Args: ``patch`` side at 32×32 (default 3, scaled with the image), ``value`` (1.0 = white)
    plus the base-class arguments (target, mode, poison_rate, seed)."""

    name = "badnets"
    kind = "data"
    min_side = 4

    def __init__(self, patch: int = 3, value: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if patch < 1:
            raise ValueError(f"patch must be >= 1; got {patch}")
        self.patch, self.value = int(patch), float(value)

    def params(self) -> dict:
        return {**super().params(), "patch": self.patch, "value": self.value}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = patch_side(min(h, w), self.patch)
        out = x.clone()
        out[..., h - s:, w - s:] = self.value
        return out
