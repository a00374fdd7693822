"""Helpers shared by the training-controlled attacks (WaNet, Input-aware) that poison each
mini-batch on the fly.

The reference poisons the *first* ``int(rate·bs)`` rows of every batch, which truncates the
rate (12 of 128 = 9.375 % instead of 10 %). distox draws ``stochastic_round(rate·bs)`` rows at
random positions, so the expected poisoned fraction equals the rate exactly for any batch size.

Example:
    >>> gen = torch.Generator().manual_seed(0)
    >>> groups = split_batch(128, [0.1, 0.2], gen)   # two disjoint index tensors, ~13 and ~26
"""
from __future__ import annotations

import math

import torch


def stochastic_round(value: float, generator: torch.Generator | None = None) -> int:
    """floor(value) + Bernoulli(frac(value)): an integer whose expectation is ``value``."""
    low = math.floor(value)
    frac = value - low
    if frac > 0 and float(torch.rand((), generator=generator)) < frac:
        low += 1
    return int(low)


def split_batch(n: int, rates: list[float], generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Disjoint random row groups of a batch of ``n``, group i of ~``rates[i]·n`` rows.

    Each count is stochastically rounded (expectation ``rate·n``) and clipped so the groups
    never exceed the batch. Random numbers come from ``generator`` (CPU; the global CPU RNG
    when None); the indices are returned on ``device``.
    """
    counts, left = [], n
    for rate in rates:
        k = min(stochastic_round(rate * n, generator), left)
        counts.append(k)
        left -= k
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)
    groups, start = [], 0
    for k in counts:
        groups.append(order[start:start + k])
        start += k
    return groups
