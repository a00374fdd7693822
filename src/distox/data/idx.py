"""MNIST / Fashion-MNIST in their original IDX format (optionally gzip-compressed)."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .core import DataError, DatasetBundle, ImageSplit
from .paths import find_root

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (magic ``0x0000TTDD``: type code TT, DD dimensions, big-endian sizes)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {arr.size} values")
    return arr.reshape(dims)


def _locate(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    return None


def _has_all(root: Path) -> bool:
    return all(_locate(root, stem) is not None for stem in _FILES.values())


def load_idx_bundle(name: str, data_root: str | os.PathLike | None = None) -> DatasetBundle:
    """Load ``mnist`` or ``fashion-mnist`` from IDX files (28×28 grey, 10 classes)."""
    root = find_root(name, data_root, _has_all)
    arrays = {k: read_idx(_locate(root, stem)) for k, stem in _FILES.items()}  # type: ignore[arg-type]

    def split(xk: str, yk: str) -> ImageSplit:
        x = torch.from_numpy(arrays[xk].astype(np.float32) / 255.0).unsqueeze(1)
        return ImageSplit(x, torch.from_numpy(arrays[yk].astype(np.int64)))

    return DatasetBundle(
        name=name,
        train=split("train_x", "train_y"),
        test=split("test_x", "test_y"),
        num_classes=10,
        mean=(0.5,),
        std=(0.5,),
        source=str(root),
        class_names=FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)],
    )
