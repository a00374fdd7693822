"""i-BAU — Implicit Backdoor Adversarial Unlearning (Zeng et al., "Adversarial Unlearning of
Backdoors via Implicit Hypergradient", ICLR 2022).

The minimax problem min_θ L_out(δ*(θ), θ) with δ*(θ) = argmin_δ L_in(δ, θ), where δ is one
*universal* perturbation of shape (1, C, H, W) and, on a batch (x, y) of retain images,

    L_in(δ, θ)  = −CE(f_θ(x + δ), y) + c·‖δ‖₂²                  (c = 0.001: δ maximises the loss)
    L_out(δ, θ) = CE(f_θ(x'), y),  x' = x with δ added to a random ``portion`` of the batch.

Each round (one epoch of the shared training loop, :func:`distox.training.train`):

1. **Inner maximisation** (before the epoch, ``on_epoch_start``): δ starts at 0 and takes one
   SGD step (lr 10) per batch of a shuffled pass over the retain set on
   −CE(f(x + δ), ŷ) + c·‖δ‖₂², ŷ = f(x) the model's own predictions (:func:`universal_perturbation`).
2. **Outer step** per batch: the implicit hypergradient dL_out/dθ at the round's δ by the
   fixed-point method (hypertorch, K = 5; :func:`fixed_point_hypergradient`), then one Adam step.

The model is in eval mode throughout (BatchNorm statistics frozen), as the reference.

Defaults (BackdoorBench ``defense/i-bau.py`` and ``config/defense/i-bau/config.yaml``): 5 rounds
(``epochs``), batch 256, Adam with AMSGrad, lr 1e-4, betas (0.9, 0.999), no weight decay, K 5,
fixed-point step 0.1, δ lr 10, c 0.001, portion 0.01, augmented retain set, constant learning
rate (the reference builds a cosine scheduler and never steps it; ``scheduler="cosine"``
anneals). The original ``YiZeng623/I-BAU`` uses lr 1e-3, plain Adam, batch 100, no augmentation.

Differences from BackdoorBench, on purpose (its bugs fixed):

- **Device.** Everything lives on the model's device; the reference hard-codes
  ``device='cuda'`` in its outer loss, so it cannot run on a CPU.
- **Perturbed images per batch:** max(1, round(portion·B)). The reference's int(0.01·B)
  perturbs *no* image for a batch under 100, which silently turns i-BAU into fine-tuning.
- **Inner loss on the current batch.** The reference evaluates L_in on the first cached batch
  only; the shared loop reshuffles (and re-augments) every round, so there is no fixed first
  batch, and the current batch is the unbiased stochastic estimate of the inner objective.
- **Pixel space.** δ is added to the [0, 1] image (distox models normalise internally), as in
  the original I-BAU, whose constants (lr 10, c 0.001) were set for [0, 1] images;
  BackdoorBench adds δ in normalised space.
- Optional, off by default as in both references: an L2 bound ``radius`` on δ (the
  reference's commented-out projection used 10) and ``clip`` (keep x + δ in [0, 1]).

Example:
    >>> result = IBAU(epochs=5)(suspect_model, retain_split)
    >>> result.history[-1]["delta_norm"]   # ‖δ‖₂ of the last round's universal perturbation
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..training import Batches, Checkpoint, TrainState, augment_batch, train
from ..utils import eval_mode
from .base import Defense, DefenseError
from .registry import register


def fixed_point_hypergradient(outer: Callable[[torch.Tensor], torch.Tensor],
                              inner: Callable[[torch.Tensor], torch.Tensor], delta: torch.Tensor,
                              params: Sequence[torch.Tensor], *, k: int = 5, step: float = 0.1,
                              tol: float = 1e-10) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The implicit hypergradient d/dθ L_out(δ*(θ), θ) by the fixed-point method (hypertorch's
    ``fixed_point``, as i-BAU and BackdoorBench use it; not conjugate gradient).

    δ* is taken as a fixed point of Φ(δ, θ) = δ − ``step``·∇_δ L_in(δ, θ). With g_δ, g_θ the
    partial gradients of L_out at ``delta``, v starts at 0 and is iterated ``k`` times (or until
    ‖Δv‖ < ``tol``) as v ← (∂Φ/∂δ)ᵀ v + g_δ, a truncated Neumann series
    v ≈ Σ_{j<k} (I − step·H_δδ)ʲ g_δ; the result is g_θ + (∂Φ/∂θ)ᵀ v. As k → ∞ it tends to
    the exact implicit gradient g_θ − ∂²L_in/∂θ∂δ · H_δδ⁻¹ g_δ.

    Args:
        outer: δ ↦ L_out(δ, θ), computed from ``params`` (scalar).
        inner: δ ↦ L_in(δ, θ), computed from ``params`` (scalar).
        delta: where to evaluate (≈ δ*(θ)); not modified.
        params: θ, tensors with ``requires_grad``.
        k, step, tol: fixed-point iterations, the step of Φ, the early-stop tolerance.

    Returns:
        (L_out at ``delta``, detached; one gradient per ``params`` entry, zeros where unused).
    """
    params = list(params)
    d = delta.detach().clone().requires_grad_(True)
    value = outer(d)
    grads = torch.autograd.grad(value, [d, *params], allow_unused=True)
    g_d = grads[0] if grads[0] is not None else torch.zeros_like(d)
    g_p = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads[1:], params)]
    (grad_in,) = torch.autograd.grad(inner(d), d, create_graph=True)
    phi = d - step * grad_in
    v = torch.zeros_like(d)
    for _ in range(int(k)):
        (jv,) = torch.autograd.grad(phi, d, grad_outputs=v, retain_graph=True)
        v_next = jv + g_d
        converged = float(torch.linalg.vector_norm(v_next - v)) < tol
        v = v_next
        if converged:
            break
    extra = torch.autograd.grad(phi, params, grad_outputs=v, allow_unused=True)
    hyper = [g if e is None else g + e for g, e in zip(g_p, extra)]
    return value.detach(), hyper


