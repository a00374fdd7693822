"""Backdoor defenses: D3 and the paper's baselines, one registry (SPEC §1, §4)."""
from __future__ import annotations

from . import anp, d3, fp, ft, ft_sam, ibau, nad, nc, sau  # noqa: F401  (register)
from .anp import ANP
from .base import Defense, DefenseError, Result, check_retain
from .d3 import D3
from .fp import FP
from .ft import FT
from .ft_sam import FTSAM
from .ibau import IBAU
from .nad import NAD
from .nc import NC
from .registry import create, get, list, register
from .sau import SAU

__all__ = ["ANP", "D3", "FP", "FT", "FTSAM", "IBAU", "NAD", "NC", "SAU", "Defense", "DefenseError", "Result",
           "check_retain", "create", "get", "list", "register"]
