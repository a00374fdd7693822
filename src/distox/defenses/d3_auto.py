"""Automatic ε and λ for D3 (SPEC §1 "Beyond the paper"; off by default).

D3's two hyper-parameters are the hinge bound ε (``eps``) on the per-sample clean loss and the
penalty weight λ (``lmd``) that trades the clean loss against the weight distance. The paper
fixes them (reference code λ = 0.5, ε = 0.1; paper λ = 10). This module chooses them from the
retain data when ``D3(eps="auto")`` / ``D3(lmd="auto")`` is asked for:

- **ε = "auto"**: ``ε = max(eps_min, mean_i CE(f_init(x_i), y_i))`` — the *input* model's mean
  per-sample cross-entropy on the whole retain set (model in eval mode), floored at
  ``eps_min`` (0.01). The hinge ``relu(CE_i − ε)`` then only pushes back on samples whose loss
  rises above what the suspect model already had: "move as far as possible without getting
  worse than where you started".
- **λ = "auto"**: split the retain set (stratified, seeded by the defense's seed) into a search
  part and a held-out part (``val_fraction``, 0.2). For each λ of ``ladder``
  (0.5, 1, 2, 5, 10) run D3 with that λ (and the resolved ε) on the search part for
  ``search_epochs`` epochs (default: the defense's epochs), then measure the held-out accuracy
  and the distance travelled Σ_W ‖W − W_init‖_p. Among the λ whose held-out accuracy is at least
  ``start − tolerance`` (start = the input model's held-out accuracy, tolerance 2.0 points),
  choose the one with the **largest distance** (ties: the smaller λ). If none is within the
  tolerance, choose the λ with the highest held-out accuracy (ties: the larger distance).
  The final D3 then runs with that λ on the *whole* retain set.

Cost: λ = "auto" runs D3 ``len(ladder)`` extra times on 80 % of the data (use
``search_epochs`` to shorten the trials). Everything is recorded in the defense's
``config["auto_resolved"]`` (ε rule and value, the trials, the chosen λ).

Options (``D3(auto={...})``, all optional): ``ladder`` (0.5, 1, 2, 5, 10), ``tolerance`` (2.0
points), ``val_fraction`` (0.2), ``eps_min`` (0.01), ``search_epochs`` (None = the defense's).

Example:
    >>> result = D3(eps="auto", lmd="auto", auto={"ladder": [1, 10]})(model, retain)
    >>> result.config["auto_resolved"]["lmd"], result.config["auto_resolved"]["eps"]
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..training import Checkpoint, TrainState
from ..utils import eval_mode
from .base import DefenseError
from .heldout import accuracy, split_retain

log = logging.getLogger(__name__)

#: Default options of the automatic choice (see the module docstring).
AUTO_DEFAULTS: dict[str, Any] = {
    "ladder": (0.5, 1.0, 2.0, 5.0, 10.0),
    "tolerance": 2.0,
    "val_fraction": 0.2,
    "eps_min": 0.01,
    "search_epochs": None,
}


def auto_or_float(name: str, value: Any) -> float | str:
    """``"auto"`` stays ``"auto"``; anything else must be a number >= 0."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DefenseError(f"{name} must be a number >= 0 or 'auto'; got {value!r}") from None
    if not v >= 0:
        raise DefenseError(f"{name} must be >= 0; got {v}")
    return v


