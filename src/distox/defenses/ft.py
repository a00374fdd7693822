"""FT — vanilla fine-tuning on the retain set (the paper's first baseline, SPEC §4).

Cross-entropy, SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine annealing, batch 256,
100 epochs, all parameters trained, BatchNorm in train mode.

Example:
    >>> result = FT(epochs=20)(suspect_model, retain_split)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..training import Checkpoint, TrainState, cross_entropy, train
from .base import Defense
from .registry import register


@register
class FT(Defense):
    """Args: ``momentum`` (0.9), ``weight_decay`` (5e-4), plus :class:`Defense`'s arguments."""

    name = "ft"

    def __init__(self, momentum: float = 0.9, weight_decay: float = 5e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)

    def objective(self):
        """The loss minimised on the retain set (plain CE here; FT-SAM reuses this class)."""
        return cross_entropy

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        config = self.loop_config(retain, momentum=self.momentum, weight_decay=self.weight_decay,
                                  **self.extra_loop_options())
        return train(model, retain.x, retain.y, config, objective=self.objective(), on_epoch_end=evaluator,
                     checkpoint=checkpoint, device=device, progress=progress, desc=self.name)

    def extra_loop_options(self) -> dict[str, Any]:
        """Further :class:`~distox.training.LoopConfig` fields (e.g. SAM) for subclasses."""
        return {}
