"""Which weights D3 measures its distance over (SPEC §1, "Selected weights θ_s").

The selection names modules; the selected tensors are the ``weight`` of every ``nn.Linear``
and ``nn.Conv2d`` inside them. ``"auto"`` is the final classifier: the last ``nn.Linear``
*in forward order* (found with hooks on one example batch when one is given, else in
registration order) — ``linear`` in PreAct-ResNet18, ``fc`` in torchvision ResNets, ``head``
in ViTs. ``"all-linear"`` takes every ``nn.Linear``, ``"all"`` every ``nn.Linear`` and
``nn.Conv2d`` (the whole network's weights; distox's default D3 preset), ``"all-but-first"``
all of them except the first one the input meets in forward order (the stem: a bank of filters
on raw pixels, e.g. ``conv1`` or a ViT's patch embedding). Names may be exact module names or glob
patterns (``fnmatch``), e.g. ``"layer4.*"``.
"""
from __future__ import annotations

from ..errors import DistoxError
import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

WEIGHTED = (nn.Linear, nn.Conv2d)


class SelectionError(DistoxError):
    """The layer selection matched nothing usable."""


def linear_forward_order(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of ``nn.Linear`` modules in the order their forward runs (registration order
    when no ``example`` batch is given)."""
    return forward_order(model, example, (nn.Linear,))


def forward_order(model: nn.Module, example: torch.Tensor | None = None,
                  kinds: tuple[type[nn.Module], ...] = WEIGHTED) -> list[str]:
    """Names of the modules of ``kinds`` in the order their forward runs (a module called twice
    counts where it last ran; registration order when no ``example`` batch is given)."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, kinds)}
    if example is None or not names:
        return list(names.values())
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(names[mod])) for m in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    seen: list[str] = []
    for n in order:
        if n in seen:
            seen.remove(n)
        seen.append(n)
    return seen or list(names.values())


def select_weights(
    model: nn.Module,
    selection: str | Sequence[str] = "auto",
    example: torch.Tensor | None = None,
) -> dict[str, nn.Parameter]:
    """Map ``"<module>.weight"`` → parameter for every Linear/Conv2d inside the selected modules.

    Raises :class:`SelectionError` when the selection resolves to no Linear/Conv2d weight.
    """
    modules = dict(model.named_modules())
    if isinstance(selection, str):
        selection = [selection]
    chosen: list[str] = []
    for item in selection:
        if item == "auto":
            order = linear_forward_order(model, example)
            if not order:
                raise SelectionError(
                    "automatic layer selection needs an nn.Linear classifier, and this model has "
                    "none; pass layers=[...] with module names (see model.named_modules())"
                )
            chosen.append(order[-1])
        elif item == "all-linear":
            chosen += [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        elif item == "all":
            chosen += [n for n, m in modules.items() if isinstance(m, WEIGHTED)]
        elif item == "all-but-first":
            order = forward_order(model, example)
            first = order[0] if len(order) > 1 else None
            chosen += [n for n, m in modules.items() if isinstance(m, WEIGHTED) and n != first]
        else:
            matched = [n for n in modules if n and (n == item or fnmatch.fnmatchcase(n, item))]
            if not matched:
                sample = ", ".join(n for n in list(modules)[1:12])
                raise SelectionError(f"layer selection '{item}' matches no module (modules: {sample}, ...)")
            chosen += matched
    weights: dict[str, nn.Parameter] = {}
    for name in chosen:
        for sub_name, sub in modules[name].named_modules():
            if isinstance(sub, WEIGHTED):
                weights[".".join(p for p in (name, sub_name, "weight") if p)] = sub.weight
    if not weights:
        raise SelectionError(
            f"layer selection {list(selection)} contains no nn.Linear or nn.Conv2d weight"
        )
    return weights
