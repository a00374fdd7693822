"""Backdoor defenses: D3 and the paper's baselines, one registry (SPEC §1, §4)."""
from __future__ import annotations

from . import anp, d3, ft, ft_sam, ibau, sau  # noqa: F401  (register)
from .base import Defense, DefenseError, Result, check_retain
from .anp import ANP
from .d3 import D3
from .ft import FT
from .ft_sam import FTSAM
from .ibau import IBAU
from .registry import create, get, list, register
from .sau import SAU

__all__ = ["ANP", "IBAU", "D3", "FT", "FTSAM", "SAU", "Defense", "DefenseError", "Result", "check_retain", "create", "get", "list", "register"]
