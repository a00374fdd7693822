"""Backdoor attacks (SPEC §3): ``distox.attacks.create("badnets", target=0)``, ``list()``."""
from __future__ import annotations

from . import badnets  # noqa: F401  (registers)
from . import inputaware, wanet  # noqa: F401  (register)
from . import blended, lf, sig  # noqa: F401  (register)
from . import ssba  # noqa: F401  (registers)
from . import imported  # noqa: F401  (stored poisoned test sets, e.g. BackdoorBench imports)
from .base import Attack, AttackError, PreparedContext
from .registry import create, get, list, register

__all__ = ["Attack", "AttackError", "PreparedContext", "create", "get", "list", "register"]
