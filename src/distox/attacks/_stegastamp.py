"""Small StegaStamp-style networks for SSBA (Tancik et al., "StegaStamp: Invisible Hyperlinks in
Physical Photographs", CVPR 2020; used by Li et al., ICCV 2021).

:class:`CodeEncoder` maps an image ``x`` (N, C, H, W) in [0, 1] and a bit code (N, B) to a
residual bounded by ``max_residual·tanh(·)``; :class:`CodeDecoder` maps an (encoded) image to
B bit logits. Both are scaled down from the reference (a 5-level U-Net on 400×400 images)
to a 2-level U-Net and a 2-stage conv decoder that train in a minute or two on 28×28 images
on a CPU. Two changes make the small networks learn quickly: the code map keeps the image's
resolution (up to 32×32) instead of the reference's 16×16 map upsampled, and the decoder
also sees a high-pass view of its input (the image minus its 3×3 local mean), where the
residual stands out from the mostly smooth image content.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class CodeEncoder(nn.Module):
    """E(x, code) → residual r, |r| ≤ ``max_residual``.

    The code (as ±1) goes through a linear layer to a ``code_channels``×h×w map (the
    reference's ``secret_dense``; h×w = H×W up to 32×32, else downscaled by the smallest
    integer that brings the longer side to ≤ 32), is upsampled bilinearly to H×W and
    concatenated with the image; a 2-level U-Net (``width`` channels at full resolution, 2·width
    then ``width`` at half resolution) turns that into the residual through a final 1×1
    convolution that also sees the input.

    Args:
        image_shape: (C, H, W) of the images.
        code_bits: length B of the code.
        width: channels of the full-resolution U-Net level (default 8).
        max_residual: bound of the residual in [0, 1] pixel units (default 0.1).
        code_channels: channels of the upsampled code map (default 3, as in the reference).
    """

    def __init__(self, image_shape: tuple[int, int, int], code_bits: int, width: int = 8,
                 max_residual: float = 0.1, code_channels: int = 3) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        step = max(1, -(-max(h, w) // 32))  # full resolution up to 32×32
        self.code_map = (code_channels, -(-h // step), -(-w // step))
        self.max_residual = float(max_residual)
        self.secret_dense = nn.Linear(code_bits, code_channels * self.code_map[1] * self.code_map[2])
        self.inc = _conv(c + code_channels, width)
        self.down = _conv(width, 2 * width, stride=2)
        self.mid = _conv(2 * width, width)
        self.up = _conv(2 * width, width)
        self.out = nn.Conv2d(width + c + code_channels, c, 1)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.secret_dense(2.0 * code.float() - 1.0).view(n, *self.code_map)
        s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)
        inp = torch.cat([x - 0.5, s], 1)
        f1 = self.inc(inp)
        f2 = self.mid(self.down(f1))
        f2 = F.interpolate(f2, size=(h, w), mode="nearest")
        f = self.up(torch.cat([f1, f2], 1))
        return self.max_residual * torch.tanh(self.out(torch.cat([f, inp], 1)))


class CodeDecoder(nn.Module):
    """D(x') → B bit logits: the input and its high-pass view (x' minus its 3×3 local mean,
    ×4) through a full- and a half-resolution conv stage, adaptive average pooling to 7×7,
    then two linear layers (the reference: five stride-2 convs and a dense layer).

    Args:
        in_channels: image channels C.
        code_bits: length B of the code.
        width: channels of the full-resolution stage (default 8; the half-resolution stage
            has 2·width).
    """

    def __init__(self, in_channels: int, code_bits: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv(2 * in_channels, width), _conv(width, 2 * width, stride=2), _conv(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(7),
        )
        self.head = nn.Sequential(nn.Linear(98 * width, 256), nn.ReLU(inplace=True), nn.Linear(256, code_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return self.head(torch.flatten(self.features(torch.cat([x - 0.5, 4.0 * high], 1)), 1))
