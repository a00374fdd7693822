"""Model selection on a held-out split of the retain data (a distox extension, not in the paper).

A defense that fine-tunes for a fixed number of epochs returns whatever the last epoch gave;
on a model it has never seen that can be an over- or under-trained point. With selection on,
the retain set is split (stratified, seeded) into a training part and a held-out part; after
every epoch the held-out accuracy is measured (model in eval mode) and the epoch to keep is
chosen by one rule:

    among the epochs whose held-out accuracy is at least ``start − tolerance`` (start = the
    suspect model's own held-out accuracy), keep the one with the largest ``score``
    (D3: the distance travelled Σ_W ‖W − W_init‖); if no epoch is within the tolerance, keep
    the one with the highest held-out accuracy.

Only retain data (clean images the defender holds) are read: never test labels, never the
trigger. ``tolerance="auto"`` is one standard error of the held-out accuracy estimate,
``100·sqrt(a(1 − a)/n)`` points for a start accuracy ``a`` on ``n`` held-out images, floored
at ``min_tolerance`` — the drop that the held-out split cannot tell from noise.

Example:
    >>> train_part, held = split_retain(retain, 0.2, seed=0)
    >>> chooser = EpochChooser(held, start_acc=accuracy(model, held), tolerance=1.5)
    >>> # in on_epoch_end: row.update(chooser(epoch, model, score=distance))
    >>> chooser.restore(model); chooser.summary()
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..data.core import ImageSplit, holdout_split
from ..metrics import predict
from ..utils import copy_state_into
from .base import DefenseError


def split_retain(retain: ImageSplit, fraction: float, seed: int) -> tuple[ImageSplit, ImageSplit]:
    """Stratified, seeded (train part, held-out part) of the retain set."""
    try:
        return holdout_split(retain, fraction, seed)
    except ValueError as exc:
        raise DefenseError(f"val_fraction {fraction} on a retain set of {len(retain)} images: {exc}") from None


def accuracy(model: nn.Module, split: ImageSplit, device: torch.device | str = "cpu") -> float:
    """Accuracy (%) of ``model`` in eval mode on ``split``."""
    correct = int((predict(model, split.x, device=device) == split.y.cpu()).sum())
    return 100.0 * correct / max(len(split), 1)


def standard_error_points(acc: float, n: int) -> float:
    """Standard error (points) of an accuracy ``acc`` (%) measured on ``n`` images."""
    a = min(max(acc / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(a * (1.0 - a) / max(n, 1))


def resolve_tolerance(tolerance: float | str, start_acc: float, n_held: int, min_tolerance: float) -> float:
    """A number stays; ``"auto"`` is one standard error of the held-out accuracy, ≥ ``min_tolerance``."""
    if tolerance == "auto":
        return max(float(min_tolerance), standard_error_points(start_acc, n_held))
    return float(tolerance)


class EpochChooser:
    """Keeps the epoch chosen by the module's rule, as an in-memory copy of the weights."""

    def __init__(self, held: ImageSplit, start_acc: float, tolerance: float,
                 device: torch.device | str = "cpu") -> None:
        self.held, self.start_acc, self.tolerance, self.device = held, float(start_acc), float(tolerance), device
        self._within: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (score, epoch, state)
        self._best_acc: tuple[float, float, int, dict[str, torch.Tensor]] | None = None  # (acc, score, epoch, state)

    @staticmethod
    def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def __call__(self, epoch: int, model: nn.Module, score: float) -> dict[str, float]:
        """Measure epoch ``epoch``; keep it if the rule prefers it. Returns the held-out row."""
        acc = accuracy(model, self.held, self.device)
        if acc >= self.start_acc - self.tolerance and (self._within is None or score > self._within[0]):
            self._within = (score, epoch, self._snapshot(model))
        if self._best_acc is None or (acc, score) > self._best_acc[:2]:
            self._best_acc = (acc, score, epoch, self._snapshot(model))
        return {"heldout_acc": acc}

    def _chosen(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(epoch, weights) the rule keeps: the farthest within tolerance, else the most accurate."""
        if self._within is not None:
            return self._within[1], self._within[2]
        return (self._best_acc[2], self._best_acc[3]) if self._best_acc is not None else None

    @property
    def chosen_epoch(self) -> int | None:
        chosen = self._chosen()
        return chosen[0] if chosen is not None else None

    def restore(self, model: nn.Module) -> None:
        """Load the chosen epoch's weights into ``model`` (no-op before any epoch); the snapshot
        is copied into the model's own tensors."""
        chosen = self._chosen()
        if chosen is not None:
            copy_state_into(model, chosen[1])

    def state_dict(self) -> dict[str, Any]:
        """The epochs kept so far (for a training checkpoint; the held-out split, start accuracy
        and tolerance are recomputed by the caller)."""
        return {"within": self._within, "best_acc": self._best_acc}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s kept epochs (their weights back on the CPU)."""
        def cpu(kept):
            return None if kept is None else (*kept[:-1], {k: v.to("cpu") for k, v in kept[-1].items()})

        self._within, self._best_acc = cpu(state["within"]), cpu(state["best_acc"])

    def summary(self) -> dict[str, Any]:
        """What was chosen and why (JSON-serialisable)."""
        return {"chosen_epoch": self.chosen_epoch, "within_tolerance": self._within is not None,
                "start_heldout_acc": round(self.start_acc, 4), "tolerance": round(self.tolerance, 4),
                "heldout_size": len(self.held)}
