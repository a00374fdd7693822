"""The suspect model's own clean outputs as a soft target (D3's ``distill`` option).

D3's constraint (paper, constrained form) keeps the clean loss of the moved weights small:
E[ℓ(f_θ(x), y)] ≤ ε on the retain set. With a few thousand images the hard labels say little
about the function the suspect computed on clean inputs, so weights pushed far from their start
(every layer, a random classifier) re-fit those images and generalise worse. ``distill`` adds
what the suspect knows about clean images: its temperature-softened outputs (Hinton, Vinyals &
Dean, "Distilling the Knowledge in a Neural Network", 2015), per sample

    ℓ_i = (1 − α) · CE(f_θ(x_i), y_i) + α · T² · KL(softmax(g(x_i)/T) ‖ softmax(f_θ(x_i)/T))

with g the suspect model in eval mode (frozen, before any warm start). Only clean retain images
reach g, so the target holds the suspect's clean behaviour and nothing about a trigger; the
distance term still pushes every selected weight away from the poisoned start.

When the loop trains on the retain images themselves (or D3's ``distill_source="retain"``) the
targets are computed once for the whole set and looked up by index; when it changes them
(augmentation, overlay) the suspect scores every batch the loop makes. Measured (BENCHMARKS.md
"Twenty-ninth round"): scored on the default's overlaid batches — another image blended in at up
to 0.3, close to a Blended trigger's form — the suspect's answers carried Blended backdoors back
(20.98 % on a plain CNN with 500 images); taken on the plain images they did not, while keeping
3–8 accuracy points with 500 images on models without BatchNorm. Since the thirtieth round the
``default`` preset's rule runs it on such models, and since the thirty-first on every model ("Thirty-first
round": 1–2 points kept on models with BatchNorm), on the plain images, its weight scaled by the epochs a
run makes over the preset's 12 (``distox.defenses.d3.SOFT_TARGETS``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..metrics import logits


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample T² · KL(softmax(teacher/T) ‖ softmax(student/T)), shape (N,)."""
    t = float(temperature)
    log_p = F.log_softmax(teacher.float() / t, dim=1)
    log_q = F.log_softmax(student.float() / t, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1) * (t * t)


class SuspectTargets:
    """Soft targets from a frozen copy of the suspect model (taken when constructed), and what
    the training loop batches alongside the images (:attr:`loop_y`).

    ``cache=True``: the suspect's outputs on every retain image, computed once; the loop batches
    image *indices*, which :meth:`__call__` turns into labels and cached outputs.
    ``cache=False``: the loop batches labels, and the frozen copy scores each (augmented) batch."""

    def __init__(self, suspect: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 cache: bool) -> None:
        self.cache = bool(cache)
        if self.cache:
            self.table = logits(suspect, x, device=device).to(device)
            self.labels = y.to(device)
            self.loop_y = torch.arange(len(y))
            self.teacher = None
        else:
            self.table = self.labels = None
            self.loop_y = y
            self.teacher = copy.deepcopy(suspect).to(device).eval().requires_grad_(False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, suspect outputs) of the batch ``x`` whose loop targets are ``y``."""
        if self.cache:
            return self.labels[y], self.table[y]
        with torch.no_grad():
            return y, self.teacher(x).float()
