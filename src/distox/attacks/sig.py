"""SIG (Barni, Kallas and Tondi, "A New Backdoor Attack in CNNs by Training Set Corruption
Without Label Poisoning", ICIP 2019), SPEC §3. A clean-label attack.

The trigger is a horizontal sinusoid added to the image, constant down each column and the
same in every channel:

    x'[c, i, j] = clip( x[c, i, j] + Δ·sin(2π·j·f / m), 0, 1 ),   j = 0..m−1 (m = width)

with Δ = 40/255 and f = 6 (six periods across the width). Only *target-class* training
images are poisoned and their labels are kept (the base class picks round(rate·N) of them;
the rate is relative to the whole training set, and asking for more images than the target
class holds raises :class:`~distox.attacks.base.AttackError`). At test time the signal is
added to the non-target images, whose backdoor label is the target.

Args:
    delta: amplitude Δ on the [0, 1] scale (default 40/255).
    freq: number of periods f across the image width (default 6).
    target, poison_rate, seed: see :class:`~distox.attacks.base.Attack` (defaults 0, 0.1, 0).
        ``mode`` must be ``"all2one"``: a clean-label attack cannot relabel.

Differs from the reference: the reference adds the signal to uint8 pixels and truncates the
result to uint8; distox keeps float precision. Otherwise identical (BackdoorBench's defaults
Δ = 40, f = 6 on the 0–255 scale). A too large poison rate gives a clear error instead of the
reference's numpy crash.

Example:
    >>> atk = SIG(target=0, poison_rate=0.1)
    >>> x_bd = atk.apply(torch.rand(4, 3, 32, 32))   # vertical stripes, 6 periods
"""
from __future__ import annotations

import math

import torch

from .base import Attack, AttackError
from .registry import register


def sinusoid(width: int, delta: float, freq: float, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Δ·sin(2π·j·f/width) for j = 0..width−1 (computed in float64, returned as ``dtype``)."""
    j = torch.arange(int(width), dtype=torch.float64)
    return (float(delta) * torch.sin(2.0 * math.pi * j * float(freq) / int(width))).to(dtype=dtype, device=device)


@register
class SIG(Attack):
    """Add a horizontal sinusoid to target-class training images (labels kept); see the module doc."""

    name = "sig"
    kind = "clean-label"
    min_side = 2

    def __init__(self, delta: float = 40.0 / 255.0, freq: float = 6.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.mode != "all2one":
            raise AttackError("SIG is a clean-label attack: it keeps labels, so mode must be 'all2one'")
        if not (isinstance(delta, (int, float)) and 0.0 < delta <= 1.0):
            raise AttackError(f"delta must be in (0, 1] (the [0, 1] pixel scale); got {delta}")
        if not (isinstance(freq, (int, float)) and freq > 0):
            raise AttackError(f"freq must be > 0; got {freq}")
        self.delta, self.freq = float(delta), float(freq)

    def params(self) -> dict:
        return {**super().params(), "delta": self.delta, "freq": self.freq}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise AttackError(f"images must have shape (N, C, H, W); got {tuple(x.shape)}")
        signal = sinusoid(x.shape[-1], self.delta, self.freq, dtype=x.dtype, device=x.device)
        return (x + signal.view(1, 1, 1, -1)).clamp(0.0, 1.0)
