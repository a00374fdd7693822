"""Backdoor defenses: D3 and the paper's baselines, one registry (SPEC §1, §4)."""
from __future__ import annotations

from . import d3, fp, ft, ft_sam, nad, nc, sau  # noqa: F401  (register)
from .base import Defense, DefenseError, Result, check_retain
from .d3 import D3
from .fp import FP
from .ft import FT
from .ft_sam import FTSAM
from .nad import NAD
from .nc import NC
from .registry import create, get, list, register
from .sau import SAU

__all__ = ["D3", "FP", "FT", "FTSAM", "NAD", "NC", "SAU", "Defense", "DefenseError", "Result",
           "check_retain", "create", "get", "list", "register"]
