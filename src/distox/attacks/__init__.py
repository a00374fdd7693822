"""Backdoor attacks (SPEC §3): ``distox.attacks.create("badnets", target=0)``, ``list()``."""
from __future__ import annotations

from . import badnets  # noqa: F401  (registers)
from .base import Attack, AttackError, PreparedContext
from .registry import create, get, list, register

__all__ = ["Attack", "AttackError", "PreparedContext", "create", "get", "list", "register"]
