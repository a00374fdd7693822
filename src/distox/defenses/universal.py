"""Perturbed copies of the retain batch that D3's clean-loss bound must also hold under (options; the
``default`` preset runs the crafted-once copies, BENCHMARKS.md "Twenty-fifth round"): one perturbation shared by every image (:class:`UniversalPerturbation`,
``universal_radius``; BENCHMARKS.md "Twenty-second round"), or per image the perturbation that
fools the model being purified and the suspect alike (:class:`SharedAdversarialCopies`,
``shared_radius``; "Twenty-third round"), or those crafted once against the suspect before any weight
moves (:class:`CraftedOnceCopies`, ``shared_schedule="once"``; "Twenty-fourth round").

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
import torch.nn.functional as F
from torch import nn

from ..utils import eval_mode
from .sau import project, shared_pgd

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
    #: the loop batches labels (not image indices: nothing is looked up per image)
    loop_y: torch.Tensor | None = None

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


class CopiesOfAShare:
    """What both kinds of adversarial copies share: a copy for the first ⌈fraction × size⌉ images of
    each batch, joined after the batch's own images; the history records the share of them that fool
    (``shared_rate``, :meth:`size`) and the share the model being purified gets wrong (:meth:`error_rate`).

    Args:
        radius: ‖δ‖∞ as a fraction of the retain pixels' range (> 0; checked here, used by the subclass).
        fraction: the share of each batch that gets a copy (the loop shuffles the batches; 1: every image).
    """

    SIZE_KEY, ERROR_KEY = "shared_rate", "shared_error"
    #: what the loop batches beside the images: None for the labels, or the image indices a subclass looks up
    loop_y: torch.Tensor | None = None

    def __init__(self, radius: float, fraction: float) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be > 0; got {radius}")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
        self.fraction = float(fraction)
        self.shared_rate = 0.0
        self._copies = 0

    def take_share(self, batch_size: int) -> int:
        """How many of a batch of ``batch_size`` images get a copy (remembered for :meth:`error_rate`)."""
        self._copies = math.ceil(self.fraction * batch_size)
        return self._copies

    def error_rate(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        """The share of the last batch's copies (the rows after its plain images) the model gets wrong."""
        return copies_error_rate(logits, y, self._copies)

    def size(self) -> float:
        """The share of the last copies that fool the suspect — per batch, the model being purified too and
        into the same class (what the history records)."""
        return self.shared_rate


class SharedAdversarialCopies(CopiesOfAShare):
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
        fraction: see :class:`CopiesOfAShare`.
    """

    def __init__(self, suspect: nn.Module, reference: torch.Tensor, radius: float, steps: int = SHARED_STEPS,
                 fraction: float = 1.0) -> None:
        super().__init__(radius, fraction)
        self.suspect = copy.deepcopy(suspect).eval().requires_grad_(False)
        self.low, self.high = float(reference.min()), float(reference.max())
        self.bound = radius * (self.high - self.low)
        self.steps = int(steps)

    def batch_with_perturbed(self, x: torch.Tensor, y: torch.Tensor,
                             model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch followed by the shared adversarial copies of its first ⌈fraction × size⌉ images
        against ``model``, and their labels."""
        if model is None:
            raise ValueError("shared adversarial copies are crafted against the model being purified")
        k = self.take_share(len(x))
        xs, ys = x[:k].detach(), y[:k]
        attack = shared_pgd(model, self.suspect, xs, ys, radius=self.bound, step_size=SHARED_STEP_FRACTION * self.bound,
                            steps=self.steps, init="uniform", clip=(self.low, self.high))
        self.shared_rate = float(attack.shared.float().mean())  # the last batch's share of shared examples
        return torch.cat([x, xs + attack.delta]), torch.cat([y, ys])


#: ``shared_schedule``: ``"batch"`` crafts each batch's copies against the model as it is then
#: (:class:`SharedAdversarialCopies`); ``"once"`` crafts every retain image's copy before any weight
#: moves (:class:`CraftedOnceCopies`).
SHARED_SCHEDULES = ("batch", "once")


