"""D3 — Distance-Driven Detoxification (Wei et al., "Backdoor Mitigation by Distance-Driven
Detoxification", ICCV 2025, arXiv 2411.09585), SPEC §1.

Problem (paper Eq. "constrained form"): max_θ d(θ_s, θ_init,s) s.t. E[ℓ(f_θ(x), y)] ≤ ε,
θ_s ∈ S. Solved, as in the authors' reference code, as the penalised projected problem

    minimise   λ · mean_i relu(CE(f_θ(x_i), y_i) − ε)  −  Σ_{W ∈ θ_s} ‖W − W_init‖_p
    s.t.       ‖W‖_p = ‖W_init‖_p  for every selected W   (projection after every step)

with the total divided by (λ + 1) when λ > 1. Selected weights θ_s are the ``weight`` of
every Linear/Conv2d inside the selected modules (default: the final classifier). Biases and
BatchNorm are trained but not part of the distance.

Example:
    >>> result = D3(epochs=20)(suspect_model, retain_split)
    >>> result.model            # purified copy; result.history: per-epoch loss/distance
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..models.selection import SelectionError, select_weights
from ..training import TrainState, train
from .base import Defense, DefenseError
from .d3_auto import auto_or_float, check_auto, fit_auto
from .heldout import EpochChooser, accuracy, resolve_tolerance, split_retain
from .registry import register

#: Named presets: the reference code's defaults and the paper's (λ = 10).
PRESETS: dict[str, dict[str, float]] = {
    "reference": {"lmd": 0.5, "eps": 0.1},
    "paper": {"lmd": 10.0, "eps": 0.1},
}
WARM_STARTS = ("random", "far", "middle", "noise", "near")


def lp_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Entry-wise p-norm of a tensor (p = 2: Frobenius)."""
    return torch.linalg.vector_norm(t.flatten(), ord=p)


def d3_loss(logits: torch.Tensor, y: torch.Tensor, weights: Sequence[torch.Tensor],
            init: Sequence[torch.Tensor], lmd: float, eps: float, p: float = 2.0
            ) -> tuple[torch.Tensor, dict[str, float]]:
    """The D3 objective for one batch (reference code): per-sample hinge relu(CE_i − ε)
    averaged over the batch, minus the summed p-norm distance, scaled by 1/(λ + 1) when λ > 1."""
    ce = F.cross_entropy(logits, y, reduction="none")
    clean = F.relu(ce - eps).mean()
    dist = torch.stack([lp_norm(w - w0, p) for w, w0 in zip(weights, init)]).sum()
    loss = lmd * clean - dist
    if lmd > 1:
        loss = loss / (lmd + 1)
    return loss, {"clean_loss": float(clean.detach()), "ce": float(ce.detach().mean()),
                  "loss": float(loss.detach())}


@torch.no_grad()
def warm_start(weights: Sequence[torch.Tensor], method: str, p: float, generator: torch.Generator) -> None:
    """Move each selected weight away from its start before training (SPEC §1 ``init``).

    random: U(−0.5, 0.5) rescaled to ‖W_init‖_p; far: −W_init; middle: 0;
    noise: W + N(0, 1)·std(W_init); near: unchanged.
    """
    for w in weights:
        if method == "random":
            r = torch.rand(w.shape, generator=generator, dtype=w.dtype).to(w.device) - 0.5
            w.copy_(r * lp_norm(w, p) / lp_norm(r, p).clamp_min(1e-12))
        elif method == "far":
            w.neg_()
        elif method == "middle":
            w.zero_()
        elif method == "noise":
            n = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
            w.add_(n * w.std())
        elif method != "near":
            raise DefenseError(f"init must be one of {WARM_STARTS}; got {method!r}")


@torch.no_grad()
def project_to_norms(weights: Sequence[torch.Tensor], norms: Sequence[torch.Tensor], p: float) -> None:
    """Projection onto S: W ← W · ‖W_init‖_p / ‖W‖_p for every selected weight."""
    for w, n0 in zip(weights, norms):
        w.mul_(n0 / lp_norm(w, p).clamp_min(1e-12))


def total_distance(weights: Sequence[torch.Tensor], init: Sequence[torch.Tensor], p: float) -> float:
    """Σ_W ‖W − W_init‖_p over the selected weights."""
    with torch.no_grad():
        return float(sum(lp_norm(w - w0, p) for w, w0 in zip(weights, init)))


def control_lmd(lmd: float, within: bool, bounds: tuple[float, float], factor: float = 2.0) -> float:
    """One step of the held-out λ controller: while held-out accuracy is within tolerance, halve λ
    (weight the distance more: travel farther); once it is not, double λ; clipped to ``bounds``."""
    lo, hi = bounds
    return min(hi, max(lo, lmd / factor if within else lmd * factor))


