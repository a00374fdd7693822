"""ANP — Adversarial Neuron Pruning (Wu & Wang, "Adversarial Neuron Pruning Purifies Backdoored
Deep Models", NeurIPS 2021).

A *neuron* is one channel k of a BatchNorm layer with affine parameters (γ_k, β_k). ANP learns
a mask m_k ∈ [0, 1] per neuron such that the network stays accurate on clean data even when
its neurons are adversarially perturbed: the neurons a backdoor relies on are the ones whose
perturbation flips predictions, and their masks fall. The perturbed layer computes BatchNorm
with weight γ·(m + δ) and bias β·(1 + ξ); the unperturbed one with γ·m and β.

Per iteration, on a batch (x, y) of retain images (BackdoorBench ``defense/anp.py``
``mask_train``, as the original ``csdongxian/ANP_backdoor``):

1. δ, ξ ~ U(−ε, ε) per neuron, then ``anp_steps`` signed-gradient *ascent* steps of size
   ε/``anp_steps`` on CE(f_{m+δ, ξ}(x), y);
2. L = α·CE(f_m(x), y) + (1 − α)·CE(f_{m+δ, ξ}(x), y); one SGD step on m (momentum 0.9), then
   m is clipped to [0, 1].

The search runs on a copy of the model in train mode (BatchNorm normalises with batch
statistics, as the reference); the model returned keeps the suspect model's running statistics.
*Pruning* a neuron sets its γ to 0 and keeps β (reference and original code); there is no
fine-tuning afterwards.

Defaults (BackdoorBench ``config/defense/anp/config.yaml``): ε 0.4, α 0.2, 1 ascent step,
2,000 iterations of batch 256 on the (augmented) retain set, thresholds 0, 0.05, …, 0.90,
accuracy tolerance 10 % (relative).

Differences from BackdoorBench, on purpose:

- **No test set.** The reference sweeps the thresholds and keeps the model with the lowest
  *test* ASR among those whose relative *test*-accuracy drop is below 10 %: an oracle that
  needs test labels and the trigger. distox holds out ``val_fraction`` of the retain data
  (stratified, seeded; :mod:`distox.defenses.heldout`), learns the masks on the rest, and keeps
  the **largest threshold** whose held-out accuracy fell by less than ``acc_ratio`` (relative)
  from the unpruned model's: with no trigger to measure, pruning more of the least-robust
  neurons is the retain-only proxy for a lower ASR. If no threshold qualifies, nothing is
  pruned. ``threshold=0.2`` prunes at a fixed threshold instead (the paper's setting; no
  split then). Numbers can be worse than the reference's oracle-selected ones.
- **Mask learning rate 0.2**, the original ANP code's; BackdoorBench reuses its generic lr 0.01
  as the mask lr, so its masks move about 20× less in 2,000 iterations (``lr=0.01`` reproduces
  that).
- **Noise bounded.** δ and ξ are projected back onto [−ε, ε] after the ascent step, the
  paper's constraint; the reference never projects, so its noise reaches ±2ε
  (``project_noise=False`` reproduces that).
- **Batches**: shuffled passes over the retain set through the shared training loop instead of
  sampling with replacement; ``iterations`` is rounded up to whole passes (``epochs`` sets
  the passes directly).
- **Any architecture with BatchNorm** (``nn.BatchNorm1d/2d/3d`` with affine parameters):
  the perturbation is applied through :func:`torch.func.functional_call`, not by rebuilding
  the model from a zoo of known architectures. A model without one gets a :class:`DefenseError`
  naming the requirement.

Example:
    >>> result = ANP(iterations=500)(suspect_model, retain_split)
    >>> result.config["pruning_resolved"]["threshold"], result.config["pruning_resolved"]["pruned"]
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator, evaluate
from ..training import Batches, Checkpoint, TrainState, train
from ..utils import batchnorm_modules
from .base import Defense, DefenseError
from .heldout import accuracy, split_retain
from .registry import register

DEFAULT_ITERATIONS = 2000


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers with affine parameters (ANP's neurons are their channels);
    a :class:`DefenseError` naming the requirement when there is none."""
    norms = list(batchnorm_modules(model))
    names = [n for n, m in norms if m.weight is not None and m.bias is not None]
    if not names:
        found = (f"its {len(norms)} BatchNorm layer(s) have no affine parameters (affine=False)" if norms
                 else "it has none")
        raise DefenseError(
            f"anp needs a model with BatchNorm layers (nn.BatchNorm1d/2d/3d with affine=True): it masks, perturbs "
            f"and prunes BatchNorm neurons (their scale γ and shift β), and {type(model).__name__} fails this: "
            f"{found}. Use a defense that works on any architecture (e.g. ft, ft-sam, sau, i-bau, d3)")
    return names


