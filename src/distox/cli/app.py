"""The one Typer application; command modules register themselves on :data:`app`."""
from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import typer
import yaml

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


class ParamError(DistoxError):
    """A malformed ``--param key=value`` option."""


def parse_value(text: str) -> Any:
    """A ``key=value`` option's value: JSON when it parses (``0.2``, ``1e-4``, ``true``, ``null``,
    ``[1, 2]``, ``{"a": 1}``), else a YAML flow value (``[fc, layer4.*]``), else the string;
    an empty value stays ``""``."""
    text = text.strip()
    if not text:
        return ""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_params(items: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """``["alpha=0.2", "grid-rescale=1"]`` → ``{"alpha": 0.2, "grid_rescale": 1}`` (keys: ``-`` → ``_``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParamError(f"{option} expects key=value; got {item!r}")
        out[key] = parse_value(value)
    return out


def parse_grouped(items: list[str] | None, option: str = "--set") -> dict[str, dict[str, Any]]:
    """``["sau.lr=0.001", "lf.linf=0.1"]`` → ``{"sau": {"lr": 0.001}, "lf": {"linf": 0.1}}``
    (per-method options of the benchmark scripts; values as :func:`parse_value`)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        name, _, arg = key.strip().partition(".")
        if not sep or not name or not arg:
            raise ParamError(f"{option} expects NAME.KEY=VALUE; got {item!r}")
        out.setdefault(name, {})[arg] = parse_value(value)
    return out


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    """distox: remove backdoors from trained image classifiers (D3, ICCV 2025)."""
    setup_logging(verbose)