def check_auto(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate the ``auto`` options dict (unknown keys, ranges); None stays None."""
    if options is None:
        return None
    unknown = sorted(set(options) - set(AUTO_DEFAULTS))
    if unknown:
        raise DefenseError(f"unknown auto option(s) {unknown}; valid: {sorted(AUTO_DEFAULTS)}")
    opts = {**AUTO_DEFAULTS, **options}
    ladder = [float(v) for v in opts["ladder"]]
    if not ladder or any(v < 0 for v in ladder):
        raise DefenseError(f"auto ladder must be a non-empty list of λ >= 0; got {opts['ladder']}")
    if not 0.0 < float(opts["val_fraction"]) < 1.0:
        raise DefenseError(f"auto val_fraction must be in (0, 1); got {opts['val_fraction']}")
    if float(opts["tolerance"]) < 0 or float(opts["eps_min"]) < 0:
        raise DefenseError("auto tolerance and eps_min must be >= 0")
    se = opts["search_epochs"]
    if se is not None and int(se) < 1:
        raise DefenseError(f"auto search_epochs must be >= 1; got {se}")
    return {**options, "ladder": ladder}


def auto_eps(model: nn.Module, retain: ImageSplit, eps_min: float = 0.01,
             device: str | torch.device = "cpu", batch_size: int = 512) -> float:
    """ε = max(eps_min, mean_i CE(f(x_i), y_i)) of ``model`` in eval mode on ``retain``."""
    total = 0.0
    with eval_mode(model), torch.no_grad():
        for i in range(0, len(retain), batch_size):
            logits = model(retain.x[i:i + batch_size].to(device))
            total += float(F.cross_entropy(logits.float(), retain.y[i:i + batch_size].to(device), reduction="sum"))
    return max(float(eps_min), total / max(len(retain), 1))


def _fixed(d3: Any, lmd: float, eps: float, epochs: int | None = None) -> Any:
    """A copy of ``d3`` with fixed λ, ε (and optionally epochs, a trial's own budget: no steps floor,
    which explicit epochs override anyway, and so no warning about it), without the auto options."""
    changes: dict[str, Any] = {"auto": None, "lmd": float(lmd), "eps": float(eps)}
    if epochs is not None:
        changes.update(epochs=int(epochs), min_steps=0)
    return d3.with_options(**changes)


def _trial(d3: Any, model: nn.Module, train: ImageSplit, held: ImageSplit, lmd: float, eps: float,
           device: torch.device, progress: bool) -> dict[str, float]:
    """Run D3 with λ = ``lmd`` on ``train``; held-out accuracy and final distance."""
    opts = {**AUTO_DEFAULTS, **(d3.auto or {})}
    result = _fixed(d3, lmd, eps, opts["search_epochs"])(model, train, device=device, progress=progress)
    dist = float(result.history[-1]["distance"]) if result.history else 0.0
    return {"lmd": float(lmd), "acc": accuracy(result.model, held, device), "distance": dist}


def choose_lmd(d3: Any, model: nn.Module, retain: ImageSplit, eps: float, device: torch.device,
               progress: bool) -> dict[str, Any]:
    """Try every λ of the ladder on a search/held-out split of ``retain`` and apply the rule
    of the module docstring. Returns ``{"lmd", "start_acc", "trials", "within_tolerance"}``."""
    opts = {**AUTO_DEFAULTS, **(d3.auto or {})}
    search, held = split_retain(retain, float(opts["val_fraction"]), d3.seed)
    start = accuracy(model, held, device)
    trials = [_trial(d3, model, search, held, float(lmd), eps, device, progress) for lmd in opts["ladder"]]
    floor = start - float(opts["tolerance"])
    ok = [t for t in trials if t["acc"] >= floor]
    if ok:
        best = max(ok, key=lambda t: (t["distance"], -t["lmd"]))
    else:
        best = max(trials, key=lambda t: (t["acc"], t["distance"]))
        log.warning("lmd='auto': no λ of %s kept held-out accuracy within %.2f points of %.2f%%; "
                    "using the most accurate, λ = %g", opts["ladder"], float(opts["tolerance"]), start, best["lmd"])
    for t in trials:
        log.info("lmd='auto' trial: λ=%g held-out acc %.2f%% distance %.4g", t["lmd"], t["acc"], t["distance"])
    return {"lmd": best["lmd"], "start_acc": start, "trials": trials, "within_tolerance": bool(ok),
            "search_size": len(search), "held_out_size": len(held)}


def fit_auto(d3: Any, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
             device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
    """Resolve ``eps="auto"`` / ``lmd="auto"``, record the choice on ``d3.auto_resolved``,
    then run the fixed-value D3 on the whole retain set (``model`` is trained in place).

    Only that final run is checkpointed: a resumed call repeats the (deterministic) λ trials,
    then continues the final run after its last saved epoch."""
    opts = {**AUTO_DEFAULTS, **(d3.auto or {})}
    resolved: dict[str, Any] = {}
    if d3.eps == "auto":
        eps = auto_eps(model, retain, float(opts["eps_min"]), device)
        resolved["eps_rule"] = f"max(eps_min={float(opts['eps_min']):g}, mean per-sample CE of the input model on the retain set)"
    else:
        eps = float(d3.eps)
    resolved["eps"] = eps
    if d3.lmd == "auto":
        choice = choose_lmd(d3, model, retain, eps, device, progress)
        lmd = choice["lmd"]
        resolved.update(choice)
        resolved["lmd_rule"] = (f"largest distance among ladder λ with held-out accuracy >= start - "
                                f"{float(opts['tolerance']):g} points")
    else:
        lmd = float(d3.lmd)
    resolved["lmd"] = float(lmd)
    d3.auto_resolved = resolved
    log.info("D3 auto: eps=%.4g lmd=%g", eps, lmd)
    fixed = _fixed(d3, lmd, eps)
    state = fixed.fit(model, retain, evaluator=evaluator, device=device, progress=progress, checkpoint=checkpoint)
    d3.record_resolved(fixed)
    return state