class NeuronMasks(nn.Module):
    """A frozen copy of a model whose BatchNorm neurons carry a learnable mask m and, when
    given, multiplicative noise (δ on the weight, ξ on the bias):

        weight γ·(m + δ), bias β·(1 + ξ)   (perturbed);   weight γ·m, bias β   (``noise=None``).
    """

    def __init__(self, net: nn.Module, layers: list[str]) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.layers = list(layers)
        self.masks = nn.ParameterList(
            [nn.Parameter(torch.ones_like(net.get_submodule(n).weight)) for n in self.layers])

    def draw_noise(self, eps: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """δ, ξ ~ U(−ε, ε) per neuron, drawn on the CPU from the global generator (seeded and
        checkpointed by the training loop) and moved to the masks' device; leaves with grad."""
        noise = []
        for m in self.masks:
            d, xi = ((torch.rand(2, *m.shape) * 2 - 1) * eps).to(m.device, m.dtype)
            noise.append((d.requires_grad_(True), xi.requires_grad_(True)))
        return noise

    def clip_(self) -> None:
        """Clip every mask to [0, 1] (after each step)."""
        with torch.no_grad():
            for m in self.masks:
                m.clamp_(0.0, 1.0)

    def forward(self, x: torch.Tensor, noise: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        overrides: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.layers):
            bn = self.net.get_submodule(name)
            prefix = f"{name}." if name else ""
            if noise is None:
                overrides[prefix + "weight"] = bn.weight * self.masks[i]
            else:
                d, xi = noise[i]
                overrides[prefix + "weight"] = bn.weight * (self.masks[i] + d)
                overrides[prefix + "bias"] = bn.bias * (1 + xi)
        return functional_call(self.net, overrides, (x,))


def sweep_thresholds(thresholds_max: float, step: float) -> list[float]:
    """0, step, 2·step, … up to ``thresholds_max`` (the reference's ``np.arange(0, max + step, step)``
    without its floating-point overshoot)."""
    n = int(math.floor(thresholds_max / step + 1e-9))
    return [round(i * step, 10) for i in range(n + 1)]


def prune_neurons(model: nn.Module, masks: dict[str, torch.Tensor], threshold: float,
                  weights: dict[str, torch.Tensor] | None = None) -> int:
    """Set γ = 0 for every neuron whose mask is ≤ ``threshold`` (β kept), in place; the γ
    values start from ``weights`` when given (to sweep thresholds from the unpruned model).
    Returns the number of pruned neurons."""
    pruned = 0
    with torch.no_grad():
        for name, mask in masks.items():
            bn = model.get_submodule(name)
            if weights is not None:
                bn.weight.copy_(weights[name])
            cut = (mask <= threshold).to(bn.weight.device)
            bn.weight[cut] = 0.0
            pruned += int(cut.sum())
    return pruned


def select_threshold(rows: list[dict[str, float]], start_acc: float, acc_ratio: float) -> float | None:
    """The largest threshold whose held-out accuracy fell by less than ``acc_ratio`` (relative)
    from ``start_acc``; None when none did (prune nothing)."""
    ok = [r["threshold"] for r in rows if start_acc - r["heldout_acc"] < acc_ratio * start_acc]
    return max(ok) if ok else None


@register
class ANP(Defense):
    """Adversarial Neuron Pruning: a mask per BatchNorm neuron learned under adversarial neuron
    noise, then the neurons with low masks pruned (module docstring: algorithm, defaults, differences).

    Args:
        eps: ε, bound of the multiplicative neuron noise (0.4).
        alpha: α, weight of the clean loss; 1 − α weighs the perturbed loss (0.2).
        anp_steps: ascent steps on the noise per iteration (1).
        lr: mask learning rate (0.2, the original ANP code; BackdoorBench 0.01).
        iterations: mask-learning iterations (2,000), rounded up to whole passes over the
            retain set; ``epochs`` sets the passes instead (give one of the two).
        threshold: a fixed pruning threshold (e.g. 0.2, the paper's); None (default): choose it
            on held-out retain data from the sweep 0, ``pruning_step``, …, ``pruning_max``.
        pruning_max, pruning_step: the sweep (0.90, 0.05).
        acc_ratio: the largest relative held-out accuracy drop a threshold may cause (0.1).
        val_fraction: fraction of the retain set held out to choose the threshold (0.2).
        project_noise: project δ, ξ onto [−ε, ε] after the ascent (True; the reference: False).
        epochs, batch_size (256), augment (True), flip, seed: see
            :class:`~distox.defenses.base.Defense`.
    """

    name = "anp"

    def __init__(self, eps: float = 0.4, alpha: float = 0.2, anp_steps: int = 1, lr: float = 0.2,
                 iterations: int | None = None, threshold: float | None = None, pruning_max: float = 0.9,
                 pruning_step: float = 0.05, acc_ratio: float = 0.1, val_fraction: float = 0.2,
                 project_noise: bool = True, epochs: int | None = None, **kwargs: Any) -> None:
        if epochs is not None and iterations is not None:
            raise DefenseError(f"anp: give iterations ({iterations}) or epochs ({epochs}), not both")
        super().__init__(epochs=1 if epochs is None else epochs, lr=lr, **kwargs)
        self.epochs = None if epochs is None else int(epochs)  # type: ignore[assignment]
        if iterations is None and epochs is None:
            iterations = DEFAULT_ITERATIONS
        if iterations is not None and int(iterations) < 1:
            raise DefenseError(f"iterations must be >= 1; got {iterations}")
        if not eps >= 0:
            raise DefenseError(f"eps must be >= 0; got {eps}")
        if not 0 <= alpha <= 1:
            raise DefenseError(f"alpha must be in [0, 1]; got {alpha}")
        if int(anp_steps) < 1:
            raise DefenseError(f"anp_steps must be >= 1; got {anp_steps}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise DefenseError(f"threshold must be in [0, 1]; got {threshold}")
        if not (pruning_step > 0 and 0 <= pruning_max <= 1):
            raise DefenseError(f"need pruning_step > 0 and 0 <= pruning_max <= 1; got {pruning_step}, {pruning_max}")
        if not 0 < acc_ratio <= 1:
            raise DefenseError(f"acc_ratio must be in (0, 1]; got {acc_ratio}")
        if not 0 < val_fraction < 1:
            raise DefenseError(f"val_fraction must be in (0, 1); got {val_fraction}")
        self.iterations = None if iterations is None else int(iterations)
        self.eps, self.alpha, self.anp_steps = float(eps), float(alpha), int(anp_steps)
        self.threshold = None if threshold is None else float(threshold)
        self.pruning_max, self.pruning_step = float(pruning_max), float(pruning_step)
        self.acc_ratio, self.val_fraction = float(acc_ratio), float(val_fraction)
        self.project_noise = bool(project_noise)

    def passes(self, n_images: int) -> int:
        """Passes over ``n_images`` retain images: ``epochs``, or ``iterations`` rounded up."""
        if self.epochs is not None:
            return self.epochs
        per_pass = len(Batches(torch.empty(n_images), torch.empty(n_images), self.batch_size))
        return max(1, math.ceil(self.iterations / per_pass))

    def loss(self, probe: NeuronMasks, net: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """One ANP iteration's loss; the noise ascent happens here, the loop steps the masks.
        ``net`` is ``probe`` itself, or its compiled form when the loop compiles."""
        noise = probe.draw_noise(self.eps)
        flat = [t for pair in noise for t in pair]
        if self.eps > 0:
            step = self.eps / self.anp_steps
            for _ in range(self.anp_steps):
                grads = torch.autograd.grad(F.cross_entropy(net(x, noise), y), flat)
                with torch.no_grad():
                    for t, g in zip(flat, grads):
                        t.add_(step * g.sign())
                        if self.project_noise:
                            t.clamp_(-self.eps, self.eps)
        fixed = [(d.detach(), xi.detach()) for d, xi in noise]
        natural = F.cross_entropy(net(x), y) if self.alpha > 0 else torch.zeros((), device=x.device)
        robust = F.cross_entropy(net(x, fixed), y) if self.alpha < 1 else torch.zeros((), device=x.device)
        loss = self.alpha * natural + (1 - self.alpha) * robust
        return loss, {"loss": float(loss.detach()), "clean_ce": float(natural.detach()),
                      "perturbed_ce": float(robust.detach())}

    def search(self, model: nn.Module, retain: ImageSplit, *, device: torch.device | str = "cpu",
               progress: bool = False, checkpoint: Checkpoint | None = None
               ) -> tuple[dict[str, torch.Tensor], TrainState]:
        """Learn the neuron masks of ``model`` (left unchanged) on ``retain``: {BN layer name:
        mask (C,) on the CPU} and the loop's history."""
        probe = NeuronMasks(copy.deepcopy(model), batchnorm_layers(model))
        config = self.loop_config(retain, epochs=self.passes(len(retain)), momentum=0.9, weight_decay=0.0,
                                  scheduler="constant")
        state = train(probe, retain.x, retain.y, config, objective=lambda net, x, y: self.loss(probe, net, x, y),
                      params=list(probe.masks), after_step=lambda p: p.clip_(), checkpoint=checkpoint,
                      device=device, progress=progress, desc=self.name)
        masks = {name: m.detach().to("cpu", copy=True) for name, m in zip(probe.layers, probe.masks)}
        return masks, state

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        batchnorm_layers(model)  # the requirement, before any split or work
        held = None
        if self.threshold is None:
            retain, held = split_retain(retain, self.val_fraction, self.seed)
        masks, state = self.search(model, retain, device=device, progress=progress, checkpoint=checkpoint)
        total = sum(m.numel() for m in masks.values())
        mask_mean = float(torch.cat(list(masks.values())).mean())
        summary: dict[str, Any] = {"neurons": total, "mask_mean": round(mask_mean, 4)}
        if held is None:
            threshold = self.threshold
        else:
            original = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
            start = accuracy(model, held, device)
            rows = []
            for t in sweep_thresholds(self.pruning_max, self.pruning_step):
                count = prune_neurons(model, masks, t, original)
                rows.append({"threshold": t, "pruned": count, "heldout_acc": round(accuracy(model, held, device), 4)})
            prune_neurons(model, masks, -1.0, original)  # back to the unpruned weights
            threshold = select_threshold(rows, start, self.acc_ratio)
            summary.update(start_heldout_acc=round(start, 4), heldout_size=len(held), sweep=rows)
        pruned = 0 if threshold is None else prune_neurons(model, masks, threshold)
        summary.update(threshold=threshold, pruned=pruned)
        self.pruning_resolved = summary
        last = state.history[-1] if state.history else {}
        last.update({"pruned": pruned, **({} if threshold is None else {"threshold": threshold})})
        if evaluator is not None:  # the pruned model, once (the mask search does not change it)
            last.update(evaluate(model, evaluator.clean_x, evaluator.clean_y, evaluator.backdoor,
                                 batch_size=evaluator.batch_size, device=evaluator.device))
        return state
