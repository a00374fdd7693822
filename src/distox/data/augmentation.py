"""Training augmentation per dataset, as the reference (BackdoorBench) does it.

The reference trains attacked models, and gives defenses their retain set, through one train
transform per dataset: a random crop with 4 px of zero padding at the dataset's own image size,
then a horizontal flip (p = 0.5) **on CIFAR-10 only**. MNIST, CIFAR-100, GTSRB and
Tiny-ImageNet (64×64, still 4 px) are cropped but never flipped.

:data:`REFERENCE_AUGMENTATION` holds that per dataset; datasets the reference does not have
follow its nearest rule (Fashion-MNIST as MNIST; the 8×8 digits with the padding scaled to
1 px). Data of any other origin (``folder:PATH``, user tensors, an unknown name) are not
flipped, since a mirror image is not always the same class (digits, text, signs), and get the
4 px padding scaled with the image side.

``flip=None`` in :class:`~distox.experiment.AttackSpec`, the bench's ``attack_settings`` and
every :class:`~distox.defenses.base.Defense` means "as the reference does for this dataset";
``True``/``False`` override it.

Example:
    >>> augmentation_for("cifar10", 32)
    Augmentation(crop_padding=4, flip=True)
    >>> augmentation_for("fashion-mnist", 28), augmentation_for(None, 64, flip=True)
    (Augmentation(crop_padding=4, flip=False), Augmentation(crop_padding=8, flip=True))
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Augmentation:
    """Random crop with ``crop_padding`` px of zero padding, then a horizontal flip (p = 0.5)
    when ``flip``."""

    crop_padding: int
    flip: bool


#: The reference's train-transform augmentation per dataset name (``load_dataset`` names).
REFERENCE_AUGMENTATION: dict[str, Augmentation] = {
    "cifar10": Augmentation(crop_padding=4, flip=True),
    "cifar100": Augmentation(crop_padding=4, flip=False),
    "gtsrb": Augmentation(crop_padding=4, flip=False),
    "tiny-imagenet": Augmentation(crop_padding=4, flip=False),
    "mnist": Augmentation(crop_padding=4, flip=False),
    "fashion-mnist": Augmentation(crop_padding=4, flip=False),  # not in the reference: as MNIST
    "digits": Augmentation(crop_padding=1, flip=False),  # not in the reference: MNIST's, scaled to 8×8
}


def scaled_crop_padding(side: int) -> int:
    """Crop padding for data the table does not know: 4 px at 32 px, scaled with the side, ≥ 1."""
    return max(1, int(round(4 * side / 32)))


def resolve_flip(flip: bool | None, dataset: str | None) -> bool:
    """``flip`` when given; None: whether the reference flips ``dataset`` (unknown: no flip)."""
    if flip is not None:
        return bool(flip)
    reference = REFERENCE_AUGMENTATION.get(dataset or "")
    return reference is not None and reference.flip


def augmentation_for(dataset: str | None, side: int, flip: bool | None = None) -> Augmentation:
    """The augmentation of images of ``side`` px from ``dataset`` (None: unknown origin), the
    flip overridden by ``flip`` when it is not None."""
    reference = REFERENCE_AUGMENTATION.get(dataset or "")
    padding = reference.crop_padding if reference is not None else scaled_crop_padding(side)
    return Augmentation(crop_padding=padding, flip=resolve_flip(flip, dataset))
