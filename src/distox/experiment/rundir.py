"""Run-directory I/O shared by attack, clean and defense runs: file names, records, per-epoch
histories, bit-identity digests, library versions, and the rules for reusing a directory."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..metrics import round_metrics
from ..runs import FORMAT_VERSION, RunError, _atomic, read_json
from ..training import TrainingDiverged
from ..utils import tensor_digest  # noqa: F401  (re-exported: run directories use it)

MODEL_FILE = "model.safetensors"
ATTACK_RECORD = "attack.json"
RESOURCES_FILE = "attack_resources.safetensors"
METRICS_FILE = "metrics.json"
SPEC_FILE = "spec.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.pt"
DEFENSE_RECORD = "defense.json"
CLEAN_DIR = "clean"
CLEAN_RECORD = "clean.json"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (recorded in every run)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"distox": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("numpy", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - both are dependencies
            pass
    return out


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write per-epoch rows as CSV (columns: union of keys in first-seen order), atomically;
    floats rounded as in every record (:func:`distox.metrics.round_metrics`)."""
    rows = round_metrics(rows)
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    text = buf.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    _atomic(path, write)


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a ``history.csv`` back as a list of rows of floats (empty cells dropped)."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Sorted keys whose values differ between two spec dicts (``data_root``, where the data
    live on this machine, does not count; nested dicts compare after a JSON round trip)."""
    a, b = json.loads(json.dumps(old, default=str)), json.loads(json.dumps(new, default=str))
    return sorted(k for k in set(a) | set(b) if k != "data_root" and a.get(k) != b.get(k))


def check_out_dir(out: Path, spec_dict: dict[str, Any], force: bool, what: str) -> None:
    """Refuse to mix two different specs in one directory (unless ``force``: then clear it)."""
    spec_file = out / SPEC_FILE
    if spec_file.exists():
        old = read_json(spec_file)
    elif (out / ATTACK_RECORD).exists() and what == "attack":  # e.g. a run directory made by an importer
        old = read_json(out / ATTACK_RECORD).get("spec") or {}
    else:
        return
    changed = differing_keys(old, spec_dict)
    if not changed:
        return
    if not force:
        raise RunError(f"{out} holds a different {what} run (differs in: {', '.join(changed)}); "
                       "choose another output directory or pass --force to replace it")
    for name in (MODEL_FILE, ATTACK_RECORD, RESOURCES_FILE, METRICS_FILE, HISTORY_FILE, CHECKPOINT_FILE,
                 CLEAN_RECORD, SPEC_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CLEAN_DIR, ignore_errors=True)


def train_guarded(fn: Callable[[], Any], what: str) -> Any:
    """Run a training step ``fn``, reporting divergence as a :class:`RunError` about ``what``."""
    try:
        return fn()
    except TrainingDiverged as exc:
        raise RunError(f"{what}: {exc}") from None


def read_record(run_dir: Path, name: str) -> dict[str, Any]:
    """Read a run record, rejecting ones written by a newer distox format."""
    record = read_json(Path(run_dir) / name)
    if not isinstance(record, dict):
        raise RunError(f"{Path(run_dir) / name} is not a distox record")
    version = record.get("format_version")
    if not isinstance(version, int):
        raise RunError(f"{Path(run_dir) / name} has no valid format_version; it was not written by distox")
    if version > FORMAT_VERSION:
        raise RunError(f"{Path(run_dir) / name} has format_version {version}, newer than this distox "
                       f"understands ({FORMAT_VERSION}); upgrade distox to read it")
    return record