def add_perturbation(x: torch.Tensor, delta: torch.Tensor, clip: bool) -> torch.Tensor:
    """x + δ (broadcast over the batch), clipped to [0, 1] with ``clip``."""
    out = x + delta
    return out.clamp(0.0, 1.0) if clip else out


def project_l2(delta: torch.Tensor, radius: float | None) -> torch.Tensor:
    """δ scaled onto the L2 ball of ``radius`` when outside it (None: unchanged)."""
    if radius is None:
        return delta
    norm = float(torch.linalg.vector_norm(delta))
    return delta * (radius / norm) if norm > radius else delta


def universal_perturbation(model: nn.Module, batches: Iterable[torch.Tensor], shape: Sequence[int], *,
                           lr: float = 10.0, penalty: float = 0.001, radius: float | None = None,
                           clip: bool = False) -> torch.Tensor:
    """i-BAU's inner maximisation: δ = 0, then for each batch x one SGD step (``lr``) on
    −CE(f(x + δ), ŷ) + ``penalty``·‖δ‖₂² with ŷ = f(x), projected onto the L2 ball of ``radius``
    (None: no bound, as the reference). ``model`` runs in eval mode; its gradients are untouched."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else "cpu"
    delta = torch.zeros(tuple(shape), device=device)
    with eval_mode(model):
        for xb in batches:
            with torch.no_grad():
                pseudo = model(xb).argmax(1)
            d = delta.requires_grad_(True)
            loss = -F.cross_entropy(model(add_perturbation(xb, d, clip)), pseudo) + penalty * d.pow(2).sum()
            (g,) = torch.autograd.grad(loss, d)
            delta = project_l2(delta.detach() - lr * g, radius)
    return delta.detach()


@register
class IBAU(Defense):
    """Implicit Backdoor Adversarial Unlearning: unlearn a universal adversarial perturbation
    by implicit hypergradient steps (module docstring: algorithm, defaults, fixes).

    Args:
        k: fixed-point iterations K of the hypergradient (5).
        inner_lr: step of the fixed-point map Φ(δ) = δ − inner_lr·∇_δ L_in (0.1).
        delta_lr: SGD learning rate of the universal perturbation (10).
        penalty: c, weight of ‖δ‖₂² in the inner loss (0.001).
        portion: fraction of each batch that receives δ in the outer loss (0.01, at least 1 image).
        tol: early stop of the fixed-point iterations (1e-10).
        radius: L2 bound of δ (None: unbounded, as the reference).
        clip: keep x + δ in [0, 1] (False, as the reference).
        betas, weight_decay, amsgrad: the outer Adam's ((0.9, 0.999), 0.0, True).
        scheduler: ``constant`` (what the reference runs) or ``cosine``.
        epochs: rounds (5). lr: outer Adam learning rate (1e-4). batch_size (256), augment
            (True), flip, seed: see :class:`~distox.defenses.base.Defense`.
    """

    name = "i-bau"

    def __init__(self, k: int = 5, inner_lr: float = 0.1, delta_lr: float = 10.0, penalty: float = 0.001,
                 portion: float = 0.01, tol: float = 1e-10, radius: float | None = None, clip: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, amsgrad: bool = True,
                 scheduler: str = "constant", epochs: int = 5, lr: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(epochs=epochs, lr=lr, **kwargs)
        if int(k) < 1:
            raise DefenseError(f"k must be >= 1; got {k}")
        for key, val in (("inner_lr", inner_lr), ("delta_lr", delta_lr)):
            if not val > 0:
                raise DefenseError(f"{key} must be > 0; got {val}")
        if not (penalty >= 0 and tol >= 0 and weight_decay >= 0):
            raise DefenseError(f"penalty, tol and weight_decay must be >= 0; got {penalty}, {tol}, {weight_decay}")
        if not 0 < portion <= 1:
            raise DefenseError(f"portion must be in (0, 1]; got {portion}")
        if radius is not None and not radius > 0:
            raise DefenseError(f"radius must be > 0 or None; got {radius}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise DefenseError(f"betas must be two numbers in [0, 1); got {betas}")
        if scheduler not in ("cosine", "constant"):
            raise DefenseError(f"scheduler must be 'cosine' or 'constant'; got {scheduler!r}")
        self.k, self.inner_lr, self.delta_lr, self.penalty = int(k), float(inner_lr), float(delta_lr), float(penalty)
        self.portion, self.tol, self.clip = float(portion), float(tol), bool(clip)
        self.radius = None if radius is None else float(radius)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay, self.amsgrad, self.scheduler = float(weight_decay), bool(amsgrad), scheduler

    def perturbation(self, model: nn.Module, retain: ImageSplit, epoch: int,
                     device: torch.device | str) -> torch.Tensor:
        """The universal perturbation of round ``epoch``: one shuffled (and, with ``augment``,
        augmented) pass over ``retain`` from a generator seeded by (seed, epoch), so that a
        resumed run crafts the same δ."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + int(epoch))
        aug = self.augmentation(retain)
        x, y = retain.x.to(device), retain.y.to(device)

        def batches() -> Iterable[torch.Tensor]:
            for xb, _ in Batches(x, y, self.batch_size, generator=gen):
                yield augment_batch(xb, gen, aug.crop_padding, aug.flip) if self.augment else xb

        return universal_perturbation(model, batches(), (1, *retain.x.shape[1:]), lr=self.delta_lr,
                                      penalty=self.penalty, radius=self.radius, clip=self.clip)

    def loss(self, net: nn.Module, params: list[nn.Parameter], delta: torch.Tensor, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """A surrogate whose value is L_out and whose gradient is the hypergradient (the loop's
        backward pass then leaves the hypergradient in ``.grad`` for the optimiser)."""
        n = len(y)
        chosen = torch.randperm(n)[:max(1, round(self.portion * n))].to(x.device)  # global RNG, checkpointed
        sel = torch.zeros(n, *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype)
        sel[chosen] = 1.0

        def outer(d: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(net(add_perturbation(x, sel * d, self.clip)), y)

        def inner(d: torch.Tensor) -> torch.Tensor:
            return -F.cross_entropy(net(add_perturbation(x, d, self.clip)), y) + self.penalty * d.pow(2).sum()

        with eval_mode(net):
            value, hyper = fixed_point_hypergradient(outer, inner, delta, params, k=self.k, step=self.inner_lr,
                                                     tol=self.tol)
        surrogate = sum((p * h).sum() for p, h in zip(params, hyper))
        return surrogate - surrogate.detach() + value, {"loss": float(value)}

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise DefenseError("i-bau trains the model's parameters, and this model has none that require grad")
        optimizer = torch.optim.Adam(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay,
                                     amsgrad=self.amsgrad)
        config = self.loop_config(retain, optimizer="adam", betas=self.betas, weight_decay=self.weight_decay,
                                  scheduler=self.scheduler, bn_eval=True)
        current: dict[str, torch.Tensor] = {}

        def on_epoch_start(epoch: int, m: nn.Module) -> None:
            current["delta"] = self.perturbation(m, retain, epoch, device)

        def on_epoch_end(epoch: int, m: nn.Module) -> dict[str, float]:
            row = {"delta_norm": float(torch.linalg.vector_norm(current["delta"]))}
            if evaluator is not None:
                row.update(evaluator(epoch, m))
            return row

        return train(model, retain.x, retain.y, config, params=params, optimizer=optimizer,
                     objective=lambda net, x, y: self.loss(net, params, current["delta"], x, y),
                     on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end, checkpoint=checkpoint,
                     device=device, progress=progress, desc=self.name)
