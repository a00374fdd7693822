"""scikit-learn's bundled 8×8 handwritten digits: the embedded default dataset (no download)."""
from __future__ import annotations

import torch

from .core import DatasetBundle, ImageSplit, stratified_split


def load_digits_bundle(seed: int = 0, test_fraction: float = 0.25) -> DatasetBundle:
    """1,797 grey 8×8 digit images (values 0..16 scaled to [0, 1]), split per class (seeded)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target, dtype=torch.long)
    train_idx, test_idx = stratified_split(y, test_fraction, seed=seed)
    return DatasetBundle(
        name="digits",
        train=ImageSplit(x[train_idx], y[train_idx]),
        test=ImageSplit(x[test_idx], y[test_idx]),
        num_classes=10,
        mean=(0.5,),
        std=(0.5,),
        source="sklearn.datasets.load_digits",
        class_names=[str(i) for i in range(10)],
    )
