"""Named datasets as tensors in [0, 1], seeded retain subsets, and on-device batching.

``load_dataset(name)`` accepts: ``digits`` (embedded default), ``fashion-mnist``, ``mnist``,
``cifar10``, ``cifar100``, ``gtsrb``, ``tiny-imagenet`` and ``folder:PATH`` (an image folder
with one sub-folder per class). Each dataset's training augmentation, as the reference does it
(crop padding, flip on CIFAR-10 only), is in :data:`REFERENCE_AUGMENTATION`.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from .augmentation import REFERENCE_AUGMENTATION, Augmentation, augmentation_for, resolve_flip
from .core import DataError, DatasetBundle, ImageSplit, select_retain, stratified_split
from .digits import load_digits_bundle
from .cifar import load_cifar_bundle
from .idx import load_idx_bundle
from .gtsrb import load_gtsrb_bundle
from .tiny import load_tiny_bundle

_LOADERS: dict[str, Callable[..., DatasetBundle]] = {}


def register_dataset(name: str, loader: Callable[..., DatasetBundle]) -> None:
    """Register ``loader(data_root=None, **kw) -> DatasetBundle`` under ``name``."""
    _LOADERS[name] = loader


register_dataset("digits", lambda data_root=None, seed=0, **kw: load_digits_bundle(seed=seed))
register_dataset("fashion-mnist", lambda data_root=None, **kw: load_idx_bundle("fashion-mnist", data_root))
register_dataset("mnist", lambda data_root=None, **kw: load_idx_bundle("mnist", data_root))
register_dataset("cifar10", lambda data_root=None, **kw: load_cifar_bundle("cifar10", data_root, **kw))
register_dataset("cifar100", lambda data_root=None, **kw: load_cifar_bundle("cifar100", data_root, **kw))
register_dataset("gtsrb", lambda data_root=None, **kw: load_gtsrb_bundle(data_root, **kw))
register_dataset("tiny-imagenet", lambda data_root=None, **kw: load_tiny_bundle(data_root, **kw))


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (plus ``folder:PATH``)."""
    return sorted(_LOADERS)


def load_dataset(
    name: str, data_root: str | os.PathLike | None = None, **kwargs
) -> DatasetBundle:
    """Load a named dataset; raises :class:`DataError` naming the paths tried when missing."""
    if name.startswith("folder:"):
        from .folder import load_folder_bundle

        return load_folder_bundle(name.split(":", 1)[1], **kwargs)
    if name not in _LOADERS:
        raise DataError(
            f"unknown dataset '{name}'. Known: {', '.join(list_datasets())}, or folder:PATH"
        )
    return _LOADERS[name](data_root=data_root, **kwargs)


__all__ = [
    "Augmentation", "DataError", "DatasetBundle", "ImageSplit", "REFERENCE_AUGMENTATION", "augmentation_for",
    "load_dataset", "list_datasets", "register_dataset", "resolve_flip", "select_retain", "stratified_split",
]
