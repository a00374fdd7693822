"""Do the clean labels mean what the suspect model means? A check made before purifying.

A defense fine-tunes the suspect model towards the labels of the clean data. When those labels
are not the model's own (image folders mapped to labels in another order than the model was
trained with, the wrong ``--normalize``, images in 0–255, ...) it unlearns the task instead of
the backdoor, and the result looks like a purified model. :func:`check_labels` measures the
suspect model on all the clean images first and finds two signs of that:

- **near chance**: accuracy below ``max(p0 + (100 − p0)/10, p0 + 3·SE)`` percent, where ``p0``
  is the largest class's share of the images (what always predicting one class scores: 1/K for
  K balanced classes) and ``SE = 100·sqrt(p0/100·(1 − p0/100)/n)`` for ``n`` images. The model
  must beat guessing by a tenth of the way to 100 % *and* by three standard errors (for 10
  balanced classes: 19 % on 400 images or more, 24 % on 40).
- **swapped classes**: at least half of the classes (each with ≥ 2 images) have most (> 50 %) of
  their images assigned by the model to one single *other* label: the classes are there, under
  other numbers. (Fashion-MNIST folders sorted by name score 31.5 % with a model at 84 %: not
  near chance, but six of ten classes swapped.)

A third cause looks like the first and is not about labels: a model with BatchNorm whose running
statistics never caught up with its weights (a momentum too slow for how long it trained —
torchvision's MnasNet uses 0.0003, a Keras conversion 0.001 — scores near chance in evaluation
mode). When the model is near chance, the check also scores it with each batch's own statistics
(batches of 256 in a seeded random order, BatchNorm in training mode, nothing else); if that beats
the floor, the labels are the model's and the check says the statistics are stale instead
(:attr:`LabelCheck.stale_batchnorm`; not a problem: D3's default re-estimates them when the
momentum is that slow, ``bn_recalibrate="auto"``).

Either of the first two is a :attr:`LabelCheck.problem`; ``distox purify`` refuses to run on it (nothing
written, exit 2) and :func:`distox.purify` warns (or raises with ``label_check="error"``).
When the model's majority labels form a permutation of the classes, :meth:`LabelCheck.order`
gives the class order they imply (what ``--classes`` would take).

Example:
    >>> check = check_labels(model, clean_split)
    >>> check.accuracy, check.floor, check.problem(["cat", "dog"])
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data.core import DataError, ImageSplit
from .metrics import predict
from .utils import batchnorm_modules, eval_mode, has_batchnorm, resolve_device

#: What a caller does with labels the check finds wrong: ``error`` (refuse), ``warn`` (go on,
#: saying so) or ``off`` (no check). ``distox.purify`` defaults to ``warn``, ``distox purify`` to ``error``.
MODES = ("error", "warn", "off")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a :class:`DataError` naming them."""
    if mode not in MODES:
        raise DataError(f"label_check must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


#: A class counts as swapped when more than this share of its images go to one other label.
SWAP_SHARE = 0.5


def near_chance_floor(chance: float, n: int) -> float:
    """Accuracy (%) a model must reach on ``n`` images to count as above chance (module doc)."""
    p = chance / 100.0
    se = 100.0 * math.sqrt(p * (1.0 - p) / max(n, 1))
    return max(chance + (100.0 - chance) / 10.0, chance + 3.0 * se)


@dataclass
class LabelCheck:
    """What :func:`check_labels` measured (accuracies in percent)."""

    accuracy: float
    floor: float
    chance: float
    n: int
    classes: list[int]
    majority: dict[int, tuple[int, float]] = field(default_factory=dict)  # label → (most predicted, share)
    batch_stats_accuracy: float | None = None  # measured only when near chance, on a BatchNorm model

    @property
    def stale_batchnorm(self) -> bool:
        """Near chance with the running statistics, above the floor with each batch's own: the
        labels are right and the model's BatchNorm statistics are not its weights'."""
        return (self.accuracy < self.floor and self.batch_stats_accuracy is not None
                and self.batch_stats_accuracy >= self.floor)

    @property
    def near_chance(self) -> bool:
        return self.accuracy < self.floor and not self.stale_batchnorm

    def stale_message(self) -> str | None:
        """What :attr:`stale_batchnorm` means, or None."""
        if not self.stale_batchnorm:
            return None
        return (f"the suspect model classifies {self.accuracy:.2f}% of the {self.n} clean images correctly with its "
                f"BatchNorm running statistics but {self.batch_stats_accuracy:.2f}% with each batch's own: its "
                f"running statistics do not match its weights (a BatchNorm momentum too slow for its training?). "
                f"The labels look right; D3's default re-estimates the statistics after purifying when the "
                f"momentum is that slow")

    @property
    def swapped(self) -> dict[int, tuple[int, float]]:
        """Classes whose images mostly go to one other label: label → (that label, share)."""
        return {c: (m, s) for c, (m, s) in self.majority.items() if m != c and s > SWAP_SHARE}

    @property
    def mostly_swapped(self) -> bool:
        """(Not with stale BatchNorm statistics: those send every class anywhere.)"""
        return not self.stale_batchnorm and len(self.classes) >= 2 and 2 * len(self.swapped) >= len(self.classes)

    def order(self, names: Sequence[str]) -> list[str] | None:
        """The class order the model's majority labels imply (``names[c]`` at the position the
        model gives class ``c``), when they are a permutation of the classes; else None."""
        if set(self.majority) != set(self.classes):
            return None
        target = {c: m for c, (m, _) in self.majority.items()}
        if sorted(target.values()) != list(range(len(self.classes))):
            return None
        order = [""] * len(self.classes)
        for c, m in target.items():
            order[m] = names[c]
        return order

    def problem(self, names: Sequence[str] | None = None, hint: str = "") -> str | None:
        """None when the labels look right; else one message naming what is wrong and ``hint``."""
        if not (self.near_chance or self.mostly_swapped):
            return None
        name = (lambda c: names[c] if names is not None and c < len(names) else str(c))
        text = (f"the suspect model classifies {self.accuracy:.2f}% of the {self.n} clean images correctly "
                f"({len(self.classes)} classes; chance {self.chance:.2f}%")
        if self.near_chance:
            text += f", near-chance floor {self.floor:.2f}%)"
        else:
            text += ")"
        if self.swapped:
            shown = ", ".join(f"{name(c)}→{m} ({100 * s:.0f}%)" for c, (m, s) in sorted(self.swapped.items())[:6])
            more = "" if len(self.swapped) <= 6 else f", … {len(self.swapped)} in all"
            text += f"; classes it mostly assigns to another label: {shown}{more}"
        text += ". The labels or the preprocessing are likely wrong"
        return text + (f"; {hint}" if hint else "")

    def to_dict(self) -> dict[str, Any]:
        out = {"accuracy": round(self.accuracy, 4), "near_chance_floor": round(self.floor, 4),
               "chance": round(self.chance, 4), "images": self.n, "near_chance": self.near_chance,
               "swapped": {str(c): {"predicted": m, "share": round(s, 4)} for c, (m, s) in self.swapped.items()}}
        if self.batch_stats_accuracy is not None:
            out.update(batch_stats_accuracy=round(self.batch_stats_accuracy, 4), stale_batchnorm=self.stale_batchnorm)
        return out


@torch.no_grad()
def batch_statistics_accuracy(model: nn.Module, clean: ImageSplit, device: str | torch.device = "cpu",
                              batch_size: int = 256, seed: int = 0) -> float:
    """Accuracy (%) of a copy of ``model`` whose BatchNorm layers normalise with each batch's own
    statistics (training mode; everything else in evaluation mode), on batches of ``batch_size``
    clean images in a seeded random order (a batch of one class would have that class's statistics).
    ``model`` is left as it is. ``device`` may be ``"auto"``, as everywhere in distox."""
    device = resolve_device(device)
    probe = copy.deepcopy(model).to(device)
    order = torch.randperm(len(clean), generator=torch.Generator().manual_seed(seed))
    correct = 0
    with eval_mode(probe):
        for _, bn in batchnorm_modules(probe):
            bn.train()
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:
                continue
            pred = probe(clean.x[idx].to(device)).argmax(1).cpu()
            correct += int((pred == clean.y[idx].cpu()).sum())
    return 100.0 * correct / max(len(clean), 1)


def check_labels(model: nn.Module, clean: ImageSplit, device: str | torch.device = "cpu") -> LabelCheck:
    """Measure the suspect ``model`` (eval mode) on every clean image: accuracy, the near-chance
    floor for these labels, and each class's most predicted label (module docstring)."""
    pred = predict(model, clean.x, device=device)
    y = clean.y.cpu()
    classes = sorted(int(c) for c in torch.unique(y))
    counts = torch.bincount(y)
    n = len(y)
    chance = 100.0 * float(counts.max()) / max(n, 1)
    majority: dict[int, tuple[int, float]] = {}
    for c in classes:
        got = pred[y == c]
        if len(got) >= 2:
            values, freq = torch.unique(got, return_counts=True)
            best = int(freq.argmax())
            majority[c] = (int(values[best]), float(freq[best]) / len(got))
    acc = 100.0 * float((pred == y).float().mean()) if n else 0.0
    floor = near_chance_floor(chance, n)
    batch_acc = None
    if acc < floor and has_batchnorm(model):
        batch_acc = batch_statistics_accuracy(model, clean, device)
    return LabelCheck(accuracy=acc, floor=floor, chance=chance, n=n, classes=classes, majority=majority,
                      batch_stats_accuracy=batch_acc)
