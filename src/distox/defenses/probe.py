"""Looking inside a model with forward hooks, for defenses that act on intermediate features
(FP's classifier input, NAD's stage outputs, D3's input pruning): no assumption about the architecture beyond
``nn.Module`` hooks firing when a submodule's forward returns.

Example:
    >>> outs = module_outputs(model, images[:2])          # [(name, output), ...] in firing order
    >>> with FeatureTap(model, ["net.layer3"]) as tap:
    ...     logits = model(x); fmap = tap["net.layer3"]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..utils import eval_mode


def layer_input(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The (first positional) input ``layer`` receives when ``model`` runs on ``x`` — the last
    call's, if it runs more than once — in eval mode without gradients (training flags restored);
    None when ``layer`` never runs."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[-1] if seen else None


def module_outputs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, Any]]:
    """``(name, output)`` of every submodule (the root excluded), in the order their forward
    calls return, for one batch run in eval mode without gradients (every module's training
    flag is restored after). A module called twice appears twice."""
    fired: list[tuple[str, Any]] = []
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: fired.append((name, out)))
               for name, m in model.named_modules() if name]
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return fired


class FeatureTap:
    """Keeps the latest output of each named module (forward hooks) until :meth:`remove`.

    Raises ``KeyError`` naming the module when a name is not one of ``model.named_modules()``.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(f"no module named {missing[0]!r}")
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keeper(n)) for n in names]

    def _keeper(self, name: str):
        def keep(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            self.outputs[name] = out
        return keep

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
