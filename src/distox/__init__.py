"""distox — remove backdoors from trained image classifiers.

Centre: D3, Distance-Driven Detoxification (ICCV 2025, arXiv 2411.09585)::

    import distox
    result = distox.purify(model, (X, y))      # D3, distox's default preset
    result.model                               # purified copy; the input is untouched
"""
from __future__ import annotations

from . import attacks, data, defenses, metrics, models
from .api import as_split, purify
from .data import load_dataset, select_retain
from .defenses import D3, FT, Result
from .runs import load_state, save_model

__version__ = "0.1.0"

__all__ = [
    "D3", "FT", "Result", "as_split", "attacks", "data", "defenses", "load_dataset", "load_state",
    "metrics", "models", "purify", "save_model", "select_retain", "__version__",
]
