"""Where named datasets are looked for: ``--data-root``, then ``$DISTOX_DATA``, then system paths."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .core import DataError

#: Debian/Ubuntu packages that ship datasets (e.g. ``apt-get install dataset-fashion-mnist``).
SYSTEM_ROOTS: dict[str, list[str]] = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}

#: One line telling the user how to obtain each dataset.
HOW_TO_GET: dict[str, str] = {
    "fashion-mnist": "install the Debian package (apt-get install -y dataset-fashion-mnist) or place "
    "train-images-idx3-ubyte.gz etc. under <root>/fashion-mnist",
    "mnist": "place the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) under <root>/mnist",
    "cifar10": "extract cifar-10-python.tar.gz so that <root>/cifar-10-batches-py/data_batch_1 exists",
    "cifar100": "extract cifar-100-python.tar.gz so that <root>/cifar-100-python/train exists",
    "gtsrb": "extract the GTSRB training and final-test archives so that <root>/GTSRB/Train/00000/ "
    "and <root>/GTSRB/Test/GT-final_test.csv exist",
    "tiny-imagenet": "extract tiny-imagenet-200.zip so that <root>/tiny-imagenet-200/train exists",
}


def candidate_roots(name: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """Directories to search for dataset ``name``, in priority order."""
    roots: list[Path] = []
    for base in (data_root, os.environ.get("DISTOX_DATA")):
        if base:
            base = Path(base).expanduser()
            roots += [base / name, base]
    roots += [Path(p) for p in SYSTEM_ROOTS.get(name, [])]
    seen: list[Path] = []
    for r in roots:
        if r not in seen:
            seen.append(r)
    return seen


def find_root(
    name: str,
    data_root: str | os.PathLike | None,
    is_valid: Callable[[Path], bool],
    extra: Sequence[Path] = (),
) -> Path:
    """Return the first candidate root that ``is_valid``; else raise one clear :class:`DataError`."""
    tried = candidate_roots(name, data_root) + list(extra)
    for root in tried:
        if root.is_dir() and is_valid(root):
            return root
    listing = "\n  ".join(str(p) for p in tried) or "(none: pass --data-root or set $DISTOX_DATA)"
    raise DataError(
        f"dataset '{name}' not found. Paths tried:\n  {listing}\n"
        f"How to get it: {HOW_TO_GET.get(name, 'see the distox README')}"
    )
