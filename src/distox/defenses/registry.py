"""Defense registry: ``create(name, **kw)``, ``list()``, ``get(name)``, ``@register``."""
from __future__ import annotations

from ..registry import Registry
from .base import DefenseError

_DEFENSES = Registry("defense", DefenseError)
register = _DEFENSES.register
list = _DEFENSES.names  # noqa: A001 - timm-style name
get = _DEFENSES.get
create = _DEFENSES.create
