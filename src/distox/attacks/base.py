"""The attack base class shared by all backdoor attacks (SPEC §3).

An attack knows how to stamp its trigger on a batch of un-normalised images in [0, 1]
(:meth:`Attack.apply`), which labels the poisoned samples get (:meth:`Attack.target_labels`),
which training samples it poisons (:meth:`Attack.poison_indices`), and how the backdoored
model is trained (:meth:`Attack.train_model`: data poisoning + the shared loop by default;
training-controlled attacks override :meth:`Attack.batch_transform` or the whole method).

Resources an attack builds (a blend pattern, a warp field, a perturbation, generator
weights) are returned by :meth:`Attack.resources` as named tensors and restored with
:meth:`Attack.load_resources`, so that a run directory rebuilds the poisoned test set exactly.
"""
from __future__ import annotations

from ..errors import DistoxError
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.core import DatasetBundle, ImageSplit
from ..metrics import BackdoorTestSet


class AttackError(DistoxError):
    """Invalid attack parameters or input, with a message meant for the user."""


@dataclass
class PreparedContext:
    """What :meth:`Attack.prepare` may use to build resources."""

    data: DatasetBundle
    model_factory: Callable[[], nn.Module] | None = None
    device: str | torch.device = "auto"
    cache_dir: Path | None = None
    progress: bool = True


