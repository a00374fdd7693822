"""Input pruning: the first Linear's inputs that the clean data barely moves (a distox extension,
not in the paper; the ``default`` preset's ``input_prune``).

Why. D3 pushes a weight away from its start along ``W − W_init``, which only the clean loss's
gradient can make non-zero in the first place; in a Linear that the image meets first (a
multi-layer perceptron: flattened pixels → Linear), the gradient of column ``j`` is the input
``x_j`` times the error, so a column whose input is almost always the same on clean images (the
blank border of a Fashion-MNIST image) barely moves, under D3's distance or plain fine-tuning —
and that is where a patch trigger lives. Measured (BENCHMARKS.md "Ninth round"): on the five
BadNets multi-layer perceptrons of the study, setting such columns aside removes the backdoor on
its own (0.6–2.9 % ASR left) at 0.15–0.75 accuracy points, where D3's default without it left
up to 27 %; before D3, it made the default pass 17 of 21 development cells (8 without) and 7 of 8
check cells (4 without) at 3,000 images, at the same mean accuracy.

What. For the first weighted layer in forward order, if it is an ``nn.Linear``: its input
features (a token's features for a Linear applied per token) are ordered by their variance on the
retain set, least first; the ``k`` least varying are replaced by their retain-set mean — the
column is zeroed and ``W[:, j]·mean_j`` folded into the bias, which leaves every output on an
image whose features equal those means unchanged — with ``k`` the largest (by bisection) whose
retain-set accuracy stays within ``tolerance`` points of the model's own. The tolerance is the
held-out rule's (:func:`distox.defenses.heldout.resolve_tolerance`: ``"auto"`` = one standard
error of that accuracy, at least ``min_tolerance``). A model whose first weighted layer is a
convolution is left as it is (a convolution shares its weights across positions, so no weight
belongs to one rarely-lit pixel), and so is a first Linear whose weight is computed from other
parameters (weight normalisation and other parametrizations: zeroing a column of the result would
not stay). A model near chance on the retain set loses nothing by any
pruning, so it may have every input set aside; D3's training after it then grows the columns
back from the clean loss alone.

Reads the model and the retain set (images and labels) only: never evaluation data or an attack.

Example:
    >>> report = prune_inputs(model, retain, tolerance="auto", min_tolerance=0.5)
    >>> report["pruned"], report["features"]
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..data.core import ImageSplit
from ..metrics import eval_batch_size
from ..models.selection import forward_calls, weight_is_computed
from .heldout import accuracy, resolve_tolerance
from .probe import layer_input

log = logging.getLogger(__name__)


def first_weighted_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, nn.Module] | None:
    """(name, module) of the first ``nn.Linear``/``nn.Conv2d`` a forward pass on ``example`` calls
    (by its first call: a module that runs again later is still the first the image meets)."""
    calls = forward_calls(model, example)
    if not calls:
        return None
    return calls[0], model.get_submodule(calls[0])


def input_moments(model: nn.Module, layer: nn.Linear, x: torch.Tensor,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance) of each of ``layer``'s ``in_features`` over what it receives on the images
    ``x`` (eval mode, in evaluation-sized batches; one row per image, or per token where the Linear
    runs on a sequence), accumulated in float64 so no (rows × features) matrix is kept."""
    sums = torch.zeros(2, layer.in_features, dtype=torch.float64)
    count, batch = 0, eval_batch_size(device)
    for i in range(0, len(x), batch):
        rows = layer_input(model, layer, x[i:i + batch].to(device))
        if rows is None:
            break
        rows = rows.reshape(-1, layer.in_features).to("cpu", torch.float64)
        sums[0] += rows.sum(0)
        sums[1] += (rows * rows).sum(0)
        count += rows.shape[0]
    mean = sums[0] / max(count, 1)
    return mean, (sums[1] / max(count, 1) - mean * mean).clamp_min(0.0)


def prune_inputs(model: nn.Module, retain: ImageSplit, tolerance: float | str = "auto",
                 min_tolerance: float = 0.5, device: torch.device | str = "cpu",
                 layer_name: str | None = None) -> dict[str, Any]:
    """Replace the least-varying inputs of ``model``'s first Linear by their retain-set means, as
    many as keep retain accuracy within the tolerance (module docstring); edits ``model`` in place.
    ``layer_name`` names another ``nn.Linear`` to prune instead (a probe's: BENCHMARKS.md "Eighteenth
    round"). Returns what was done: ``layer`` (None when the first weighted layer is not an
    nn.Linear), ``features``, ``pruned`` (k), ``start_acc`` / ``acc`` (retain accuracy before and
    after) and ``tolerance`` (points)."""
    found = (first_weighted_layer(model, retain.x[:1].to(device)) if layer_name is None
             else (layer_name, model.get_submodule(layer_name)))
    if found is None or not isinstance(found[1], nn.Linear):
        return {"layer": None, "pruned": 0}
    name, layer = found
    if weight_is_computed(layer):  # weight norm and other parametrizations
        log.info("input pruning: %s's weight is computed from other parameters; nothing set aside", name)
        return {"layer": None, "pruned": 0}
    mean, variance = input_moments(model, layer, retain.x, device)
    order = torch.argsort(variance, stable=True)
    weight0 = layer.weight.detach().clone()
    bias0 = None if layer.bias is None else layer.bias.detach().clone()

    def set_pruned(k: int) -> None:
        cols = order[:k].to(weight0.device)
        with torch.no_grad():
            layer.weight.copy_(weight0)
            if bias0 is not None:
                layer.bias.copy_(bias0 + weight0[:, cols] @ mean.to(weight0)[cols])
            layer.weight[:, cols] = 0

    start = accuracy(model, retain, device)
    tol = resolve_tolerance(tolerance, start, len(retain), min_tolerance)
    good, bad, acc = 0, layer.in_features + 1, start  # invariant: k = good keeps accuracy, k = bad does not
    while bad - good > 1:
        mid = (good + bad) // 2
        set_pruned(mid)
        mid_acc = accuracy(model, retain, device)
        if mid_acc >= start - tol:
            good, acc = mid, mid_acc
        else:
            bad = mid
    set_pruned(good)
    return {"layer": name, "features": layer.in_features, "pruned": good, "start_acc": round(start, 4),
            "acc": round(acc, 4), "tolerance": round(tol, 4)}