@register
class D3(Defense):
    """Distance-Driven Detoxification.

    Args:
        lmd: λ, weight of the clean-loss penalty (reference 0.5; ``preset="paper"``: 10).
        eps: ε, the clean-loss bound inside the hinge (0.1).
        p: order of the weight distance and of the norm constraint (2 = Frobenius).
        init: warm start of the selected weights: random | far | middle | noise | near.
        layers: ``"auto"`` (final classifier), ``"all-linear"``, or module names / globs.
        freeze_bn: keep BatchNorm statistics fixed (reference: BN in train mode, False).
        momentum: SGD momentum (0.9); the D3 optimiser has no weight decay.
        select: ``None`` (the paper: keep the last epoch) or ``"heldout"``: hold out
            ``val_fraction`` of the retain set and keep the epoch that travelled farthest while
            held-out accuracy stayed within ``tolerance`` points of the suspect model's
            (:mod:`distox.defenses.heldout`; ``"auto"``: one standard error, ≥ ``min_tolerance``).
        preset: ``"reference"`` or ``"paper"``; explicit ``lmd``/``eps`` override it.
            ``lmd="auto"`` / ``eps="auto"`` choose them from the retain data (off by default;
            rules in :mod:`distox.defenses.d3_auto`), with options ``auto={...}`` (None).
        epochs, batch_size, lr, augment, flip, seed: see :class:`Defense` (100, 256, 0.01).

    Shapes: retain images (N, C, H, W) in [0, 1], labels (N,).
    """

    name = "d3"

    def __init__(self, lmd: float | str | None = None, eps: float | str | None = None, p: float = 2.0,
                 init: str = "random", layers: str | Sequence[str] = "auto", freeze_bn: bool = False,
                 momentum: float = 0.9, preset: str = "reference", auto: dict[str, Any] | None = None,
                 select: str | None = None, val_fraction: float = 0.2, tolerance: float | str = "auto",
                 min_tolerance: float = 0.5, lmd_control: str | None = None,
                 lmd_range: Sequence[float] = (0.5, 10.0), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if preset not in PRESETS:
            raise DefenseError(f"preset must be one of {sorted(PRESETS)}; got {preset!r}")
        self.preset = preset
        self.lmd = auto_or_float("lmd", PRESETS[preset]["lmd"] if lmd is None else lmd)
        self.eps = auto_or_float("eps", PRESETS[preset]["eps"] if eps is None else eps)
        self.auto = check_auto(auto)
        if not p >= 1:
            raise DefenseError(f"p must be >= 1; got {p}")
        if init not in WARM_STARTS:
            raise DefenseError(f"init must be one of {WARM_STARTS}; got {init!r}")
        self.p, self.init, self.freeze_bn, self.momentum = float(p), init, bool(freeze_bn), float(momentum)
        self.layers = layers if isinstance(layers, str) else list(layers)
        if select not in (None, "heldout"):
            raise DefenseError(f"select must be None or 'heldout'; got {select!r}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise DefenseError(f"val_fraction must be in (0, 1); got {val_fraction}")
        if tolerance != "auto" and not float(tolerance) >= 0:
            raise DefenseError(f"tolerance must be a number >= 0 or 'auto'; got {tolerance!r}")
        self.select, self.val_fraction, self.min_tolerance = select, float(val_fraction), float(min_tolerance)
        self.tolerance = tolerance if tolerance == "auto" else float(tolerance)
        if lmd_control not in (None, "heldout", "geometric"):
            raise DefenseError(f"lmd_control must be None, 'heldout' or 'geometric'; got {lmd_control!r}")
        if lmd_control == "heldout" and select != "heldout":
            raise DefenseError("lmd_control='heldout' needs select='heldout' (it reads the held-out accuracy)")
        lo, hi = (float(v) for v in lmd_range)
        if not 0 < lo <= hi:
            raise DefenseError(f"lmd_range must be (low, high) with 0 < low <= high; got {lmd_range!r}")
        self.lmd_control, self.lmd_range = lmd_control, (lo, hi)

    def selected(self, model: nn.Module, example: torch.Tensor | None = None) -> dict[str, nn.Parameter]:
        """The selected weights θ_s of ``model`` (name → parameter)."""
        try:
            return select_weights(model, self.layers, example)
        except SelectionError as exc:
            raise DefenseError(str(exc)) from None

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool) -> TrainState:
        if "auto" in (self.lmd, self.eps):  # SPEC §1 "Beyond the paper": resolved in d3_auto
            return fit_auto(self, model, retain, evaluator=evaluator, device=device, progress=progress)
        chooser = None
        if self.select == "heldout":
            retain, held = split_retain(retain, self.val_fraction, self.seed)
            start = accuracy(model, held, device)
            tol = resolve_tolerance(self.tolerance, start, len(held), self.min_tolerance)
            chooser = EpochChooser(held, start, tol, device)
        named = self.selected(model, retain.x[:1].to(device))
        weights = list(named.values())
        init = [w.detach().clone() for w in weights]
        norms = [lp_norm(w0, self.p) for w0 in init]
        warm_start(weights, self.init, self.p, torch.Generator().manual_seed(self.seed))

        lmd = [float(self.lmd)]  # the controller (lmd_control) changes it between epochs
        if self.lmd_control == "geometric":
            lmd[0] = self.lmd_range[0]

        def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            return d3_loss(m(x), y, weights, init, lmd[0], self.eps, self.p)

        def on_epoch_end(epoch: int, m: nn.Module) -> dict[str, float]:
            row = {"distance": total_distance(weights, init, self.p), "lmd": lmd[0]}
            if chooser is not None:
                row.update(chooser(epoch, m, row["distance"]))
                if self.lmd_control == "heldout":
                    lmd[0] = control_lmd(lmd[0], row["heldout_acc"] >= chooser.start_acc - chooser.tolerance,
                                         self.lmd_range)
            if self.lmd_control == "geometric":
                lo, hi = self.lmd_range
                lmd[0] = lo * (hi / lo) ** (epoch / max(self.epochs - 1, 1))
            if evaluator is not None:
                row.update(evaluator(epoch, m))
            return row

        config = self.loop_config(retain, momentum=self.momentum, weight_decay=0.0, bn_eval=self.freeze_bn)
        state = train(model, retain.x, retain.y, config, objective=objective,
                      after_step=lambda m: project_to_norms(weights, norms, self.p),
                      on_epoch_end=on_epoch_end, device=device, progress=progress, desc="D3")
        if chooser is not None:
            chooser.restore(model)
            self.selection_resolved = chooser.summary()
        return state
