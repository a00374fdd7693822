"""Command-line interface: ``distox demo | attack | evaluate | defend | purify | methods | bench | report | plot``."""
from __future__ import annotations

from . import demo  # noqa: F401  (registers commands)
from . import attack, defend  # noqa: F401  (attack, evaluate, defend)
from . import purify  # noqa: F401
from . import methods  # noqa: F401  (methods: each method's parameters)
from . import interop, plot  # noqa: F401  (import-/export-backdoorbench, plot)
from . import bench  # noqa: F401  (bench, report)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
