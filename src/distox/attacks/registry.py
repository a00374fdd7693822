"""Attack registry: ``create(name, **kw)``, ``list()``, ``get(name)``, ``@register``."""
from __future__ import annotations

from ..registry import Registry
from .base import AttackError

_ATTACKS = Registry("attack", AttackError)
register = _ATTACKS.register
list = _ATTACKS.names  # noqa: A001 - timm-style name
get = _ATTACKS.get
create = _ATTACKS.create
