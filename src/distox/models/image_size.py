"""The input check of models built for one image size (a Linear over the flattened pixels or
feature map has a weight per position, so another size cannot run)."""
from __future__ import annotations

import torch


def check_image_size(x: torch.Tensor, size: int, model: str) -> None:
    """Raise ``ValueError`` unless ``x``'s last two dimensions are ``size`` × ``size``."""
    if x.shape[-1] != size or x.shape[-2] != size:
        raise ValueError(f"{model} takes {size}x{size} images (image_size=); got {tuple(x.shape[-2:])}")
