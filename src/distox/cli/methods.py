"""``distox methods [NAME]``: the attacks and defenses, and the parameters each one takes
(what ``--param KEY=VALUE`` of ``attack``, ``defend`` and ``purify`` accepts)."""
from __future__ import annotations

import inspect
import json
from typing import Any, Optional

import typer

from ..errors import DistoxError
from ..registry import init_parameters
from .app import app, friendly_errors

#: Per kind: its registry module, the command that uses it, and its parameters that command
#: sets through options of its own rather than ``--param``.
KINDS = {
    "attack": ("attacks", "distox attack NAME --out DIR --param KEY=VALUE",
               {"target": "--target", "mode": "--mode", "poison_rate": "--poison-rate", "seed": "--seed"}),
    "defense": ("defenses", "distox defend NAME RUN_DIR --param KEY=VALUE  (or: distox purify --method NAME)",
                {"epochs": "--epochs", "batch_size": "--batch-size", "seed": "--seed"}),
}


def _registry(kind: str) -> Any:
    import importlib

    return importlib.import_module(f"distox.{KINDS[kind][0]}")


def _module_doc(cls: type) -> str:
    return inspect.getdoc(inspect.getmodule(cls)) or ""


def _summary(cls: type) -> str:
    """The class docstring's first line, or the module's when the class's only lists arguments."""
    for doc in (inspect.getdoc(cls) or "", _module_doc(cls)):
        if doc and not doc.startswith("Args:"):
            first = " ".join(doc.split("\n\n")[0].split()).split("; see the module doc")[0]
            end = first.find(". ")
            return first if end < 0 else first[:end + 1]
    return ""


def _shown(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def describe(kind: str, name: str) -> str:
    """The help text of one method: summary, how to pass parameters, each parameter with the
    value it takes by default, then the class's own documentation."""
    cls = _registry(kind).get(name)
    params, _ = init_parameters(cls)
    try:
        instance: Any = cls()
    except Exception:  # a method without defaults for everything: show the signature's
        instance = None
    usage, own_options, lines = KINDS[kind][1], KINDS[kind][2], []
    lines += [f"{cls.name} ({kind}): {_summary(cls)}", "", f"usage: {usage.replace('NAME', cls.name)}", "",
              "parameters (default value as resolved for this method):"]
    width = max((len(p.name) for p in params), default=0)
    for p in params:
        value = getattr(instance, p.name, p.default) if instance is not None else p.default
        note = f"   (set with {own_options[p.name]})" if p.name in own_options else ""
        lines.append(f"  {p.name:<{width}}  {_shown(value)}{note}")
    doc = inspect.getdoc(cls) or ""
    if doc:
        lines += ["", doc]
    if "module doc" in doc:  # the class defers to its module's documentation
        lines += ["", _module_doc(cls)]
    return "\n".join(lines)


def overview() -> str:
    """Every attack and defense with its one-line summary."""
    lines = []
    for kind in KINDS:
        reg = _registry(kind)
        names = reg.list()
        width = max((len(n) for n in names), default=0)
        lines += [f"{kind}s:"] + [f"  {n:<{width}}  {_summary(reg.get(n))}" for n in names] + [""]
    lines.append("`distox methods NAME` lists a method's parameters.")
    return "\n".join(lines)


@app.command()
@friendly_errors
def methods(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="An attack or defense name (default: list them all)."),
) -> None:
    """List the attacks and defenses, or one method's parameters (for --param KEY=VALUE) with
    their defaults and documentation."""
    if name is None:
        typer.echo(overview())
        return
    found = []
    for kind in KINDS:
        try:
            found.append(describe(kind, name))
        except DistoxError:
            continue
    if not found:
        valid = ", ".join(n for kind in KINDS for n in _registry(kind).list())
        raise DistoxError(f"unknown attack or defense '{name}'; valid: {valid}")
    typer.echo("\n\n".join(found))
