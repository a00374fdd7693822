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

When (``bn_recalibrate="auto"``, the ``default`` preset). D3 turns every weight of a BatchNorm
model far from the suspect's (BENCHMARKS.md "Fifteenth round": 58–129° on the study's small
models), so the running statistics must follow. Each step moves them by BatchNorm's ``momentum``:
after ``steps`` steps a share (1 − momentum)^steps of the suspect's statistics is left
(``momentum=None``, a cumulative average: n/(n + steps), n the batches it had averaged). PyTorch's
0.1 leaves nothing after a D3 run; a model trained elsewhere may carry a much slower one —
Keras's 0.99 and 0.999 convert to 0.01 and 0.001, torchvision's MnasNet uses 0.0003 — and keeps
statistics of weights D3 has turned away from: the default lost 52 ACC points on the VGG Blended
study model given momentum 0.001 (its function unchanged), 4.90 with the statistics
re-estimated. :func:`stale_share` is that share; above :data:`STALE_SHARE` the default re-estimates.

Example:
    >>> layers = reestimate_batchnorm(model, retain.x, device="cpu")
"""
from __future__ import annotations

import torch
from torch import nn

from ..utils import batchnorm_modules, eval_mode


#: The largest share of the suspect's running statistics a D3 run may leave in a BatchNorm layer
#: before ``bn_recalibrate="auto"`` re-estimates them (1 %).
STALE_SHARE = 0.01


def stale_share(model: nn.Module, steps: int) -> float:
    """The largest share of its present running statistics that any BatchNorm layer of ``model``
    that tracks them will still hold after ``steps`` training steps (module docstring); 0.0 without one."""
    shares = [0.0]
    for _, m in batchnorm_modules(model):
        if not m.track_running_stats or m.running_mean is None:
            continue
        if m.momentum is None:
            seen = int(m.num_batches_tracked) if m.num_batches_tracked is not None else 0
            shares.append(seen / (seen + steps) if seen + steps > 0 else 0.0)
        else:
            shares.append((1.0 - float(m.momentum)) ** steps)
    return max(shares)


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
