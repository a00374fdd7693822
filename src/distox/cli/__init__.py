"""Command-line interface: ``distox demo | attack | evaluate | defend | purify | bench | report | plot``."""
from __future__ import annotations

from . import demo  # noqa: F401  (registers commands)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
