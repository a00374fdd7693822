"""CIFAR-10 / CIFAR-100 from the official "python version" archives, read without trusting pickle.

Layouts (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/train, test, meta

Each file is a pickled dict: ``b"data"`` is a ``uint8`` array of shape (N, 3072) holding the
red, green and blue 32×32 planes of each image in row-major order, and ``b"labels"`` (CIFAR-10)
or ``b"fine_labels"`` (CIFAR-100) a list of ints. The meta file names the classes.

Why a restricted unpickler: unpickling can call *any* importable function (a file reducing to
``os.system`` runs a shell command the moment it is loaded), and dataset archives are routinely
fetched from mirrors. :class:`SafeUnpickler` therefore resolves only the few globals that a
genuine batch references (numpy's array and dtype reconstruction) and refuses everything else
with a :class:`DataError`; a plain ``pickle.load`` is never used. Normalisation statistics are
the reference table's (BackdoorBench, ``dataset_and_transform_generate.py``).
"""
from __future__ import annotations

import codecs
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core import DataError, DatasetBundle, ImageSplit
from .paths import find_root

log = logging.getLogger(__name__)

_reconstruct = np.empty(0).__reduce__()[0]  # numpy's array unpickling helper, any numpy version


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """What numpy's own ``_frombuffer`` does for protocol-5 pickles, on a checked dtype."""
    arr = np.frombuffer(buf, dtype=_safe_dtype(dtype))
    return arr.reshape(shape, order="F" if order == "F" else "C")


def _safe_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dt


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes; latin-1 only."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed")
    return text.encode("latin-1", errors)


#: (module, name) → object: the only globals a CIFAR pickle may reference.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "int"): int,
    ("__builtin__", "dict"): dict,  # Python 2 spellings (the official archives are Python 2)
    ("__builtin__", "list"): list,
    ("__builtin__", "str"): str,
    ("__builtin__", "int"): int,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED` globals (dicts, lists, numpy arrays).

    Example:
        >>> with open("cifar-10-batches-py/test_batch", "rb") as fh:
        ...     batch = SafeUnpickler(fh, encoding="bytes").load()
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a dataset pickle with :class:`SafeUnpickler`; any refusal becomes a :class:`DataError`."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"refusing to load {path}: {exc}. A CIFAR batch only holds dicts, lists and numpy "
            "arrays; this file is not a genuine batch (possibly malicious)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated/garbled files raise many types
        raise DataError(f"cannot read {path} as a CIFAR batch: {type(exc).__name__}: {exc}") from None


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _keys_as_str(d: Any, path: Path) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    return {_text(k): v for k, v in d.items()}


#: name → archive folder, file names, label/meta keys, class count and reference mean/std.
_SPECS: dict[str, dict[str, Any]] = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        label_key="labels",
        meta="batches.meta",
        meta_key="label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.247, 0.243, 0.261),
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        label_key="fine_labels",
        meta="meta",
        meta_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def _dataset_dir(root: Path, spec: dict[str, Any]) -> Path | None:
    for d in (root / spec["folder"], root):
        if all((d / f).is_file() for f in spec["train"] + spec["test"]):
            return d
    return None


def _read_split(folder: Path, files: list[str], spec: dict[str, Any]) -> ImageSplit:
    xs, ys = [], []
    for fname in files:
        path = folder / fname
        batch = _keys_as_str(safe_load_pickle(path), path)
        if "data" not in batch or spec["label_key"] not in batch:
            raise DataError(f"{path}: missing 'data' or '{spec['label_key']}' entry")
        data = batch["data"]
        labels = np.asarray(batch[spec["label_key"]])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
        if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels for "
                            f"{data.shape[0]} images")
        if labels.size and (labels.min() < 0 or labels.max() >= spec["num_classes"]):
            raise DataError(f"{path}: labels outside 0..{spec['num_classes'] - 1}")
        xs.append(data)
        ys.append(labels.astype(np.int64))
    data = np.concatenate(xs)
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float().div_(255.0)
    return ImageSplit(x, torch.from_numpy(np.concatenate(ys)))


def load_cifar_bundle(
    name: str, data_root: str | os.PathLike | None = None, progress: bool = True
) -> DatasetBundle:
    """Load ``cifar10`` (10 classes) or ``cifar100`` (100 fine classes): 32×32 RGB.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_root: folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (or the
            extracted folder itself); default None searches ``$DISTOX_DATA`` (see
            :func:`~distox.data.paths.find_root`).
        progress: accepted for a uniform loader signature; reading needs no bar (default True).

    Example:
        >>> bundle = load_cifar_bundle("cifar10", data_root="~/datasets")
        >>> bundle.train.x.shape
        torch.Size([50000, 3, 32, 32])
    """
    if name not in _SPECS:
        raise DataError(f"unknown CIFAR variant '{name}'; expected one of {sorted(_SPECS)}")
    spec = _SPECS[name]
    root = find_root(name, data_root, lambda r: _dataset_dir(r, spec) is not None)
    folder = _dataset_dir(root, spec)
    assert folder is not None
    train = _read_split(folder, spec["train"], spec)
    test = _read_split(folder, spec["test"], spec)
    class_names = [str(i) for i in range(spec["num_classes"])]
    meta_path = folder / spec["meta"]
    if meta_path.is_file():
        meta = _keys_as_str(safe_load_pickle(meta_path), meta_path)
        names = meta.get(spec["meta_key"])
        if isinstance(names, list) and len(names) == spec["num_classes"]:
            class_names = [_text(n) for n in names]
        else:
            log.warning("%s: no usable '%s'; using numeric class names", meta_path, spec["meta_key"])
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        num_classes=spec["num_classes"],
        mean=spec["mean"],
        std=spec["std"],
        source=str(folder),
        class_names=class_names,
    )
