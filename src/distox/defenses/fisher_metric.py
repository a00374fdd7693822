"""A distance that pushes hardest where the clean data does not care: D3's weight distance
measured in a metric that the suspect model's clean-data Fisher information sets (a distox option,
``layer_weighting="fisher"``; not in the paper).

Why. D3 maximises Σ‖W − W_init‖ (paper Eq. 2) with every coordinate of a weight pushed alike. The
accuracy the all-layer distance costs is in the features it moves (BENCHMARKS.md "Thirteenth
round"), while a backdoor lives largely in weights the clean data barely uses — the premise of
pruning defenses such as ANP. The empirical Fisher information of the clean cross-entropy, F =
E[(∂ℓ/∂W)²], says how much each coordinate matters to the clean function; weighing each
coordinate's squared displacement by

    s = c / (1 + F / mean(F)),      c such that mean(s) = 1 within each weight,

turns the distance ‖√s ⊙ (W − W_init)‖_p toward the coordinates of low Fisher (s → c) and away
from those of high Fisher (s → 0), with the same total push per weight as the plain distance.
Weights the warm start restarts (the classifier) keep the plain distance: the suspect's
information about them no longer describes them.

F is estimated once, before any weight moves, from mini-batch gradients of the suspect on the plain
retain images (evaluation mode: BatchNorm's statistics and dropout as the suspect runs); it reads
the retain images and labels only.

Example:
    >>> metric = fisher_metric(clean_fisher(model, weights, retain, 32, "cpu"))
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..utils import eval_mode


def clean_fisher(model: nn.Module, weights: Sequence[nn.Parameter], retain: ImageSplit, batch_size: int,
                 device: torch.device | str) -> list[torch.Tensor]:
    """The empirical Fisher diagonal of the mean clean cross-entropy for each of ``weights``: the
    mean over the retain set's mini-batches (in order) of the squared batch gradient
    (``torch.autograd.grad``: no ``.grad`` is written). No weight or buffer of ``model`` changes."""
    sums = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    batches = 0
    with eval_mode(model):
        for i in range(0, len(retain), batch_size):
            x, y = retain.x[i:i + batch_size].to(device), retain.y[i:i + batch_size].to(device)
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(weights), allow_unused=True)
            for s, g in zip(sums, grads):
                if g is not None:
                    s.add_(g.detach().float().pow(2))
            batches += 1
    return [s / max(batches, 1) for s in sums]


def fisher_metric(fisher: Sequence[torch.Tensor], plain: Sequence[bool] = ()) -> list[torch.Tensor | None]:
    """√s per weight (module docstring), ``None`` (the plain distance) where ``plain`` is True or
    the weight's Fisher is all zeros."""
    out: list[torch.Tensor | None] = []
    flags = list(plain) + [False] * (len(fisher) - len(plain))
    for f, keep_plain in zip(fisher, flags):
        mean = f.mean()
        if keep_plain or not float(mean) > 0:
            out.append(None)
            continue
        s = 1.0 / (1.0 + f / mean)
        out.append((s / s.mean()).sqrt())
    return out
