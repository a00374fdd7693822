"""Re-estimating BatchNorm's running statistics on the clean retain images after a defense has
trained (a distox option, not in the paper: D3's ``bn_recalibrate``).

Why. While a defense trains, every BatchNorm layer keeps an exponential average of the batch
statistics of what it sees, and with the overlay augmentation (``blend``: each image mixed with
another of its batch) or random crops, what it sees are *changed* images: an overlay of two images
has less contrast than either, so its variances are smaller. At test time the images are plain,
and the stored statistics may not be theirs. This pass replaces them by the statistics of the
plain retain images under the trained weights: every BatchNorm layer's running mean and variance
are reset and re-accumulated as a cumulative average over one pass (``momentum=None``), in
evaluation mode for everything else (dropout off). No weight changes.

Reads the retain images only (no labels, no evaluation data).

Example:
    >>> layers = reestimate_batchnorm(model, retain.x, device="cpu")
"""
from __future__ import annotations

import torch
from torch import nn

from ..utils import batchnorm_modules, eval_mode


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, x: torch.Tensor, device: torch.device | str = "cpu",
                         batch_size: int = 256) -> int:
    """Reset and re-accumulate every BatchNorm layer's running statistics over the images ``x``
    (module docstring); returns how many layers there were. Each module's training flag and each
    BatchNorm layer's momentum are restored after."""
    norms = [m for _, m in batchnorm_modules(model) if m.track_running_stats]
    starts = list(range(0, len(x), batch_size))
    if len(starts) > 1 and len(x) - starts[-1] == 1:
        starts.pop()  # a last batch of one image: a BatchNorm1d cannot take its statistics
    if not norms or len(x) < 2:
        return 0
    momenta = [m.momentum for m in norms]
    with eval_mode(model):
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for i in starts:
            model(x[i:i + batch_size].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return len(norms)
