"""Sharpness-aware minimisation (Foret et al., ICLR 2021) and its adaptive form ASAM
(Kwon et al., ICML 2021), as a two-pass step used by the shared training loop.

First pass: g = ∇L(w). Perturbation e = ρ·g/‖g‖ (SAM) or e = ρ·T²g/‖T g‖ with T = |w| + η
(ASAM, elementwise), so that ‖e‖ = ρ (SAM) or ‖T⁻¹e‖ = ρ (ASAM). Second pass at w + e gives
the gradient the optimiser applies at w.
"""
from __future__ import annotations

import torch

_ASAM_ETA = 0.01


@torch.no_grad()
def sam_perturbation(
    params: list[torch.nn.Parameter], rho: float, adaptive: bool = False
) -> list[torch.Tensor | None]:
    """Compute the ascent perturbation e for each parameter from its current ``.grad``."""
    scaled = []
    for p in params:
        if p.grad is None:
            scaled.append(None)
            continue
        t = (p.abs() + _ASAM_ETA) if adaptive else None
        scaled.append(p.grad * t if adaptive else p.grad)
    norm = torch.norm(torch.stack([s.norm(2) for s in scaled if s is not None]), 2)
    factor = rho / (norm + 1e-12)
    eps: list[torch.Tensor | None] = []
    for p, s in zip(params, scaled):
        if s is None:
            eps.append(None)
            continue
        e = s * factor
        if adaptive:
            e = e * (p.abs() + _ASAM_ETA)
        eps.append(e)
    return eps


@torch.no_grad()
def apply_perturbation(params: list[torch.nn.Parameter], eps: list[torch.Tensor | None], sign: float) -> None:
    """w ← w + sign·e for every parameter with a perturbation."""
    for p, e in zip(params, eps):
        if e is not None:
            p.add_(e, alpha=sign)
