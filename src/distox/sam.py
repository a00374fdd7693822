"""Sharpness-aware minimisation (Foret et al., ICLR 2021) and its adaptive form ASAM
(Kwon et al., ICML 2021), as a two-pass step used by the shared training loop.

First pass: g = ∇L(w). Perturbation (ASAM paper, Eq. 9 with the normalisation operator
T_w = diag(|w| + η), elementwise)

    SAM:   e = ρ · g / ‖g‖₂                so that ‖e‖₂ = ρ
    ASAM:  e = ρ · T_w² g / ‖T_w g‖₂       so that ‖T_w⁻¹ e‖₂ = ρ

with one global norm over all parameters. The second pass at w + e gives the gradient the
optimiser applies at w. η = 0.01 is the ASAM paper's default; the FT-SAM reference code
(BackdoorBench ``utils/defense_utils/sam``) uses η = 0 (T_w = |w|), which ``eta=0`` selects.
As in that reference and in the SAM authors' advice, BatchNorm running statistics are not
updated by the second (perturbed) forward pass (:func:`frozen_bn_stats`).

Example:
    >>> eps = sam_perturbation(params, rho=2.0, adaptive=True, eta=0.0)
    >>> apply_perturbation(params, eps, +1.0)   # ... second pass ...; then sign -1.0 restores
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .utils import batchnorm_modules

#: ASAM's η (Kwon et al. 2021 default): T_w = |w| + η keeps zero weights perturbable.
ASAM_ETA = 0.01
_ASAM_ETA = ASAM_ETA  # backwards-compatible private name


def asam_scale(p: torch.Tensor, eta: float = ASAM_ETA) -> torch.Tensor:
    """The diagonal of ASAM's normalisation operator T_w = |w| + η for one parameter."""
    return p.detach().abs() + eta


@torch.no_grad()
def sam_perturbation(
    params: list[torch.nn.Parameter], rho: float, adaptive: bool = False, eta: float = ASAM_ETA
) -> list[torch.Tensor | None]:
    """Compute the ascent perturbation e for each parameter from its current ``.grad``.

    Args:
        params: the trained parameters (their ``.grad`` holds the first-pass gradient).
        rho: the radius ρ (> 0).
        adaptive: ASAM (``‖T⁻¹e‖ = ρ``) instead of SAM (``‖e‖ = ρ``).
        eta: η in T_w = |w| + η (ASAM only; 0.01 ASAM paper, 0.0 FT-SAM reference).

    Returns one tensor per parameter (``None`` where the parameter has no gradient).
    """
    scales = [asam_scale(p, eta) if (adaptive and p.grad is not None) else None for p in params]
    scaled = [None if p.grad is None else (p.grad * t if t is not None else p.grad)
              for p, t in zip(params, scales)]
    present = [s.norm(2) for s in scaled if s is not None]
    if not present:
        return [None] * len(params)
    norm = torch.norm(torch.stack(present), 2)
    factor = rho / (norm + 1e-12)
    eps: list[torch.Tensor | None] = []
    for s, t in zip(scaled, scales):
        if s is None:
            eps.append(None)
            continue
        e = s * factor  # T g ρ/‖T g‖
        if t is not None:
            e = e * t  # T² g ρ/‖T g‖
        eps.append(e)
    return eps


@torch.no_grad()
def apply_perturbation(params: list[torch.nn.Parameter], eps: list[torch.Tensor | None], sign: float) -> None:
    """w ← w + sign·e for every parameter with a perturbation."""
    for p, e in zip(params, eps):
        if e is not None:
            p.add_(e, alpha=sign)


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with batch statistics (train mode) but do not update
    their running mean/var inside the block (momentum 0), as for SAM's second pass."""
    saved = []
    for _, m in batchnorm_modules(model):
        saved.append((m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None))
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
