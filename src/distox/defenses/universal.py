"""Perturbed copies of the retain batch that D3's clean-loss bound must also hold under (options,
off in every preset): one perturbation shared by every image (:class:`UniversalPerturbation`,
``universal_radius``; BENCHMARKS.md "Twenty-second round"), or per image the perturbation that
fools the model being purified and the suspect alike (:class:`SharedAdversarialCopies`,
``shared_radius``; "Twenty-third round").

A backdoor trigger is a perturbation shared by every image that sends them all to one class
(BadNets' patch, Blended's overlay). D3 (Wei et al., ICCV 2025, Eq. "constrained form") bounds
the retain loss E[ℓ(f(x), y)] ≤ ε; with ``universal_radius`` r > 0 the bound is asked of the
retain images *and* of the same images under the shared perturbation δ that currently raises
that loss most, ‖δ‖∞ ≤ r · (the retain pixels' range):

    E[ℓ(f(x), y)] ≤ ε   and   E[ℓ(f(x + δ*), y)] ≤ ε,   δ* = argmax_δ E[ℓ(f(x + δ), y)].

δ* is followed as in universal adversarial training (Shafahi et al., AAAI 2020): one δ for the
whole run, one signed-gradient ascent step per optimiser step, taken from the same backward pass
that trains the weights (no extra pass: the perturbed images join the batch). Nothing here knows a
trigger, a target class or an attack: δ is fitted to the retain images and their labels only.
Where a backdoor survives the distance, it is the easiest universal shortcut the model has left,
which is what δ finds (BENCHMARKS.md "Thirteenth round": a universal perturbation fitted on the
suspect reaches the target class first on 6 of 9 models).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .sau import shared_pgd

#: Each step moves δ by this fraction of its radius (20 steps cross the whole box).
STEP_FRACTION = 0.1


@torch.no_grad()
def copies_error_rate(logits: torch.Tensor, y: torch.Tensor, copies: int) -> float:
    """The share of a batch's last ``copies`` rows (the perturbed copies that follow its own
    images) the model gets wrong; 0 when there are none."""
    if not copies:
        return 0.0
    return float((logits[-copies:].argmax(1) != y[-copies:]).float().mean())


class UniversalPerturbation:
    """One perturbation shared by every image, bounded in L∞ and kept inside the data's range.

    ``SIZE_KEY`` and ``ERROR_KEY`` name what D3's history records of it (:meth:`size`, :meth:`error_rate`).

    Args:
        reference: retain images (N, C, H, W) or any batch of them: sets δ's shape (one image's)
            and the range [low, high] its pixels, and every perturbed image, stay in.
        radius: the bound on ‖δ‖∞ as a fraction of high − low (> 0).
        step_fraction: each ascent step's size as a fraction of the bound.
        device: where δ lives (the reference's device if None).
    """

    SIZE_KEY, ERROR_KEY = "universal", "universal_error"

    def __init__(self, reference: torch.Tensor, radius: float, step_fraction: float = STEP_FRACTION,
                 device: torch.device | str | None = None) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be > 0; got {radius}")
        self.low, self.high = float(reference.min()), float(reference.max())
        self.bound = radius * (self.high - self.low)
        self.step_size = step_fraction * self.bound
        self.delta = torch.zeros((1, *reference.shape[1:]), dtype=reference.dtype,
                                 device=reference.device if device is None else device)
        self._live: torch.Tensor | None = None

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        """``x + δ`` clipped to the data's range, differentiable in δ (for :meth:`ascend`)."""
        # a fresh leaf each call: a step's gradient never adds to another pass's (SAM runs two)
        live = self.delta.detach().to(device=x.device, dtype=x.dtype).requires_grad_(True)
        self._live = live
        return (x + live).clamp(self.low, self.high)

    def batch_with_perturbed(self, x: torch.Tensor, y: torch.Tensor,
                             model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch followed by its perturbed copy, and the labels twice (``model``: unused;
        :class:`SharedAdversarialCopies` needs it)."""
        return torch.cat([x, self.perturb(x)]), torch.cat([y, y])

    @torch.no_grad()
    def ascend(self) -> bool:
        """One signed step of δ up the gradient the last backward pass left on it (the
        perturbed images' loss), projected back into the L∞ ball; False when there was none
        (no backward through :meth:`perturb` since the last step, or a non-finite gradient)."""
        live, self._live = self._live, None
        if live is None or live.grad is None or not bool(torch.isfinite(live.grad).all()):
            return False
        step = self.step_size * live.grad.sign().to(self.delta.device, self.delta.dtype)
        self.delta = (self.delta + step).clamp(-self.bound, self.bound)
        return True

    @staticmethod
    def error_rate(logits: torch.Tensor, y: torch.Tensor) -> float:
        """The share of the perturbed copies (the second half of a :meth:`batch_with_perturbed`
        batch) the model gets wrong."""
        return copies_error_rate(logits, y, len(y) - len(y) // 2)

    def size(self) -> float:
        """‖δ‖∞ as a fraction of the data's range (what the history records)."""
        spread = self.high - self.low
        return float(self.delta.abs().max()) / spread if spread else 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.delta = state["delta"].to(self.delta.device, self.delta.dtype).clone()


#: :class:`SharedAdversarialCopies`: signed-gradient steps per batch (SAU's reference takes 5; with two,
#: D3 takes about 6 × plain fine-tuning's time per epoch on small models, BENCHMARKS.md "Twenty-third
#: round") and each step's size as a fraction of the radius (from a uniform start, two half-radius steps
#: reach the ball's faces).
SHARED_STEPS = 2
SHARED_STEP_FRACTION = 0.5


class SharedAdversarialCopies:
    """Per image, a perturbation that the model being purified and the frozen suspect both
    misclassify, into the same class (SAU's shared adversarial examples, Wei et al., NeurIPS 2023,
    crafted by :func:`distox.defenses.sau.shared_pgd`), asked to keep the true label.

    SAU's argument: an adversarial example the backdoored model shares with the model being
    purified is where a surviving backdoor acts, so training the model to label those images
    correctly removes what is left of it; here they join D3's clean-loss bound after the batch's
    own images, E[ℓ(f(x), y)] ≤ ε and E[ℓ(f(x + δ_x), y)] ≤ ε (SAU's adversarial-training term,
    in place of its shared-risk term). Nothing here knows a trigger or a target class.

    Args:
        suspect: the model before purification (copied, frozen, in eval mode).
        reference: retain images (N, C, H, W): the range [low, high] every perturbed image stays in.
        radius: ‖δ‖∞ as a fraction of high − low (> 0).
        steps: signed-gradient steps per batch (:data:`SHARED_STEPS`).
        fraction: the share of each batch that gets a copy, its first ⌈fraction × size⌉ images
            (the loop shuffles the batches; 1: every image).
    """

    SIZE_KEY, ERROR_KEY = "shared_rate", "shared_error"

    def __init__(self, suspect: nn.Module, reference: torch.Tensor, radius: float, steps: int = SHARED_STEPS,
                 fraction: float = 1.0) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be > 0; got {radius}")
        self.suspect = copy.deepcopy(suspect).eval().requires_grad_(False)
        self.low, self.high = float(reference.min()), float(reference.max())
        self.bound = radius * (self.high - self.low)
        self.steps = int(steps)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
        self.fraction = float(fraction)
        self._copies = 0
        self.shared_rate = 0.0

    def batch_with_perturbed(self, x: torch.Tensor, y: torch.Tensor,
                             model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch followed by the shared adversarial copies of its first ⌈fraction × size⌉ images
        against ``model``, and their labels."""
        if model is None:
            raise ValueError("shared adversarial copies are crafted against the model being purified")
        k = math.ceil(self.fraction * len(x))
        xs, ys = x[:k].detach(), y[:k]
        attack = shared_pgd(model, self.suspect, xs, ys, radius=self.bound, step_size=SHARED_STEP_FRACTION * self.bound,
                            steps=self.steps, init="uniform", clip=(self.low, self.high))
        self.shared_rate, self._copies = float(attack.shared.float().mean()), k
        return torch.cat([x, xs + attack.delta]), torch.cat([y, ys])

    def error_rate(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        """The share of the last batch's copies (the rows after its plain images) the model gets wrong."""
        return copies_error_rate(logits, y, self._copies)

    def size(self) -> float:
        """The last batch's share of shared adversarial examples (what the history records)."""
        return self.shared_rate
