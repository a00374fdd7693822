"""Attack registry: ``create(name, **kw)``, ``list()`` (timm-style; the CLI and the benchmark
never hard-code attack names)."""
from __future__ import annotations

import builtins

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: register an :class:`Attack` subclass under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def list() -> builtins.list[str]:  # noqa: A001 - timm-style name
    """Registered attack names."""
    return sorted(_REGISTRY)


def get(name: str) -> type:
    from .base import AttackError

    key = name.lower().replace("_", "-")
    aliases = {k.replace("_", "-"): k for k in _REGISTRY}
    if key not in aliases:
        raise AttackError(f"unknown attack '{name}'. Valid attacks: {', '.join(list())}")
    return _REGISTRY[aliases[key]]


def create(name: str, **kwargs):
    """Instantiate attack ``name`` with keyword arguments."""
    return get(name)(**kwargs)
