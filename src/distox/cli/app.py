"""The one Typer application; command modules register themselves on :data:`app`."""
from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import typer

from ..errors import DistoxError

app = typer.Typer(
    help="distox: remove backdoors from trained image classifiers (D3, ICCV 2025).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DistoxError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished epochs are checkpointed; rerun the same command to resume",
                       err=True)
            raise typer.Exit(130) from None

    return wrapper


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    """distox: remove backdoors from trained image classifiers (D3, ICCV 2025)."""
    setup_logging(verbose)
