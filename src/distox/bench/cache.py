"""The bench result store: ``OUT/cells/<key>/`` per cell, ``OUT/bench.json`` per grid.

- An attack cell's directory is a run directory written by ``distox.experiment.run_attack``
  (model, attack record, metrics; resumable from its checkpoint).
- A defense cell's directory holds ``run_defense``'s output for that attack run.
- A clean cell's directory is a ``distox.experiment.run_clean`` directory: the clean model
  shared by the attack cells of one training recipe (``clean_reference``).
- Each is **done** only when ``cell.json`` (the cell's config, result metrics and seconds)
  has been atomically renamed into place (:func:`distox.runs.write_json`), after everything
  else in the directory was written. A run killed at any moment leaves either a done cell or
  a cell without ``cell.json``, which the next run computes again; an unreadable or foreign
  ``cell.json`` also counts as not done. ``cell.json`` also records the code revisions the
  cell ran with (``revisions``, see :mod:`distox.bench.grid`) and, for an attack cell with a
  shared clean model, that clean cell's key (``parent``).
- ``bench.json`` records the last grid run into this directory (config and cell list), which
  ``distox report`` turns into tables.
- ``bench.lock`` is held (``flock``) by the ``distox bench`` process working on the directory:
  a second one on the same directory is refused instead of computing the same cells twice.

Example:
    >>> cache = Cache("runs/smoke")
    >>> [c.key for c in grid.cells if not cache.is_done(c)]     # what a rerun would compute
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..runs import write_json
from .config import BenchError
from .grid import Cell, Grid

CELL_RECORD = "cell.json"
MANIFEST = "bench.json"
LOCK = "bench.lock"
CACHE_VERSION = 1


class Cache:
    """Result store rooted at ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def cells_root(self) -> Path:
        return self.root / "cells"

    def cell_dir(self, key: str) -> Path:
        return self.cells_root / key

    def load(self, key: str) -> dict[str, Any] | None:
        """The finished record of cell ``key``, or None when it is missing, unreadable or not
        the record of that key (a cell is never half-done: see the module docstring)."""
        path = self.cell_dir(key) / CELL_RECORD
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("key") != key or not isinstance(rec.get("result"), dict):
            return None
        return rec

    def is_done(self, cell: Cell | str) -> bool:
        return self.load(cell if isinstance(cell, str) else cell.key) is not None

    def mark_done(self, cell: Cell, result: dict[str, Any], seconds: float,
                  cpu_seconds: float | None = None) -> dict[str, Any]:
        """Atomically write ``cell.json``: from now on the cell counts as done. ``seconds`` is
        wall time, ``cpu_seconds`` the worker's CPU time (all threads; a machine-load-independent
        cost measure on shared machines)."""
        rec = {"cache_version": CACHE_VERSION, "key": cell.key, "kind": cell.kind, "config": cell.config,
               "row": cell.row, "column": cell.column, "group": cell.group, "seed": cell.seed,
               "parent": cell.parent, "revisions": cell.revisions, "result": result,
               "seconds": round(float(seconds), 3),
               "cpu_seconds": None if cpu_seconds is None else round(float(cpu_seconds), 3),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(self.cell_dir(cell.key) / CELL_RECORD, rec)
        return rec

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this directory's lock for a bench run; raise :class:`BenchError` naming the
        holder's pid when another process holds it. The OS drops the lock if the holder dies,
        so a killed run never leaves the directory locked."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise BenchError(f"another `distox bench` (pid {holder}) is running on {self.root}; "
                                 "wait for it or use another --out") from None
            try:
                fh.seek(0)
                fh.truncate()
                fh.write(str(os.getpid()))
                fh.flush()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def pending(self, grid: Grid) -> list[Cell]:
        return [c for c in grid.cells if not self.is_done(c)]

    # ------------------------------------------------------------------ manifest
    def write_manifest(self, config: dict[str, Any], grid: Grid) -> None:
        """Record the grid this directory holds (atomically), for :mod:`distox.bench.report`."""
        write_json(self.root / MANIFEST, {"cache_version": CACHE_VERSION, "config": config,
                                          "cells": [c.to_dict() for c in grid.cells]})

    def read_manifest(self) -> tuple[dict[str, Any], Grid]:
        """The config and grid of the last ``distox bench`` run into this directory."""
        path = self.root / MANIFEST
        if not path.is_file():
            raise BenchError(f"{self.root} is not a bench directory (no {MANIFEST}); "
                             "run `distox bench CONFIG --out DIR` first")
        try:
            data = json.loads(path.read_text())
            cells = [Cell.from_dict(c) for c in data["cells"]]
            config = data["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{path} is unreadable: {exc}") from None
        return config, Grid.of(cells)
