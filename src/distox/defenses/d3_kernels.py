"""D3's two per-step weight terms over all selected weights at once (fused ``torch._foreach_*``).

Every D3 step (SPEC §1, :mod:`distox.defenses.d3`) adds to plain fine-tuning the distance
Σ_W ‖W − W_init‖_2 of the objective, with its gradient, and, after the optimiser's step, the
projection W ← W · ‖W_init‖_2 / ‖W‖_2 back onto the norm sphere. Written weight by weight they
are a handful of small kernels and Python calls per selected weight (21 weights in a
PreAct-ResNet-18), which fp32 steps hide but bf16 autocast and GPUs, whose steps are much
shorter, do not. Here both run over the list of weights in a few fused ops, and the distance's
gradient is written out — ∂‖W − W_init‖/∂W = (W − W_init)/‖W − W_init‖ — instead of being
recorded op by op by autograd. The values are the same up to float rounding (tests compare
them); the cost is measured in BENCHMARKS.md ("D3's weight terms, fused").

:func:`use_fused` says when D3 takes this path: for p = 2 under a reduced-precision plan (bf16
or fp16 autocast), where rounding already differs from fp32. In fp32 D3 keeps the per-weight
code, so fp32 results — the faithful presets' pinned ones among them — stay bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

#: Smallest norm divided by (a weight exactly at its start has no distance direction).
TINY = 1e-12


def use_fused(precision: str, p: float) -> bool:
    """Whether D3 computes its weight terms here: ``precision`` is the loop's resolved plan name
    (fp32, bf16 or fp16) and the distance the Frobenius one (p = 2)."""
    return p == 2 and precision != "fp32"


class _Distances(torch.autograd.Function):
    """‖W_k − W_init,k‖_2 for every k as one (K,) tensor; the backward pass returns
    g_k · (W_k − W_init,k) / ‖W_k − W_init,k‖_2 for the upstream gradient g."""

    @staticmethod
    def forward(ctx, init: Sequence[torch.Tensor], *weights: torch.Tensor) -> torch.Tensor:
        diffs = torch._foreach_sub(weights, init)
        norms = torch.stack(torch._foreach_norm(diffs, 2))
        ctx.save_for_backward(norms, *diffs)
        return norms

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        norms, *diffs = ctx.saved_tensors
        coef = grad / norms.clamp_min(TINY)
        return (None, *torch._foreach_mul(diffs, list(coef.unbind())))


def fused_distances(weights: Sequence[torch.Tensor], init: Sequence[torch.Tensor]) -> torch.Tensor:
    """The (K,) tensor of Frobenius distances ‖W_k − W_init,k‖_2, differentiable in ``weights``."""
    return _Distances.apply(list(init), *weights)


@torch.no_grad()
def fused_project(weights: Sequence[torch.Tensor], norms: torch.Tensor) -> None:
    """Projection onto S in place: W_k ← W_k · norms[k] / ‖W_k‖_2 (``norms``: the (K,) start norms)."""
    current = torch.stack(torch._foreach_norm(list(weights), 2)).clamp_min(TINY)
    torch._foreach_mul_(list(weights), list((norms / current).unbind()))
