"""The one Typer application; command modules register themselves on :data:`app`."""
from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

import typer
import yaml

from ..errors import DistoxError
from ..progress import set_progress

app = typer.Typer(
    help="distox: remove backdoors from trained image classifiers (D3, ICCV 2025).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without a `<bool>` type, no box drawing
)


#: ``-v`` / ``-q`` of every command (the same as before the command: ``distox -v defend ...``).
_VERBOSITY = {
    "verbose": typer.Option(False, "--verbose", "-v", help="Also log progress details (resumed runs, "
                            "resized images, chosen parameters) to stderr."),
    "quiet": typer.Option(False, "--quiet", "-q", help="No progress bars and no warnings; errors only."),
}


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one message on stderr and exit code 2.

    Every command goes through here, so here it also gets ``-v/--verbose`` and ``-q/--quiet``
    (added to its signature unless it declares them itself; a command that declares ``quiet``
    still receives it) and their effect (:func:`configure_output`)."""
    sig = inspect.signature(fn)
    own = set(sig.parameters)
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=bool)
             for name, opt in _VERBOSITY.items() if name not in own]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose, quiet = bool(kwargs.get("verbose")), bool(kwargs.get("quiet"))
        for p in added:
            kwargs.pop(p.name, None)
        if verbose or quiet:
            configure_output(verbose=verbose, quiet=quiet)
        try:
            return fn(*args, **kwargs)
        except DistoxError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished epochs are checkpointed; rerun the same command to resume",
                       err=True)
            raise typer.Exit(130) from None

    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, **{p.name: bool for p in added}}
    return wrapper


class ParamError(DistoxError):
    """A malformed ``--param key=value`` option."""


#: ``--precision``, ``--channels-last``, ``--compile`` of the commands that train
#: (:mod:`distox.acceleration`); :func:`speed_params` turns them into parameters.
SPEED_OPTIONS = {
    "precision": typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 (GPU, or "
                              "a CPU with native bf16) or fp16 (CUDA, loss-scaled)."),
    "channels_last": typer.Option(False, "--channels-last", help="Convolutions in channels-last (NHWC) memory order."),
    "compile": typer.Option(False, "--compile", help="Train through torch.compile (eager where it fails)."),
}


def speed_params(params: dict[str, Any], precision: str, channels_last: bool, compile: bool) -> dict[str, Any]:
    """``params`` plus the :data:`SPEED_OPTIONS` given away from their defaults; the same key
    also set by ``--param`` to another value is a :class:`ParamError`."""
    from ..acceleration import check_options, non_default

    chosen = non_default(check_options(precision, channels_last, compile))
    clash = sorted(k for k, v in chosen.items() if k in params and params[k] != v)
    if clash:
        raise ParamError(f"{', '.join(clash)} given both as --{clash[0].replace('_', '-')} and --param "
                         "with different values")
    return {**params, **chosen}


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


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_output(verbose: bool = False, quiet: bool = False) -> None:
    """What the CLI shows on stderr: warnings and errors of ``distox.*`` loggers (default), also
    their INFO lines (``verbose``: resumed runs, resized images, chosen parameters), or errors
    only with no progress bars and Python warnings silenced (``quiet``, which wins over
    ``verbose``). Only the ``distox`` logger is configured, never the root logger."""
    logger = logging.getLogger("distox")
    handler = next((h for h in logger.handlers if isinstance(h, _CurrentStderr)), None)
    if handler is None:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    logger.setLevel(logging.INFO if verbose and not quiet else logging.NOTSET)  # NOTSET: as the root
    handler.setLevel(level)
    set_progress(not quiet)
    if quiet:
        warnings.simplefilter("ignore")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"distox {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: bool = _VERBOSITY["verbose"],
    quiet: bool = _VERBOSITY["quiet"],
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """distox: remove backdoors from trained image classifiers (D3, ICCV 2025)."""
    configure_output(verbose=verbose, quiet=quiet)
