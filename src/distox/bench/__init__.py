"""Benchmark grids: typed YAML configs, cells keyed by config hash and code revision (shared
clean-model cells for the clean reference), a resumable cache, local/Ray executors and
paper-style tables with the clean-model ASR floor, verdicts and per-part summaries over seeds
(``distox bench`` / ``distox report``).

Example:
    >>> from distox.bench import load_config, expand, Cache, execute
    >>> cfg = load_config("smoke"); grid = expand(cfg)
    >>> execute(grid, Cache("runs/smoke"))
"""
from __future__ import annotations

from .cache import Cache
from .config import BenchConfig, BenchError, load_config, parse_config
from .executors import BenchSummary, RunOptions, compute_cell, execute
from .grid import Cell, Grid, cell_key, expand
from .report import FORMATS, build_report, render


def prepare(config: BenchConfig, out: str) -> tuple[Grid, Cache]:
    """Expand ``config`` and record it as the grid of bench directory ``out``."""
    grid = expand(config)
    cache = Cache(out)
    cache.write_manifest(config.model_dump(mode="json"), grid)
    return grid, cache


__all__ = [
    "BenchConfig", "BenchError", "BenchSummary", "Cache", "Cell", "FORMATS", "Grid", "RunOptions",
    "build_report", "cell_key", "compute_cell", "execute", "expand", "load_config", "parse_config",
    "prepare", "render",
]
