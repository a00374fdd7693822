"""FT-SAM — fine-tuning with (adaptive) sharpness-aware minimisation (Zhu et al., "Enhancing
Fine-Tuning Based Backdoor Defense with Sharpness-Aware Minimization", ICCV 2023), SPEC §4.

Per batch (ASAM, Kwon et al. 2021, see :mod:`distox.sam`): g = ∇L(w); step to
w + e with e = ρ·T²g/‖Tg‖, T = |w| + η, so that ‖T⁻¹e‖₂ = ρ; the gradient at w + e updates w.
L is cross-entropy with label smoothing s in the reference's convention (true class 1 − s,
every other class s/(K − 1)). Reference defaults (BackdoorBench ``defense/ft-sam.py``): SGD
lr 0.01, momentum 0.9, weight decay 5e-4, ρ = 2.0 (ρ_min = ρ_max = 2.0, so constant), adaptive,
η = 0 (T = |w|), label smoothing 0.1, batch 256, cosine annealing, 100 epochs, random crop (+
flip on CIFAR-10) on the retain set. BatchNorm running statistics are not updated by the perturbed pass.

Differences from the reference, on purpose: the cosine schedule anneals once over the run
(the reference steps a T_max = 100 cosine schedule every *batch*, so its lr oscillates with a
period of 200 batches); its GSAM gradient decomposition is off there (α = 0) and absent here.

Example:
    >>> result = FTSAM(epochs=20)(suspect_model, retain_split)
    >>> result.model   # purified copy
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..training import Objective
from .base import DefenseError
from .ft import FT
from .registry import register


def smoothed_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Soft targets: 1 − s on the true class and s/(K − 1) on every other class (K ≥ 2)."""
    off = smoothing / max(num_classes - 1, 1)
    t = torch.full((len(y), num_classes), off, device=y.device, dtype=torch.float32)
    t.scatter_(1, y.view(-1, 1), 1.0 - smoothing)
    return t


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy against :func:`smoothed_targets` (plain CE when ``smoothing`` = 0)."""
    if smoothing == 0:
        return F.cross_entropy(logits, y)
    targets = smoothed_targets(y, logits.shape[1], smoothing).to(logits.dtype)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


@register
class FTSAM(FT):
    """Fine-tuning with (adaptive) sharpness-aware minimisation.

    Args:
        rho: SAM radius ρ (2.0; the reference's ρ_min = ρ_max = 2.0).
        adaptive: adaptive SAM, ‖T⁻¹e‖ = ρ (True); False gives plain SAM, ‖e‖ = ρ.
        eta: η in ASAM's T = |w| + η (0.0 as in the FT-SAM reference; ASAM paper: 0.01).
        label_smoothing: s (0.1): true class 1 − s, others s/(K − 1).
        momentum, weight_decay: SGD's (0.9, 5e-4), see :class:`~distox.defenses.ft.FT`.
        epochs, batch_size, lr, augment, flip, seed: see :class:`~distox.defenses.base.Defense`
            (100, 256, 0.01, True, True, 0).
    """

    name = "ft-sam"

    def __init__(self, rho: float = 2.0, adaptive: bool = True, eta: float = 0.0,
                 label_smoothing: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not rho > 0:
            raise DefenseError(f"rho must be > 0; got {rho}")
        if not eta >= 0:
            raise DefenseError(f"eta must be >= 0; got {eta}")
        if not 0 <= label_smoothing < 1:
            raise DefenseError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.rho, self.adaptive, self.eta = float(rho), bool(adaptive), float(eta)
        self.label_smoothing = float(label_smoothing)

    def objective(self) -> Objective:
        """Label-smoothed cross-entropy (the loss at w and at w + e)."""
        s = self.label_smoothing

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
            loss = smoothed_cross_entropy(model(x), y, s)
            return loss, {"loss": float(loss.detach())}

        return loss_fn

    def extra_loop_options(self) -> dict[str, Any]:
        return {"sam_rho": self.rho, "sam_adaptive": self.adaptive, "sam_eta": self.eta}