class Attack:
    """Base class: ``Attack(target=0, mode="all2one", poison_rate=0.1, seed=0)``.

    Args:
        target: target label for all-to-one attacks.
        mode: ``"all2one"`` (every poisoned sample → ``target``) or ``"all2all"``
            (label y → (y + shift) mod K).
        poison_rate: fraction of the *whole* training set poisoned, in (0, 1].
        seed: seed for the poisoned-index choice and any random resource.
        shift: label shift for all-to-all.
    """

    name: ClassVar[str] = "base"
    #: "data" (dirty-label data poisoning), "clean-label" or "training" (controls training).
    kind: ClassVar[str] = "data"
    #: Smallest image side the trigger can be applied to.
    min_side: ClassVar[int] = 1
    #: Code revision: bump it when a change to the attack alters the models it produces, so
    #: that ``distox bench`` recomputes its cached cells (1 keeps the keys they had before).
    revision: ClassVar[int] = 1

    def __init__(self, target: int = 0, mode: str = "all2one", poison_rate: float = 0.1,
                 seed: int = 0, shift: int = 1) -> None:
        if mode not in ("all2one", "all2all"):
            raise AttackError(f"mode must be 'all2one' or 'all2all'; got {mode!r}")
        if not (isinstance(poison_rate, (int, float)) and 0.0 < poison_rate <= 1.0):
            raise AttackError(f"poison rate must be in (0, 1]; got {poison_rate}")
        if int(target) < 0:
            raise AttackError(f"target label must be >= 0; got {target}")
        self.target = int(target)
        self.mode = mode
        self.poison_rate = float(poison_rate)
        self.seed = int(seed)
        self.shift = int(shift)
        self.num_classes: int | None = None

    # ------------------------------------------------------------------ parameters
    def params(self) -> dict[str, Any]:
        """Every parameter needed to rebuild this attack (saved in ``attack.json``)."""
        return {"name": self.name, "target": self.target, "mode": self.mode,
                "poison_rate": self.poison_rate, "seed": self.seed, "shift": self.shift}

    def resources(self) -> dict[str, torch.Tensor]:
        """Named tensors the trigger depends on (saved beside the model). None by default."""
        return {}

    def load_resources(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`resources` returned."""

    # ------------------------------------------------------------------ validation
    def check_data(self, data: DatasetBundle) -> None:
        """Validate the target label and image size against a dataset; remembers K."""
        if self.mode == "all2one" and not 0 <= self.target < data.num_classes:
            raise AttackError(
                f"target label {self.target} is outside the dataset's classes 0..{data.num_classes - 1}"
            )
        self.check_image(data.image_shape)
        self.num_classes = data.num_classes

    def check_image(self, shape: tuple[int, int, int]) -> None:
        c, h, w = shape
        if min(h, w) < self.min_side:
            raise AttackError(
                f"{self.name} needs images of at least {self.min_side}×{self.min_side}; got {h}×{w}"
            )

    # ------------------------------------------------------------------ trigger
    def prepare(self, ctx: PreparedContext) -> None:
        """Build resources that depend on the data or a surrogate model (no-op by default)."""
        self.check_data(ctx.data)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on images ``x`` (N, C, H, W) in [0, 1]; returns a new tensor."""
        raise NotImplementedError

    def apply_train(self, x: torch.Tensor) -> torch.Tensor:
        """The trigger as stamped on poisoned *training* images; :meth:`apply` by default
        (Blended overrides it: its train-time blend weight may differ from the test one)."""
        return self.apply(x)

    def target_labels(self, y: torch.Tensor) -> torch.Tensor:
        """t(y): the label the backdoor maps a sample of true label ``y`` to."""
        if self.mode == "all2one":
            return torch.full_like(y, self.target)
        if self.num_classes is None:
            raise AttackError("all2all needs the number of classes; call prepare()/check_data() first")
        return (y + self.shift) % self.num_classes

    # ------------------------------------------------------------------ poisoning
    def poison_indices(self, y: torch.Tensor) -> torch.Tensor:
        """Seeded choice of round(rate·N) training indices to poison.

        Dirty-label: uniformly from all N samples (target class included, as in the
        reference). Clean-label: from target-class samples only; the count is still relative
        to N, and asking for more than the class holds is an error (the reference crashes).
        """
        n = len(y)
        k = int(round(self.poison_rate * n))
        gen = torch.Generator().manual_seed(self.seed)
        if self.kind == "clean-label":
            pool = torch.nonzero(y == self.target).flatten()
            if k > len(pool):
                raise AttackError(
                    f"{self.name} poisons target-class images only: poison rate {self.poison_rate} needs "
                    f"{k} of them but class {self.target} has {len(pool)}; use poison_rate <= {len(pool) / n:.4f}"
                )
            return pool[torch.randperm(len(pool), generator=gen)[:k]].sort().values
        return torch.randperm(n, generator=gen)[:k].sort().values

    def poison_training_set(self, train: ImageSplit) -> tuple[ImageSplit, torch.Tensor]:
        """Return a copy of ``train`` with the chosen samples triggered and relabelled.

        Clean-label attacks keep the labels (their indices are all target-class samples).
        """
        idx = self.poison_indices(train.y)
        x, y = train.x.clone(), train.y.clone()
        if len(idx):
            x[idx] = self.apply_train(train.x[idx]).to(x.dtype)
            if self.kind != "clean-label":
                y[idx] = self.target_labels(train.y[idx])
        return ImageSplit(x, y), idx

    def batch_transform(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None:
        """Per-batch poisoning for training-controlled attacks (None for data poisoning)."""
        return None

    def training_data(self, train: ImageSplit) -> ImageSplit:
        """The data the shared loop trains on: the poisoned set, or clean data when poisoning
        happens per batch."""
        if self.kind == "training":
            return train
        return self.poison_training_set(train)[0]

    def train_model(self, model: nn.Module, data: DatasetBundle, config, *, device="auto",
                    progress: bool = True, checkpoint=None, on_epoch_end=None):
        """Train ``model`` (in place) into a backdoored model; returns the loop's state."""
        from ..training import train

        self.check_data(data)
        poisoned = self.training_data(data.train)
        return train(model, poisoned.x, poisoned.y, config, batch_transform=self.batch_transform(),
                     device=device, progress=progress, checkpoint=checkpoint,
                     on_epoch_end=on_epoch_end, desc=f"attack {self.name}")

    # ------------------------------------------------------------------ evaluation
    def backdoor_test_set(self, test: ImageSplit) -> BackdoorTestSet:
        """Poisoned test images for ASR/RA: all-to-one drops target-class images."""
        keep = test.y != self.target if self.mode == "all2one" else torch.ones_like(test.y, dtype=torch.bool)
        x, y = test.x[keep], test.y[keep]
        with torch.no_grad():
            x_bd = self.apply(x).clamp(0, 1)
        return BackdoorTestSet(x=x_bd, target=self.target_labels(y), true=y)
