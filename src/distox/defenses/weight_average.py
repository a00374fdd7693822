"""The average of a run's last weights (a distox option, not in the paper: D3's ``average``).

Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018): the uniform mean of the weights the optimiser passes through over a
run's last steps lies in a wider part of the loss surface than any one of them, and such a point
tends to keep more accuracy on images it never trained on. D3 ends where its distance term has
pushed the weights as far as the retain images allow (SPEC §1, Eq. 1–2): on few images, the edge
of a region fitted to them. Averaging the steps of the final fraction ``average`` of the run
replaces that edge by the mean of the iterates that reach it.

The mean of norm-constrained weights is shorter than they are, so :meth:`D3.fit` projects the
selected weights back onto their starting norms after :meth:`WeightAverage.apply` (Eq. 2 holds
for the model it returns), and re-estimates BatchNorm's running statistics on the plain retain
images, since no step ran with the averaged weights (:mod:`distox.defenses.bn_stats`; as SWA's
own ``update_bn``).

Reads the weights only (the step count of the run fixes where averaging starts). Measured
(BENCHMARKS.md "Seventeenth round"): over the last half or quarter of the default's steps it kept
no more accuracy than the last step's weights and left a little more of each backdoor, so it is
off in every preset.

Example:
    >>> average = WeightAverage(model.parameters(), start_step=900)
    >>> ...  # call average() after every optimiser step
    >>> average.apply()
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def averaging_start(total_steps: int, fraction: float) -> int:
    """The step after which a run of ``total_steps`` steps averages its last ``fraction`` of steps
    (at least the last one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the averaged fraction of the steps must be in (0, 1]; got {fraction}")
    return max(0, total_steps - max(1, math.ceil(fraction * total_steps)))


class WeightAverage:
    """Running uniform mean of ``params`` over every step after ``start_step`` (1-based steps:
    the call after the first optimiser step counts 1). Stateful, so a checkpointed run resumes
    with the mean it had."""

    def __init__(self, params: Iterable[nn.Parameter], start_step: int) -> None:
        self.params = list(params)
        self.start_step = int(start_step)
        self.step = 0
        self.count = 0
        self.sums = [torch.zeros_like(p, dtype=torch.float64) for p in self.params]

    @torch.no_grad()
    def __call__(self, _model: nn.Module | None = None) -> None:
        """Count one optimiser step; past ``start_step``, add the weights to the mean."""
        self.step += 1
        if self.step <= self.start_step:
            return
        self.count += 1
        for total, p in zip(self.sums, self.params):
            total.add_(p.detach().to(torch.float64))

    @torch.no_grad()
    def apply(self) -> int:
        """Put the mean into the parameters; returns how many steps it holds (0: nothing done)."""
        if self.count:
            for total, p in zip(self.sums, self.params):
                p.copy_((total / self.count).to(p.dtype))
        return self.count

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "count": self.count, "sums": [s.clone() for s in self.sums]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["sums"]) != len(self.sums):
            raise ValueError(f"the saved average holds {len(state['sums'])} tensors; this run trains {len(self.sums)}")
        self.step, self.count = int(state["step"]), int(state["count"])
        for total, saved in zip(self.sums, state["sums"]):
            total.copy_(saved)
