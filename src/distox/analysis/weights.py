"""Histogram of per-weight differences θ_defended − θ_init of one layer, FT versus D3 (SPEC §6).

Fine-tuning moves the weights very little (a narrow peak at 0: the model stays near the
backdoored solution); D3 maximises the distance, so its differences spread widely.
Default layer: the final classifier (the last ``nn.Linear`` in forward order), i.e. D3's
selected weights.

Example:
    >>> diffs = weight_differences(backdoored, defended, layers="auto", example=x[:1])
    >>> fig = plot_weight_hist({"ft": d_ft, "d3": d_d3}, "fc")
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.selection import select_weights


def weight_differences(model_init: nn.Module, model_def: nn.Module, layers: Any = "auto",
                       example: torch.Tensor | None = None) -> tuple[np.ndarray, list[str]]:
    """Flattened ``W_defended − W_init`` over the selected weights, and their names."""
    w0 = select_weights(model_init, layers, example)
    w1 = select_weights(model_def, layers, example)
    diffs = [(w1[k].detach().cpu() - v.detach().cpu()).flatten() for k, v in w0.items()]
    return torch.cat(diffs).numpy().astype(np.float64), list(w0)


def histogram_rows(diffs: dict[str, np.ndarray], bins: int = 60) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Shared bin edges over all defenses and CSV rows ``{defense, bin_left, bin_right, count}``."""
    allv = np.concatenate(list(diffs.values()))
    lo, hi = float(allv.min()), float(allv.max())
    if hi <= lo:
        lo, hi = lo - 1e-3, hi + 1e-3
    edges = np.linspace(lo, hi, bins + 1)
    rows = []
    for name, d in diffs.items():
        counts, _ = np.histogram(d, bins=edges)
        rows += [{"defense": name, "bin_left": float(edges[i]), "bin_right": float(edges[i + 1]),
                  "count": int(c)} for i, c in enumerate(counts)]
    return edges, rows


def plot_weight_hist(diffs: dict[str, np.ndarray], layer: str, bins: int = 60):
    """Figure: overlaid histograms of the differences, one per defense."""
    from .common import pyplot

    plt = pyplot()
    edges, _ = histogram_rows(diffs, bins)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.get_cmap("tab10")
    for i, (name, d) in enumerate(diffs.items()):
        ax.hist(d, bins=edges, alpha=0.55, color=colors(i),
                label=f"{name}  (‖ΔW‖₂ = {np.linalg.norm(d):.3g}, mean |ΔW| = {np.abs(d).mean():.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("θ_defended − θ_init  (per weight)")
    ax.set_ylabel("number of weights (log scale)")
    ax.set_title(f"Weight differences after defense — layer {layer}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