def suspect_adversarial_images(suspect: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float, steps: int,
                               low: float, high: float, generator: torch.Generator, device: torch.device | str = "cpu",
                               batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, ``steps`` signed-gradient steps up the suspect's cross-entropy from a uniform start
    inside ‖δ‖∞ ≤ ``bound`` (each step :data:`SHARED_STEP_FRACTION` of it), kept in [low, high].

    The suspect runs on ``device``, ``batch_size`` images at a time. Returns the perturbed images (on x's
    device, in its dtype) and whether the suspect misclassifies each. The start is drawn from ``generator``
    on the CPU (the same images on every device and on a resume)."""
    images, wrong = [], []
    step = SHARED_STEP_FRACTION * bound
    with eval_mode(suspect):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            start = (torch.rand(xb.shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound
            delta = project(start.to(xb.device, xb.dtype), xb, bound, (low, high))
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = F.cross_entropy(suspect(xb + delta).float(), yb)
                (grad,) = torch.autograd.grad(loss, delta)
                delta = project(delta.detach() + step * grad.sign(), xb, bound, (low, high))
            with torch.no_grad():
                wrong.append((suspect(xb + delta).argmax(1) != yb).cpu())
            images.append((xb + delta).detach().to(x.device))
    return torch.cat(images), torch.cat(wrong)


#: :func:`escalation_radii`: the ladder's step, as a fraction of the first radius
ESCALATION_STEP = 1 / 3


def escalation_radii(radius: float, escalate: float) -> list[float]:
    """The radii a copy is crafted at in turn (:class:`CraftedOnceCopies` ``escalate``): ``radius`` × (1, 4/3,
    5/3, 2, …) up to ``radius`` × ``escalate`` (only ``radius`` when ``escalate`` is 1)."""
    if not escalate >= 1:
        raise ValueError(f"escalate must be >= 1; got {escalate}")
    steps = math.floor((escalate - 1) / ESCALATION_STEP + 1e-9)
    return [radius * (1 + k * ESCALATION_STEP) for k in range(steps + 1)]


class CraftedOnceCopies(CopiesOfAShare):
    """``shared_schedule="once"``: every retain image's adversarial copy crafted once, before any weight
    moves, against the suspect alone — at that moment the model being purified *is* the suspect, so
    these are SAU's shared adversarial examples (Wei et al., NeurIPS 2023) of the run's first step —
    then asked to keep their true labels under D3's bound at every step, as
    :class:`SharedAdversarialCopies` asks of copies it crafts again for every batch.

    The crafting costs ``steps`` forward and backward passes over the retain images once, instead of
    two models' per batch (BENCHMARKS.md "Twenty-fourth round"). The training loop batches image
    indices (:attr:`loop_y`), which :meth:`batch_with_perturbed` turns into labels and copies; a copy
    is the unaltered image's, whatever augmentation the loop applies to the image itself. The copies are
    kept where the retain images are (the CPU, as a rule), each batch's moved to the model's device.

    Args:
        suspect: the model before purification, on ``device`` (its weights are read, not changed; its
            mode is restored after).
        x, y: the retain images (N, C, H, W) and labels; [x.min(), x.max()] is the range copies stay in.
        radius: ‖δ‖∞ as a fraction of that range (> 0).
        steps: signed-gradient steps per image.
        fraction: see :class:`CopiesOfAShare`.
        device: where the suspect runs while they are crafted.
        seed: seeds the crafting's uniform start.
        escalate: 1 (one radius for every image) or the largest radius as a multiple of ``radius`` (> 1):
            an image whose copy does not fool the suspect gets a new one at the next radius of
            ``radius`` × (1, 4/3, 5/3, 2, …) up to ``radius`` × ``escalate``, each image's copy the first one
            that fools (:func:`escalation_radii`). Under D3's bound relu(CE − ε) a copy the suspect already
            labels right adds little or nothing; the ladder gives more images a copy that does, at the least
            perturbation on it that fools, and costs crafting only for the images not yet fooled.
            :attr:`fooled_by_radius` records the share fooled after each radius.
    """

    def __init__(self, suspect: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float, steps: int = SHARED_STEPS,
                 fraction: float = 1.0, device: torch.device | str = "cpu", seed: int = 0,
                 escalate: float = 1.0) -> None:
        super().__init__(radius, fraction)
        low, high = float(x.min()), float(x.max())
        generator = torch.Generator().manual_seed(int(seed))
        first, *larger = escalation_radii(radius, escalate)
        images, wrong = suspect_adversarial_images(suspect, x, y, first * (high - low), int(steps), low, high,
                                                   generator, device)
        self.fooled_by_radius: dict[float, float] = {round(first, 6): float(wrong.float().mean())}
        for r in larger:  # again, at the larger radius, for the images whose copy does not fool yet
            left = (~wrong).nonzero().flatten()
            if len(left) == 0:
                break
            again, fooled = suspect_adversarial_images(suspect, x[left], y[left], r * (high - low), int(steps),
                                                       low, high, generator, device)
            images[left], wrong[left] = again.to(images.dtype), fooled
            self.fooled_by_radius[round(r, 6)] = float(wrong.float().mean())
        self.images = images
        self.labels = y
        self.loop_y = torch.arange(len(y))
        self.shared_rate = float(wrong.float().mean())  # fixed: the copies are crafted once

    def batch_with_perturbed(self, x: torch.Tensor, index: torch.Tensor,
                             model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch (whose loop targets are image indices) followed by the copies of its first
        ⌈fraction × size⌉ images, and their labels (``model``: unused)."""
        index = index.to(self.labels.device)
        y = self.labels[index].to(x.device)
        k = self.take_share(len(x))
        return torch.cat([x, self.images[index[:k]].to(x.device, x.dtype)]), torch.cat([y, y[:k]])
