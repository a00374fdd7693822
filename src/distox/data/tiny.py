"""Tiny-ImageNet-200: 64×64 RGB, 200 classes; the labelled ``val`` split is the test split.

Layout, as extracted from ``tiny-imagenet-200.zip``::

    <root>/tiny-imagenet-200/wnids.txt                     one WordNet id per line
    <root>/tiny-imagenet-200/train/<wnid>/images/*.JPEG
    <root>/tiny-imagenet-200/val/images/*.JPEG
    <root>/tiny-imagenet-200/val/val_annotations.txt       filename<TAB>wnid<TAB>box...

A ``val`` folder already reorganised into ``val/<wnid>/...`` class folders (what BackdoorBench
does before using ``ImageFolder``) is accepted as well. Labels follow the *sorted* wnids, the
order ``ImageFolder`` gives, so label ``i`` matches the reference. Greyscale JPEGs are converted
to RGB; images not 64×64 are resized. Normalisation statistics are the reference table's.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path


from .core import DataError, DatasetBundle
from .folder import list_images, read_split
from .paths import find_root

log = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
SIZE = (64, 64)
MEAN = (0.4802, 0.4481, 0.3975)
STD = (0.2302, 0.2265, 0.2262)


def _locate(root: Path) -> Path | None:
    for d in (root / FOLDER, root):
        if (d / "wnids.txt").is_file() and (d / "train").is_dir() and (d / "val").is_dir():
            return d
    return None


def _read_wnids(path: Path) -> list[str]:
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{path}: repeated wnids")
    if len(wnids) < 2:
        raise DataError(f"{path}: needs at least two wnids; found {len(wnids)}")
    return sorted(wnids)


def _train_files(train_dir: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for k, wnid in enumerate(wnids):
        files = list_images(train_dir / wnid) if (train_dir / wnid).is_dir() else []
        if not files:
            raise DataError(f"{train_dir / wnid}: no training images for class {wnid}")
        paths += files
        labels += [k] * len(files)
    return paths, labels


def _val_files(val_dir: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    index = {w: k for k, w in enumerate(wnids)}
    ann = val_dir / "val_annotations.txt"
    if ann.is_file() and (val_dir / "images").is_dir():
        paths, labels = [], []
        for line_no, line in enumerate(ann.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(f"{ann}:{line_no}: expected 'filename<TAB>wnid...'")
            name, wnid = parts[0].strip(), parts[1].strip()
            if wnid not in index:
                raise DataError(f"{ann}:{line_no}: wnid {wnid} is not in wnids.txt")
            paths.append(val_dir / "images" / name)
            labels.append(index[wnid])
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{ann} lists {len(missing)} missing image(s), e.g. {missing[0]}")
    else:  # already reorganised into class folders
        extra = sorted(d.name for d in val_dir.iterdir()
                       if d.is_dir() and d.name not in index and d.name != "images")
        if extra:
            raise DataError(f"{val_dir}: class folders not in wnids.txt: {', '.join(extra[:5])}")
        paths, labels = [], []
        for k, wnid in enumerate(wnids):
            files = list_images(val_dir / wnid) if (val_dir / wnid).is_dir() else []
            paths += files
            labels += [k] * len(files)
    if not paths:
        raise DataError(f"{val_dir}: no validation images (expected val/images + "
                        "val_annotations.txt, or val/<wnid>/ class folders)")
    return paths, labels


def load_tiny_bundle(data_root: str | os.PathLike | None = None, progress: bool = True) -> DatasetBundle:
    """Load Tiny-ImageNet-200: 100,000 train / 10,000 val (used as test) images, 64×64 RGB.

    Args:
        data_root: folder holding ``tiny-imagenet-200/`` (or that folder itself); default None
            searches ``$DISTOX_DATA`` (see :func:`~distox.data.paths.find_root`).
        progress: show tqdm bars while decoding (default True).

    The class count is the number of wnids in ``wnids.txt`` (200 for the real dataset).

    Example:
        >>> bundle = load_tiny_bundle("~/datasets", progress=False)
        >>> bundle.num_classes, bundle.image_shape
        (200, (3, 64, 64))
    """
    root = find_root("tiny-imagenet", data_root, lambda r: _locate(r) is not None)
    folder = _locate(root)
    assert folder is not None
    wnids = _read_wnids(folder / "wnids.txt")
    if len(wnids) != 200:
        log.warning("%s lists %d wnids (the real Tiny-ImageNet has 200)", folder, len(wnids))
    train = read_split(*_train_files(folder / "train", wnids), SIZE, 3, progress, "reading Tiny-ImageNet train")
    test = read_split(*_val_files(folder / "val", wnids), SIZE, 3, progress, "reading Tiny-ImageNet val")
    return DatasetBundle(
        name="tiny-imagenet",
        train=train,
        test=test,
        num_classes=len(wnids),
        mean=MEAN,
        std=STD,
        source=str(folder),
        class_names=wnids,
    )
