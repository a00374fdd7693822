"""An attack imported from another tool (e.g. BackdoorBench): no trigger function, only its
stored poisoned test set.

A BackdoorBench ``attack_result.pt`` keeps the poisoned test images as PNG files and their
labels, not the code that made them. :func:`distox.interop.backdoorbench.import_record`
turns such a record into a distox run directory whose attack is this class: its
:meth:`ImportedAttack.resources` *are* the stored poisoned test images (uint8, N×C×H×W), their
target labels t(y) and true labels y, so :func:`distox.experiment.load_run`, ``distox defend``
and ``distox evaluate`` score ASR/RA on exactly the images the other tool produced.

It cannot poison new images or train a model (:meth:`apply` raises :class:`AttackError`).

Example:
    >>> atk = ImportedAttack(target=0, source="backdoorbench", original_attack="badnet")
    >>> atk.load_resources({"bd_x": x_uint8, "bd_target": t, "bd_true": y})
    >>> bd = atk.backdoor_test_set(data.test)      # the stored images, in [0, 1]
"""
from __future__ import annotations

from typing import Any

import torch

from ..data.core import ImageSplit
from ..metrics import BackdoorTestSet
from .base import Attack, AttackError
from .registry import register


@register
class ImportedAttack(Attack):
    """Args: ``source`` (the tool, e.g. ``"backdoorbench"``), ``original_attack`` (its name
    there), plus the base-class arguments (target, mode, poison_rate, seed, shift), recorded
    for reference. The poisoned test set comes from :meth:`load_resources`."""

    name = "imported"
    kind = "data"
    listed = False  # made by `distox import-backdoorbench` only; it cannot train a model

    def __init__(self, source: str = "unknown", original_attack: str = "unknown", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source, self.original_attack = str(source), str(original_attack)
        self._bd: dict[str, torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        return {**super().params(), "source": self.source, "original_attack": self.original_attack}

    def resources(self) -> dict[str, torch.Tensor]:
        return dict(self._bd)

    def load_resources(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = {"bd_x", "bd_target", "bd_true"} - set(tensors)
        if missing:
            raise AttackError(f"imported attack: resources lack {sorted(missing)}")
        x = tensors["bd_x"]
        if x.ndim != 4 or not (len(x) == len(tensors["bd_target"]) == len(tensors["bd_true"])):
            raise AttackError("imported attack: bd_x must be (N, C, H, W) with one target and one true label per image")
        self._bd = {k: v.clone() for k, v in tensors.items()}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise AttackError(f"the imported {self.source} attack '{self.original_attack}' has no trigger function; "
                          "only its stored poisoned test set can be used")

    def poison_indices(self, y: torch.Tensor) -> torch.Tensor:
        raise AttackError("an imported attack cannot poison new training data")

    def backdoor_test_set(self, test: ImageSplit) -> BackdoorTestSet:
        """The stored poisoned test images (``test`` is only checked for a matching image shape)."""
        if not self._bd:
            raise AttackError("imported attack: its stored poisoned test set was not loaded")
        x = self._bd["bd_x"]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if tuple(x.shape[1:]) != tuple(test.x.shape[1:]):
            raise AttackError(f"stored poisoned images are {tuple(x.shape[1:])} (C, H, W) but the test images "
                              f"are {tuple(test.x.shape[1:])}")
        return BackdoorTestSet(x=x, target=self._bd["bd_target"].long(), true=self._bd["bd_true"].long())
