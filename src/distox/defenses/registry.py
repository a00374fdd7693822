"""Defense registry: ``create(name, **kw)``, ``list()`` (the CLI and benchmark use these)."""
from __future__ import annotations

import builtins

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: register a :class:`Defense` subclass under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def list() -> builtins.list[str]:  # noqa: A001 - timm-style name
    """Registered defense names."""
    return sorted(_REGISTRY)


def get(name: str) -> type:
    from .base import DefenseError

    key = name.lower().replace("_", "-")
    if key not in _REGISTRY:
        raise DefenseError(f"unknown defense '{name}'. Valid defenses: {', '.join(list())}")
    return _REGISTRY[key]


def create(name: str, **kwargs):
    """Instantiate defense ``name`` with keyword arguments."""
    return get(name)(**kwargs)
