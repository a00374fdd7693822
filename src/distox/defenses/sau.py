"""SAU — Shared Adversarial Unlearning (Wei et al., "Shared Adversarial Unlearning: Backdoor
Mitigation by Unlearning Shared Adversarial Examples", NeurIPS 2023), SPEC §4.

Per batch of retain images (x, y), with f the model being purified and f₀ a frozen copy of
the suspect model:

1. **Shared PGD** (maximisation): an L∞ perturbation δ, ‖δ‖∞ ≤ r (r = 0.2), initialised on the
   boundary, updated ``steps`` (5) times by δ ← Π(δ − a·sign ∇_δ J) (a = 0.2) with

       J = β1 · L_adv + β2 · L_share
       L_adv   = −[Σ_{i: f(x_i+δ) = f(x_i)} CE(f(x_i+δ), y_i) + Σ_{i: f₀(x_i+δ) = f₀(x_i)} CE(f₀(x_i+δ), y_i)] / (2N)
       L_share = Σ_{i not shared} JS(softmax f(x_i+δ) ‖ softmax f₀(x_i+δ)) / N

   (β1 = 0.01, β2 = 1): raise the loss of both models on samples neither fools yet, and pull
   the two models' predictions together on samples not yet *shared* (fooled by both into the
   same label). Both models are in eval mode while crafting; parameter gradients are never
   touched (``torch.autograd.grad`` with respect to δ only).
2. **Unlearning** (minimisation) on w_clean·CE(f(x), y) + w_at·CE(f(x+δ), y) + w_shared·L_sar with

       L_sar = Σ_{i ∈ P} −log(1 − clamp(p_f(ŷ₀,i | x_i+δ), 0.001, 0.999)) / N,
       P = {i : ŷ₀,i ≠ y_i and ŷ₀,i ≠ f₀(x_i)},  ŷ₀ = f₀(x+δ)

   i.e. the batch mean with samples outside P contributing 0, as in the reference code
   (w_clean = 1, w_at = 0 — adversarial training off, w_shared = 1).

Reference defaults (BackdoorBench ``defense/sau.py`` + ``config/defense/sau/config.yaml``):
Adam lr 1e-4, betas (0.9, 0.999), no weight decay, AMSGrad on, batch 256, 100 epochs, retain 5 %,
no augmentation, model in eval mode during the update (BatchNorm frozen; ``train_mode=True``
lets BatchNorm train), PGD init ``max`` (δ = +r everywhere).

Perturbation space: the reference denormalises its inputs, adds δ in [0, 1] pixel space and
renormalises, so r = 0.2 is in pixel units there too; distox models normalise internally, so δ
is added to the [0, 1] image directly — the same space. Differences, on purpose: distox clips
x + δ to [0, 1] (``clip=True``; the reference's clip is commented out, ``clip=False`` restores
that); the PGD stops as soon as every sample is shared instead of after one more step; the
learning rate follows the shared cosine schedule (SPEC §4) whereas the reference builds a
cosine scheduler but never steps it (``scheduler="constant"`` reproduces that).

Example:
    >>> result = SAU(epochs=20)(suspect_model, retain_split)
    >>> result.model   # purified copy; result.history: per-epoch losses and shared rate
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..training import Checkpoint, TrainState, train
from ..utils import eval_mode
from .base import Defense, DefenseError
from .registry import register

PGD_INITS = ("max", "min", "sign", "zero", "uniform")


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor, floor: float = 1e-8) -> torch.Tensor:
    """Per-sample Jensen–Shannon divergence (natural log) between two softmax distributions."""
    p = F.softmax(logits_a.float(), dim=1).clamp_min(floor)
    q = F.softmax(logits_b.float(), dim=1).clamp_min(floor)
    m = 0.5 * (p + q)
    return 0.5 * (p * (p.log() - m.log())).sum(1) + 0.5 * (q * (q.log() - m.log())).sum(1)


def init_perturbation(x: torch.Tensor, radius: float, init: str) -> torch.Tensor:
    """Starting δ: ``max`` +r (reference), ``min`` −r, ``sign`` ±r at random, ``zero``,
    ``uniform`` U(−r, r). Random draws use the global torch generator (seeded by the loop)."""
    if init == "max":
        return torch.full_like(x, radius)
    if init == "min":
        return torch.full_like(x, -radius)
    if init == "sign":
        return radius * (torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1)
    if init == "zero":
        return torch.zeros_like(x)
    if init == "uniform":
        return (torch.rand_like(x) * 2 - 1) * radius
    raise DefenseError(f"pgd_init must be one of {PGD_INITS}; got {init!r}")


def project(delta: torch.Tensor, x: torch.Tensor, radius: float, clip: bool | tuple[float, float]) -> torch.Tensor:
    """Onto the L∞ ball of ``radius`` and, with ``clip``, so that x + δ stays in [0, 1] (or in
    ``clip``'s (low, high) when it is a pair: images in another range)."""
    delta = delta.clamp(-radius, radius)
    if clip is not False:
        low, high = (0.0, 1.0) if clip is True else clip
        delta = (x + delta).clamp(low, high) - x
    return delta


@dataclass
class SharedAttack:
    """Outcome of :func:`shared_pgd` at the returned δ (labels are arg-max predictions)."""

    delta: torch.Tensor
    clean: torch.Tensor       # f(x)
    clean_ref: torch.Tensor   # f₀(x)
    label: torch.Tensor       # f(x + δ)
    label_ref: torch.Tensor   # f₀(x + δ)
    fooled: torch.Tensor      # f(x + δ) ≠ f(x)
    fooled_ref: torch.Tensor  # f₀(x + δ) ≠ f₀(x)
    shared: torch.Tensor      # both fooled, into the same label
    steps: int                # gradient steps taken


def _shared_status(model: nn.Module, ref: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                   clean: torch.Tensor, clean_ref: torch.Tensor, beta1: float, beta2: float):
    logits, logits_ref = model(x_adv), ref(x_adv)
    label, label_ref = logits.argmax(1), logits_ref.argmax(1)
    fooled, fooled_ref = label != clean, label_ref != clean_ref
    shared = fooled & fooled_ref & (label == label_ref)
    n = len(y)
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    ce_ref = F.cross_entropy(logits_ref.float(), y, reduction="none")
    adv = -((ce * (~fooled)).sum() + (ce_ref * (~fooled_ref)).sum()) / (2 * n)
    share = (js_divergence(logits, logits_ref) * (~shared)).sum() / n
    return beta1 * adv + beta2 * share, label, label_ref, fooled, fooled_ref, shared


def shared_pgd(model: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               radius: float = 0.2, step_size: float = 0.2, steps: int = 5, beta1: float = 0.01,
               beta2: float = 1.0, init: str = "max", clip: bool | tuple[float, float] = True) -> SharedAttack:
    """Craft shared adversarial perturbations against ``model`` (f) and ``ref`` (f₀) jointly.

    Signed-gradient descent on J = β1·L_adv + β2·L_share (module docstring), projected onto
    ‖δ‖∞ ≤ ``radius`` (and x + δ ∈ [0, 1] with ``clip``); stops early once every sample is
    shared. Both models run in eval mode; their parameter ``.grad`` are left untouched.

    Args:
        model, ref: the current and the frozen original classifier (images in [0, 1]).
        x, y: images (N, C, H, W) and true labels (N,).
        radius, step_size, steps, beta1, beta2, init, clip: see :class:`SAU` (``clip`` may also be
            the images' (low, high) range).
    """
    with eval_mode(model, ref):
        x = x.detach()
        with torch.no_grad():
            clean, clean_ref = model(x).argmax(1), ref(x).argmax(1)
        delta = project(init_perturbation(x, radius, init), x, radius, clip)
        taken = 0
        while True:
            delta.requires_grad_(taken < steps)
            with torch.set_grad_enabled(taken < steps):
                loss, label, label_ref, fooled, fooled_ref, shared = _shared_status(
                    model, ref, x + delta, y, clean, clean_ref, beta1, beta2)
            if taken == steps or bool(shared.all()):
                break
            (grad,) = torch.autograd.grad(loss, delta)
            delta = project(delta.detach() - step_size * grad.sign(), x, radius, clip)
            taken += 1
    return SharedAttack(delta.detach(), clean, clean_ref, label.detach(), label_ref.detach(), fooled.detach(),
                        fooled_ref.detach(), shared.detach(), taken)


def shared_adversarial_risk(logits_adv: torch.Tensor, y: torch.Tensor, label_ref_adv: torch.Tensor,
                            label_ref_clean: torch.Tensor, p_min: float = 0.001,
                            p_max: float = 0.999) -> tuple[torch.Tensor, torch.Tensor]:
    """L_sar = Σ_{i ∈ P} −log(1 − clamp(p_f(ŷ₀,i | x_i + δ), p_min, p_max)) / N.

    P = samples whose f₀ label on the perturbed image ŷ₀ differs from the true label and from
    f₀'s clean prediction ("potential poison"); N the batch size. Returns (L_sar, P).
    """
    potential = (label_ref_adv != y) & (label_ref_adv != label_ref_clean)
    prob = F.softmax(logits_adv.float(), dim=1).gather(1, label_ref_adv.view(-1, 1)).squeeze(1)
    terms = -torch.log1p(-prob.clamp(p_min, p_max))
    return (terms * potential).sum() / len(y), potential


@register
class SAU(Defense):
    """Shared Adversarial Unlearning.

    Args:
        radius: L∞ radius r of the shared perturbation, in [0, 1] pixel units (0.2).
        step_size: PGD step a (0.2).
        pgd_steps: PGD steps per batch (5).
        pgd_init: ``max`` (δ = +r, reference), ``min``, ``sign`` (random ±r), ``zero``, ``uniform``.
        beta1: β1, weight of the adversarial (both-models CE) term while crafting (0.01).
        beta2: β2, weight of the JS "shared" term while crafting (1.0).
        clean_weight: weight of the clean CE in the update (1.0).
        at_weight: weight of the adversarial-training CE on x + δ (0.0: off, as the reference).
        shared_weight: weight of the shared-adversarial risk L_sar (1.0).
        p_min, p_max: clamp of p_f(ŷ₀ | x + δ) inside L_sar (0.001, 0.999).
        clip: keep x + δ in [0, 1] (True; the reference does not clip).
        train_mode: BatchNorm in train mode during the update (False: frozen, as the reference).
        betas: Adam's (0.9, 0.999). weight_decay: 0.0. amsgrad: True (the reference's Adam).
        scheduler: ``cosine`` (SPEC §4) or ``constant`` (what the reference effectively runs).
        epochs, batch_size, seed: see :class:`~distox.defenses.base.Defense` (100, 256, 0).
        lr: Adam learning rate (1e-4). augment: random crop + flip (False, as the reference).
    """

    name = "sau"

    def __init__(self, radius: float = 0.2, step_size: float = 0.2, pgd_steps: int = 5,
                 pgd_init: str = "max", beta1: float = 0.01, beta2: float = 1.0,
                 clean_weight: float = 1.0, at_weight: float = 0.0, shared_weight: float = 1.0,
                 p_min: float = 0.001, p_max: float = 0.999, clip: bool = True,
                 train_mode: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, amsgrad: bool = True, scheduler: str = "cosine",
                 lr: float = 1e-4, augment: bool = False, **kwargs: Any) -> None:
        super().__init__(lr=lr, augment=augment, **kwargs)
        if not radius > 0:
            raise DefenseError(f"radius must be > 0; got {radius}")
        if not step_size > 0:
            raise DefenseError(f"step_size must be > 0; got {step_size}")
        if int(pgd_steps) < 1:
            raise DefenseError(f"pgd_steps must be >= 1; got {pgd_steps}")
        if pgd_init not in PGD_INITS:
            raise DefenseError(f"pgd_init must be one of {PGD_INITS}; got {pgd_init!r}")
        for key, val in (("beta1", beta1), ("beta2", beta2), ("clean_weight", clean_weight),
                         ("at_weight", at_weight), ("shared_weight", shared_weight),
                         ("weight_decay", weight_decay)):
            if not val >= 0:
                raise DefenseError(f"{key} must be >= 0; got {val}")
        if not 0 < p_min < p_max < 1:
            raise DefenseError(f"need 0 < p_min < p_max < 1; got p_min={p_min}, p_max={p_max}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise DefenseError(f"betas must be two numbers in [0, 1); got {betas}")
        if scheduler not in ("cosine", "constant"):
            raise DefenseError(f"scheduler must be 'cosine' or 'constant'; got {scheduler!r}")
        self.radius, self.step_size, self.pgd_steps = float(radius), float(step_size), int(pgd_steps)
        self.pgd_init, self.beta1, self.beta2 = pgd_init, float(beta1), float(beta2)
        self.clean_weight, self.at_weight = float(clean_weight), float(at_weight)
        self.shared_weight, self.p_min, self.p_max = float(shared_weight), float(p_min), float(p_max)
        self.clip, self.train_mode = bool(clip), bool(train_mode)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay, self.amsgrad, self.scheduler = float(weight_decay), bool(amsgrad), scheduler

    def craft(self, model: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor) -> SharedAttack:
        """Shared adversarial perturbations for one batch with this defense's settings."""
        return shared_pgd(model, ref, x, y, radius=self.radius, step_size=self.step_size,
                          steps=self.pgd_steps, beta1=self.beta1, beta2=self.beta2,
                          init=self.pgd_init, clip=self.clip)

    def loss(self, model: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Craft δ for the batch, then the unlearning loss of ``model`` (the loop's objective)."""
        attack = self.craft(model, ref, x, y)
        x_adv = x + attack.delta
        logits, logits_adv = model(torch.cat([x, x_adv])).split(len(x))
        clean = F.cross_entropy(logits, y)
        at = F.cross_entropy(logits_adv, y)
        # f₀ is frozen: its labels at x and x + δ were computed while crafting
        sar, potential = shared_adversarial_risk(logits_adv, y, attack.label_ref, attack.clean_ref,
                                                 self.p_min, self.p_max)
        total = self.clean_weight * clean + self.at_weight * at + self.shared_weight * sar
        return total, {"loss": float(total.detach()), "clean_ce": float(clean.detach()),
                       "shared_risk": float(sar.detach()), "shared_rate": float(attack.shared.float().mean()),
                       "potential_poison_rate": float(potential.float().mean())}

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        ref = copy.deepcopy(model).to(device).eval()
        ref.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=self.betas,
                                     weight_decay=self.weight_decay, amsgrad=self.amsgrad)
        config = self.loop_config(retain, optimizer="adam", betas=self.betas, weight_decay=self.weight_decay,
                                  scheduler=self.scheduler, bn_eval=not self.train_mode)
        return train(model, retain.x, retain.y, config, params=params, optimizer=optimizer,
                     objective=lambda m, x, y: self.loss(m, ref, x, y),
                     on_epoch_end=evaluator, checkpoint=checkpoint, device=device, progress=progress,
                     desc=self.name)
