"""Small image operations shared by the attacks: resizing, channel matching, Gaussian smoothing.

All functions take float tensors in (C, H, W) or (N, C, H, W) layout and never modify their
input. They are deterministic (no random numbers) so that a trigger built from them is
rebuilt bit-for-bit from the attack's parameters.

Example:
    >>> rgb = resize_bilinear(torch.rand(3, 300, 451), (28, 28))        # (3, 28, 28)
    >>> grey = match_channels(rgb, 1); smooth = gaussian_smooth(grey, sigma=5.25)
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

#: ITU-R BT.601 luma weights (what PIL's ``convert("L")`` uses).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def resize_bilinear(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (C, H, W) or (N, C, H, W) to ``size`` = (h, w), bilinear, aspect ratio not kept.

    Anti-aliased when shrinking (like PIL's bilinear resize the reference uses), so a large
    photograph turns into a faithful thumbnail rather than an aliased sample of its pixels.
    """
    batched = img.ndim == 4
    x = img if batched else img.unsqueeze(0)
    out = F.interpolate(x.float(), size=tuple(int(s) for s in size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out if batched else out[0]


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Grey (1, H, W) from RGB (3, H, W): 0.299 R + 0.587 G + 0.114 B."""
    w = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * w).sum(0, keepdim=True)


def match_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """Give a (C, H, W) image ``channels`` channels.

    RGB → 1 channel: luminance. 1 channel → C: the grey plane repeated. RGB → C ∉ {1, 3}: the
    luminance repeated C times. Same count: unchanged (a copy).
    """
    c = img.shape[0]
    if c == channels:
        return img.clone()
    grey = luminance(img) if c == 3 else img.mean(0, keepdim=True)
    return grey.repeat(channels, 1, 1)


def scaled_sigma(side: int, sigma_at_32: float) -> float:
    """A length given for 32×32 images, scaled to an image of side ``side``: σ·side/32."""
    return float(sigma_at_32) * float(side) / 32.0


def gaussian_kernel1d(sigma: float, radius: int | None = None, *, dtype=torch.float32,
                      device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian with 2·radius + 1 taps (radius defaults to ceil(2.5·σ))."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    r = int(math.ceil(2.5 * sigma)) if radius is None else int(radius)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable, per-channel Gaussian blur of (C, H, W) or (N, C, H, W) with zero padding.

    Zero padding (as in the LF reference) pulls values near the border towards 0, which
    is what gives the reference's low-frequency pattern its single central blob.
    """
    batched = x.ndim == 4
    z = x if batched else x.unsqueeze(0)
    c = z.shape[1]
    k = gaussian_kernel1d(sigma, dtype=z.dtype, device=z.device)
    r = (len(k) - 1) // 2
    kh = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    kw = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    z = F.conv2d(z, kh, padding=(r, 0), groups=c)
    z = F.conv2d(z, kw, padding=(0, r), groups=c)
    return z if batched else z[0]
