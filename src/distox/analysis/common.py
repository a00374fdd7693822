"""Shared helpers of the analysis plots: finding defense results in a run directory, loading
their models, seeded subsampling, and writing PNG/CSV files atomically."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runs import RunError, _atomic, load_into, load_state

log = logging.getLogger(__name__)


def defense_dirs(run_dir: str | Path, methods: Sequence[str] | None = None) -> dict[str, Path]:
    """``{name: RUN_DIR/defense/NAME}`` for every finished defense result (defense.json and
    model.safetensors present), sorted by name, optionally restricted to ``methods``; each
    unfinished result left out is named in a warning."""
    root = Path(run_dir) / "defense"
    found = {}
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if not d.is_dir():
                continue
            missing = [f for f in ("defense.json", "model.safetensors") if not (d / f).is_file()]
            if not missing:
                found[d.name] = d
            elif not methods:  # a named one is refused below
                log.warning("left out %s: not a finished defense result (no %s)", d, " or ".join(missing))
    if methods:
        missing = [m for m in methods if m not in found]
        if missing:
            raise RunError(f"no finished defense result for {', '.join(missing)} under {root} "
                           f"(found: {', '.join(found) or 'none'})")
        found = {m: found[m] for m in methods}
    if not found:
        raise RunError(f"no defense results under {root}; run e.g. `distox defend d3 {run_dir}` first")
    return found


def load_defended(run: Any, defense_dir: Path) -> nn.Module:
    """The purified model of ``defense_dir`` in the run's architecture (eval mode, CPU)."""
    from ..experiment import model_factory

    model = model_factory(run.spec, run.data)()
    load_into(model, load_state(defense_dir / "model.safetensors"), source=str(defense_dir / "model.safetensors"))
    return model.eval()


def subsample(n: int, k: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted seeded choice of ``min(k, n)`` of ``range(n)`` (all when ``k`` is None)."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[: int(k)].sort().values


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Rows → CSV (columns in first-seen order), atomically."""
    from ..experiment import write_history

    write_history(Path(path), rows)
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int = 130) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
