"""A pull of the weights D3's distance leaves out back toward the suspect's (a distox option, not in
the paper: D3's ``anchor``).

L2-SP (Li, Grandvalet and Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML 2018): when fine-tuning from trained weights, penalise their squared
distance from where they started instead of from zero, so that the features they compute stay
close to the starting model's. D3 (SPEC §1, Eq. 1) pushes the *selected* weights away from the
suspect; on a model without BatchNorm the default selects the classifier alone, and every other
weight follows whatever the restarted classifier's first, large losses ask of it — where the
accuracy goes (BENCHMARKS.md "Twenty-eighth round"). ``anchor`` adds to the loss

    α · Σ_l ‖W_l − W_l⁰‖² / ‖W_l⁰‖²

over the weight matrices and kernels (tensors of two or more dimensions) outside the distance,
each layer's drift measured relative to its own starting size so that one α means the same on
every layer of every model (no constant tuned to a weight's scale). Biases and normalisation
parameters stay free, as in L2-SP's own experiments. Its gradient on a weight is 2α(W − W⁰)/‖W⁰‖²:
with SGD at rate η a tensor of small norm oscillates once 2αη/‖W⁰‖² nears 2, so keep α small
(0.1–1 at the default's 0.03 ran stably on every study model).

Measured (BENCHMARKS.md "Twenty-ninth round", eleven models without BatchNorm): α 0.1 level with
the default, α 1 0.6 points more lost at 3,000 images and a little more removed — the features
have to move for D3's restarted classifier to re-fit — so it is off in every preset.

Reads the model's weights only.

Example:
    >>> pull = Anchor(model, leave_out=distance_weights, strength=1.0)
    >>> loss = loss + pull.penalty()
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class Anchor:
    """The squared relative drift of a model's weight tensors from their values at construction,
    scaled by ``strength`` (α above); tensors in ``leave_out``, of fewer than two dimensions or all
    zeros (no size to be relative to) are not pulled."""

    def __init__(self, model: nn.Module, leave_out: Iterable[torch.Tensor], strength: float) -> None:
        if not strength > 0:
            raise ValueError(f"strength must be > 0; got {strength!r}")
        left = {id(w) for w in leave_out}
        self.strength = float(strength)
        self.weights: list[torch.Tensor] = []
        self.start: list[torch.Tensor] = []
        self.inverse_sizes: list[float] = []
        for w in model.parameters():
            if not w.requires_grad or w.dim() < 2 or id(w) in left:
                continue
            size = float(w.detach().pow(2).sum())
            if size == 0.0:
                continue
            self.weights.append(w)
            self.start.append(w.detach().clone())
            self.inverse_sizes.append(1.0 / size)

    def squared_drifts(self) -> list[torch.Tensor]:
        """‖W − W⁰‖² / ‖W⁰‖² per pulled tensor."""
        return [s * (w - w0).pow(2).sum() for w, w0, s in zip(self.weights, self.start, self.inverse_sizes)]

    def penalty(self) -> torch.Tensor:
        """α · Σ ‖W − W⁰‖² / ‖W⁰‖² (0 when nothing is pulled)."""
        if not self.weights:
            return torch.zeros(())
        return self.strength * sum(self.squared_drifts())

    @torch.no_grad()
    def drift(self) -> float:
        """The largest relative drift ‖W − W⁰‖ / ‖W⁰‖ over the pulled tensors (0 when none)."""
        return max((float(d) ** 0.5 for d in self.squared_drifts()), default=0.0)
