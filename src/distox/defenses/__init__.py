"""Backdoor defenses: D3 and the paper's baselines, one registry (SPEC §1, §4)."""
from __future__ import annotations

from . import d3, ft  # noqa: F401  (register)
from .base import Defense, DefenseError, Result, check_retain
from .d3 import D3
from .ft import FT
from .registry import create, get, list, register

__all__ = ["D3", "FT", "Defense", "DefenseError", "Result", "check_retain", "create", "get", "list", "register"]
