"""Core data containers: image tensors in [0, 1], their labels and normalisation.

Every dataset in distox is held as a pair of tensors (images ``float32`` in ``[0, 1]`` with
shape ``(N, C, H, W)``, labels ``int64`` with shape ``(N,)``).  Normalisation is *not* applied
to the data: it lives inside the model (:class:`distox.models.Normalized`), so triggers are
always stamped on un-normalised images as SPEC §3 requires.
"""
from __future__ import annotations

from ..errors import DistoxError
from dataclasses import dataclass, field, replace

import torch


class DataError(DistoxError):
    """Raised for missing or malformed datasets, with a message meant for the user."""


@dataclass
class ImageSplit:
    """One split of a dataset: images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` (N,).

    ``dataset`` names the dataset the images come from (set by :class:`DatasetBundle`, kept by
    :meth:`subset`); it chooses their training augmentation (:mod:`distox.data.augmentation`).
    None: unknown origin, e.g. a user's own tensors.
    """

    x: torch.Tensor
    y: torch.Tensor
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"images must have shape (N, C, H, W); got {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise DataError(
                f"labels must have shape ({self.x.shape[0]},), one class index per image; got {tuple(self.y.shape)}"
            )
        self.x = self.x.float()
        self.y = self.y.long()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: torch.Tensor) -> "ImageSplit":
        """Return the samples at ``indices`` (a copy)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return ImageSplit(self.x[indices].clone(), self.y[indices].clone(), self.dataset)

    def to(self, device: torch.device | str) -> "ImageSplit":
        return ImageSplit(self.x.to(device), self.y.to(device), self.dataset)


@dataclass
class DatasetBundle:
    """A named dataset: train and test splits, class count and normalisation statistics."""

    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the splits are this dataset's: tag them (sharing the tensors) for their augmentation
        self.train = replace(self.train, dataset=self.name)
        self.test = replace(self.test, dataset=self.name)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def in_channels(self) -> int:
        return self.image_shape[0]


def select_retain(
    n: int,
    *,
    ratio: float | None = None,
    count: int | None = None,
    seed: int = 0,
    minimum: int = 0,
) -> torch.Tensor:
    """Seeded uniform choice of the retain (clean fine-tuning) subset.

    SPEC §1: the retain set is 5 % of the training set chosen uniformly at random with a
    recorded seed. Give either ``ratio`` (fraction of ``n``) or ``count``; ``minimum`` raises a
    ratio-derived count to at least that many samples (capped at ``n``). Returns sorted indices.
    """
    if (ratio is None) == (count is None):
        raise ValueError("give exactly one of ratio= or count=")
    if ratio is not None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"retain ratio must be in (0, 1]; got {ratio}")
        count = max(int(round(ratio * n)), minimum)
    assert count is not None
    if count < 1:
        raise ValueError(f"retain count must be at least 1; got {count}")
    count = min(count, n)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:count].sort().values


def stratified_split(
    y: torch.Tensor, test_fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split of indices into (train, held-out) with ``test_fraction`` held out.

    Every class with at least two samples keeps at least one sample on each side.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    train_parts, test_parts = [], []
    for cls in torch.unique(y).tolist():
        idx = torch.nonzero(y == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        test_parts.append(idx[:k])
        train_parts.append(idx[k:])
    return torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values


def holdout_split(split: "ImageSplit", fraction: float, seed: int = 0) -> tuple["ImageSplit", "ImageSplit"]:
    """Seeded stratified (kept, held-out) split of ``split`` (:func:`stratified_split`).

    Raises ``ValueError`` when ``fraction`` is not in (0, 1) or when fewer than 2 images would be
    kept or none held out.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1); got {fraction}")
    kept, held = stratified_split(split.y, fraction, seed=seed)
    if len(kept) < 2 or len(held) < 1:
        raise ValueError(f"{len(split)} images are too few to hold out {fraction:.0%} and keep 2")
    return split.subset(kept), split.subset(held)
