"""Image folders (one sub-folder per class) and the fast image reader shared by GTSRB and Tiny.

``load_folder_bundle(path)`` reads a folder laid out like torchvision's ``ImageFolder``::

    path/cat/001.png
    path/cat/sub/002.jpg      # images anywhere below a class folder count
    path/dog/003.png

Labels (:func:`folder_labels`): with ``classes`` (a list of names, label ``i`` the ``i``-th, or a
``{name: label}`` dict) as given; else, when every sub-folder name is a number (``0/ 1/ … 10/``),
that number; else the sub-folder names sorted (label ``i`` is the ``i``-th name, as
torchvision's ``ImageFolder``). Images are
resized to one common size and converted to RGB unless every image is greyscale. A seeded
per-class split (:func:`~distox.data.core.stratified_split`) holds ``test_fraction`` out.

:func:`read_images` decodes many small files into one preallocated ``uint8`` array with a
thread pool (Pillow releases the GIL while decoding and resizing), so the only per-image Python
work is a handful of calls; a progress bar (:mod:`distox.progress`) shows progress.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..progress import progress_bar
from .core import DataError, DatasetBundle, ImageSplit, stratified_split

log = logging.getLogger(__name__)

#: File suffixes (lower case) treated as images.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"})
#: Pillow modes that hold one grey channel.
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_CHUNK = 256


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a main dependency
        raise DataError("reading image files needs Pillow: pip install pillow") from exc
    return Image


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is in :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """All image files below ``folder`` (recursive), sorted by path for a stable order."""
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and p.is_file())


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _run_chunks(n: int, work, progress: bool, desc: str) -> None:
    """Call ``work(start, stop)`` over ``range(n)`` in chunks on a thread pool, with a bar."""
    bounds = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    with progress_bar(total=n, desc=desc, unit="img", enabled=progress) as bar:
        if len(bounds) <= 1 or _workers() == 1:
            for s, e in bounds:
                work(s, e)
                bar.update(e - s)
            return
        pool = ThreadPoolExecutor(max_workers=_workers())
        try:
            for (s, e), _ in zip(bounds, pool.map(lambda b: work(*b), bounds)):
                bar.update(e - s)
        finally:  # on a bad file, drop the chunks not yet started instead of decoding them
            pool.shutdown(wait=True, cancel_futures=True)


def image_headers(
    paths: Sequence[Path], progress: bool = True, desc: str = "scanning images"
) -> tuple[list[tuple[int, int]], list[str]]:
    """Read only the headers of ``paths``: their (width, height) sizes and Pillow modes."""
    Image = _pil()
    sizes: list[tuple[int, int]] = [(0, 0)] * len(paths)
    modes: list[str] = [""] * len(paths)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            try:
                with Image.open(paths[i]) as im:
                    sizes[i], modes[i] = im.size, im.mode
            except Exception as exc:  # noqa: BLE001 - any decoder error means a bad file
                raise DataError(f"cannot read image {paths[i]}: {exc}") from None

    _run_chunks(len(paths), work, progress, desc)
    return sizes, modes


def _convert(im, mode: str):
    """``im.convert(mode)``, except that 16/32-bit integer grey is scaled (65535 → 255).

    Pillow's own conversion of such images to ``L``/``RGB`` clips every value above 255.
    """
    if im.mode.startswith("I"):
        arr = np.asarray(im, dtype=np.float64) / 257.0
        im = _pil().fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return im.convert(mode)


def read_images(
    paths: Sequence[Path],
    size: tuple[int, int],
    channels: int = 3,
    progress: bool = True,
    desc: str = "reading images",
) -> np.ndarray:
    """Decode ``paths`` into one ``uint8`` array of shape (N, H, W, C).

    Args:
        paths: image files (any format Pillow reads).
        size: target ``(height, width)``; images of another size are resized with Pillow's
            antialiased bilinear filter (what torchvision's ``Resize`` does on PIL images);
            images already of that size are copied exactly.
        channels: 3 (convert to RGB) or 1 (convert to grey, Pillow's ITU-R 601-2 luma).
        progress: show a tqdm bar (default True).
        desc: the bar's label.

    Example:
        >>> arr = read_images(list_images(Path("pics")), (32, 32), progress=False)
        >>> arr.shape[1:]
        (32, 32, 3)
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    Image = _pil()
    h, w = int(size[0]), int(size[1])
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(paths), h, w, channels), dtype=np.uint8)
    flat = out.reshape(len(paths), h, w) if channels == 1 else out

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            try:
                with Image.open(paths[i]) as im:
                    im = _convert(im, mode)
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.Resampling.BILINEAR)
                    flat[i] = np.asarray(im)
            except Exception as exc:  # noqa: BLE001 - any decoder error means a bad file
                raise DataError(f"cannot read image {paths[i]}: {exc}") from None

    _run_chunks(len(paths), work, progress, desc)
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) ``uint8`` → (N, C, H, W) ``float32`` in [0, 1], with one float allocation."""
    n, h, w, c = images.shape
    x = torch.empty((n, c, h, w), dtype=torch.float32)
    src = torch.from_numpy(images).permute(0, 3, 1, 2)
    for s in range(0, n, 4096):  # chunked: no full-size temporary beyond ``x`` itself
        x[s : s + 4096].copy_(src[s : s + 4096]).div_(255.0)
    return x


def read_split(paths: Sequence[Path], labels: Sequence[int], size: tuple[int, int], channels: int = 3,
               progress: bool = True, desc: str = "reading images") -> ImageSplit:
    """Decode ``paths`` resized to ``size`` into an :class:`ImageSplit` labelled ``labels``."""
    x = to_tensor(read_images(list(paths), size, channels, progress=progress, desc=desc))
    return ImageSplit(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if x.shape[0] == 0:
        return (0.5,) * x.shape[1], (0.5,) * x.shape[1]
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _parse_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        hw = tuple(int(v) for v in image_size)
        if len(hw) != 2:
            raise DataError(f"image_size must be an int or (height, width); got {image_size!r}")
    if min(hw) < 1:
        raise DataError(f"image_size must be positive; got {image_size!r}")
    return hw  # type: ignore[return-value]


def label_rule(names: Sequence[str], classes: Sequence[str] | Mapping[str, int] | None = None) -> str:
    """How :func:`folder_labels` maps these folder names: ``"given"``, ``"numeric"`` or ``"sorted"``."""
    if classes is not None:
        return "given"
    return "numeric" if names and all(n.isascii() and n.isdigit() for n in names) else "sorted"


def folder_labels(names: Sequence[str], classes: Sequence[str] | Mapping[str, int] | None = None
                  ) -> tuple[dict[str, int], list[str]]:
    """The label of each class folder name, and the class names by label (``str(i)`` for a
    label no folder has), by the rule of :func:`label_rule` (module docstring).

    Raises :class:`DataError` for a folder missing from ``classes``, a name or label given twice,
    or two numeric folders of one number (``1/`` and ``01/``).
    """
    rule = label_rule(names, classes)
    if rule == "sorted":
        ordered = sorted(names)
        return {n: i for i, n in enumerate(ordered)}, ordered
    if rule == "numeric":
        given = {n: int(n) for n in names}
    elif isinstance(classes, Mapping):
        bad = {k: v for k, v in classes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
        if bad:
            raise DataError(f"class labels must be integers >= 0; got {bad}")
        given = {str(k): int(v) for k, v in classes.items()}
    else:
        order = [str(c) for c in classes]  # type: ignore[union-attr]
        twice = sorted({c for c in order if order.count(c) > 1})
        if twice:
            raise DataError(f"class name(s) given twice: {', '.join(twice)}")
        given = {c: i for i, c in enumerate(order)}
    unknown = sorted(n for n in names if n not in given)
    if unknown:
        raise DataError(f"class folder(s) {', '.join(unknown)} are not among the given classes "
                        f"({', '.join(given)})")
    by_label: dict[int, list[str]] = {}
    for n, label in given.items():
        by_label.setdefault(label, []).append(n)
    clash = [f"{', '.join(sorted(ns))} → {label}" for label, ns in sorted(by_label.items()) if len(ns) > 1]
    if clash:
        raise DataError(f"several classes map to one label: {'; '.join(clash)}")
    named = {label: ns[0] for label, ns in by_label.items()}
    return {n: given[n] for n in names}, [named.get(i, str(i)) for i in range(max(given.values()) + 1)]


def load_folder_bundle(
    path: str | os.PathLike,
    image_size: int | Sequence[int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    grayscale: bool | None = None,
    progress: bool = True,
    classes: Sequence[str] | Mapping[str, int] | None = None,
) -> DatasetBundle:
    """Load an image folder with one sub-folder per class as a :class:`DatasetBundle`.

    Args:
        path: the folder; each visible sub-folder is a class, labelled by :func:`folder_labels`;
            images (png/jpg/jpeg/bmp/ppm/webp) anywhere below a class folder belong to it.
        image_size: ``int`` or ``(height, width)`` to resize every image to; default None uses
            the most common size among the images (ties: the larger area, then taller).
        test_fraction: share held out per class as the test split, seeded (default 0.2);
            0 keeps every image in train and leaves the test split empty.
        seed: seed of the split (default 0).
        grayscale: True → 1 channel, False → RGB; default None is grey only if every image
            is greyscale.
        progress: show tqdm bars while reading (default True).
        classes: the class order (list of folder names, label ``i`` the ``i``-th) or a
            ``{folder name: label}`` dict; default None: numeric names as labels, else sorted.

    Mean/std are measured per channel on the train split (the folder has no reference table).

    Example:
        >>> bundle = load_folder_bundle("clean_images/", image_size=32, progress=False)
        >>> bundle.train.x.shape[1:], bundle.class_names[:2]
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a directory")
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    if not class_dirs:
        raise DataError(
            f"image folder '{root}' has no class sub-folders; expected {root}/<class>/<image>.png"
        )
    per_class = [list_images(d) for d in class_dirs]
    if not any(per_class):
        raise DataError(
            f"image folder '{root}' holds no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) in its class sub-folders"
        )
    if len(class_dirs) < 2:
        raise DataError(
            f"image folder '{root}' has only one class ('{class_dirs[0].name}'); "
            "a classifier needs at least two class sub-folders"
        )
    paths = [p for files in per_class for p in files]
    empty = [d.name for d, files in zip(class_dirs, per_class) if not files]
    if len(paths) < len(class_dirs):
        raise DataError(
            f"image folder '{root}' has fewer images ({len(paths)}) than classes "
            f"({len(class_dirs)}); class folder(s) without images: {', '.join(empty)}"
        )
    if empty:  # would silently shift every later label, so refuse (as ImageFolder does)
        raise DataError(f"image folder '{root}': class folder(s) without images: {', '.join(empty)}")
    mapping, class_names = folder_labels([d.name for d in class_dirs], classes)
    labels = np.concatenate([np.full(len(f), mapping[d.name], dtype=np.int64) for d, f in zip(class_dirs, per_class)])
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1); got {test_fraction}")

    hw = _parse_size(image_size)
    need_headers = hw is None or grayscale is None
    if need_headers:
        sizes, modes = image_headers(paths, progress=progress, desc=f"scanning {root.name}")
        if hw is None:
            counts = Counter(sizes)
            w, h = max(counts, key=lambda s: (counts[s], s[0] * s[1], s[1]))
            hw = (h, w)
            if len(counts) > 1:
                log.info("%s: %d image sizes; resizing all to %dx%d (the most common)",
                         root, len(counts), h, w)
        if grayscale is None:
            grayscale = all(m in _GREY_MODES for m in modes)
    channels = 1 if grayscale else 3
    x = to_tensor(read_images(paths, hw, channels, progress=progress, desc=f"reading {root.name}"))
    y = torch.from_numpy(labels)

    if test_fraction == 0.0:
        train_idx, test_idx = torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    else:
        train_idx, test_idx = stratified_split(y, test_fraction, seed=seed)
    train = ImageSplit(x[train_idx], y[train_idx])
    mean, std = _channel_stats(train.x)
    return DatasetBundle(
        name=f"folder:{root}",
        train=train,
        test=ImageSplit(x[test_idx], y[test_idx]),
        num_classes=len(class_names),
        mean=mean,
        std=std,
        source=str(root),
        class_names=class_names,
    )
