"""GTSRB (German Traffic Sign Recognition Benchmark): 43 classes, whole images resized to 32×32.

Layout, as BackdoorBench expects it (the official archives' ``Final_Training/Images`` and
``Final_Test/Images`` folders are accepted too)::

    <root>/GTSRB/Train/00000/00000_00000.ppm ... GT-00000.csv
    <root>/GTSRB/Test/00000.ppm ... GT-final_test.csv

The CSVs are semicolon-separated with the header
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``. Like the reference, the whole
image is resized to 32×32 (no ROI crop, no aspect preservation) and normalisation is the
identity (mean 0, std 1). A training class folder without its CSV falls back to every image in
it, labelled by the folder name.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path


from .core import DataError, DatasetBundle
from .folder import is_image_file, read_split
from .paths import find_root

NUM_CLASSES = 43
SIZE = (32, 32)
_TRAIN_DIRS = ("Train", "Final_Training/Images")
_TEST_DIRS = ("Test", "Final_Test/Images")
_TEST_CSV = "GT-final_test.csv"


def _locate(root: Path) -> tuple[Path, Path, Path] | None:
    """(train dir, test dir, test CSV) under ``root`` or ``root/GTSRB``, or None."""
    for base in (root / "GTSRB", root):
        train = next((base / d for d in _TRAIN_DIRS if (base / d).is_dir()), None)
        test = next((base / d for d in _TEST_DIRS if (base / d).is_dir()), None)
        if train is None or test is None:
            continue
        for csv_path in (test / _TEST_CSV, base / _TEST_CSV):
            if csv_path.is_file():
                return train, test, csv_path
    return None


def read_gt_csv(path: Path, folder: Path) -> tuple[list[Path], list[int]]:
    """Read a GTSRB ground-truth CSV: image paths (relative to ``folder``) and ClassIds."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "Filename" not in fields or "ClassId" not in fields:
            raise DataError(f"{path}: expected a ';'-separated header with Filename and ClassId; "
                            f"got {reader.fieldnames}")
        paths, labels = [], []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            try:
                label = int(row["ClassId"])
            except ValueError:
                raise DataError(f"{path}:{line}: ClassId {row['ClassId']!r} is not an integer") from None
            if not 0 <= label < NUM_CLASSES:
                raise DataError(f"{path}:{line}: ClassId {label} outside 0..{NUM_CLASSES - 1}")
            paths.append(folder / row["Filename"])
            labels.append(label)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{path} lists {len(missing)} missing image(s), e.g. {missing[0]}")
    return paths, labels


def _train_files(train_dir: Path) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    class_dirs = sorted(d for d in train_dir.iterdir() if d.is_dir() and d.name.isdigit())
    if not class_dirs:
        raise DataError(f"{train_dir}: no class folders 00000 .. {NUM_CLASSES - 1:05d}")
    for d in class_dirs:
        gt = d / f"GT-{d.name}.csv"
        if gt.is_file():
            p, y = read_gt_csv(gt, d)
        else:
            p = sorted(f for f in d.iterdir() if is_image_file(f))
            y = [int(d.name)] * len(p)
            if y and not 0 <= y[0] < NUM_CLASSES:
                raise DataError(f"{d}: class folder outside 0..{NUM_CLASSES - 1}")
        paths += p
        labels += y
    if not paths:
        raise DataError(f"{train_dir}: no training images")
    return paths, labels


def load_gtsrb_bundle(data_root: str | os.PathLike | None = None, progress: bool = True) -> DatasetBundle:
    """Load GTSRB: 39,209 train / 12,630 test RGB images resized to 32×32, 43 classes.

    Args:
        data_root: folder holding ``GTSRB/`` (or ``GTSRB`` itself); default None searches
            ``$DISTOX_DATA`` (see :func:`~distox.data.paths.find_root`).
        progress: show tqdm bars while decoding (default True).

    Example:
        >>> bundle = load_gtsrb_bundle("~/datasets", progress=False)
        >>> bundle.num_classes, bundle.image_shape
        (43, (3, 32, 32))
    """
    root = find_root("gtsrb", data_root, lambda r: _locate(r) is not None)
    located = _locate(root)
    assert located is not None
    train_dir, test_dir, test_csv = located
    train = read_split(*_train_files(train_dir), SIZE, 3, progress, "reading GTSRB train")
    test_paths, test_labels = read_gt_csv(test_csv, test_dir)
    if not test_paths:
        raise DataError(f"{test_csv}: lists no test images")
    test = read_split(test_paths, test_labels, SIZE, 3, progress, "reading GTSRB test")
    return DatasetBundle(
        name="gtsrb",
        train=train,
        test=test,
        num_classes=NUM_CLASSES,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        source=str(train_dir.parent if train_dir.name == "Train" else train_dir.parent.parent),
        class_names=[str(i) for i in range(NUM_CLASSES)],
    )
