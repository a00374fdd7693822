"""Loss along the straight line between the backdoored and the defended weights (SPEC §6).

θ(t) = θ_init + t · (θ_defended − θ_init), t ∈ [0, 2] (every floating-point tensor of the
state dict, BatchNorm statistics included; integer counters are taken from the nearer end).
For each t: the *clean loss* (mean CE on clean test images) and the *backdoor loss* (mean CE
of the poisoned test images towards the attack's target labels t(y); low = backdoor works).
The paper uses this to show vanilla fine-tuning stays in the "backdoor region" (the backdoor
loss stays low around t = 1) while D3 leaves it, and that extrapolating (t > 1) raises it.

Example:
    >>> rows = loss_along_path(backdoored, defended, test, backdoor, ts=np.linspace(0, 2, 21))
    >>> rows[0]["clean_loss"], rows[10]["backdoor_loss"]       # t = 0 and t = 1
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import BackdoorTestSet
from ..progress import progress_bar


def interpolate_state(s0: dict[str, torch.Tensor], s1: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """``s0 + t·(s1 − s0)`` for floating tensors; other tensors from s0 when t < 0.5, else s1."""
    out = {}
    for k, a in s0.items():
        b = s1[k]
        out[k] = a + t * (b - a) if a.is_floating_point() else (a if t < 0.5 else b)
    return out


@torch.no_grad()
def mean_loss_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
                  device: str | torch.device = "cpu") -> tuple[float, float]:
    """(mean CE, accuracy in %) of ``model`` on (x, y)."""
    total, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size].to(device)).float()
        yb = y[i:i + batch_size].to(device)
        total += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(len(y), 1)
    return total / n, 100.0 * correct / n


def loss_along_path(model_init: nn.Module, model_def: nn.Module, clean: ImageSplit, backdoor: BackdoorTestSet,
                    ts: Sequence[float] = tuple(np.linspace(0.0, 2.0, 21)), *, batch_size: int = 512,
                    device: str | torch.device = "cpu", progress: bool = False,
                    desc: str = "path") -> list[dict[str, float]]:
    """Rows ``{t, clean_loss, backdoor_loss, acc, asr}`` along θ(t) (models are not modified).

    Args:
        model_init: the backdoored model (θ_init).
        model_def: the defended model (θ_defended), same architecture.
        clean: clean test images and labels.
        backdoor: poisoned test images with target labels (``backdoor.target``).
        ts: the values of t (default 21 points in [0, 2]).
        batch_size: evaluation batch (512). device: ``"cpu"`` / ``"cuda"``.
        progress: a progress bar over the values of t, labelled ``desc``.
    """
    s0 = {k: v.detach().cpu().clone() for k, v in model_init.state_dict().items()}
    s1 = {k: v.detach().cpu().clone() for k, v in model_def.state_dict().items()}
    work = copy.deepcopy(model_init).to(device).eval()
    rows = []
    for t in progress_bar(list(ts), desc=desc, unit="t", enabled=progress):
        work.load_state_dict(interpolate_state(s0, s1, float(t)))
        work.eval()
        cl, acc = mean_loss_acc(work, clean.x, clean.y, batch_size, device)
        bl, asr = mean_loss_acc(work, backdoor.x, backdoor.target, batch_size, device)
        rows.append({"t": round(float(t), 6), "clean_loss": cl, "backdoor_loss": bl, "acc": acc, "asr": asr})
    return rows


def plot_path(curves: dict[str, list[dict[str, float]]], title: str = "Loss along the linear path"):
    """Figure: clean (solid) and backdoor (dashed) loss against t, one colour per defense."""
    from .common import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.get_cmap("tab10")
    for i, (name, rows) in enumerate(curves.items()):
        t = [r["t"] for r in rows]
        ax.plot(t, [max(r["clean_loss"], 1e-6) for r in rows], "-o", ms=3, color=colors(i), label=f"{name}: clean loss")
        ax.plot(t, [max(r["backdoor_loss"], 1e-6) for r in rows], "--s", ms=3, color=colors(i),
                label=f"{name}: backdoor loss")
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.text(0.0, 1.02, " t=0 backdoored", transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
    ax.text(1.0, 1.02, " t=1 defended", transform=ax.get_xaxis_transform(), fontsize=8, color="grey")
    ax.set_xlabel("t   (θ = θ_init + t · (θ_defended − θ_init))")
    ax.set_ylabel("mean cross-entropy (log scale)")
    ax.set_title(title, pad=16)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
