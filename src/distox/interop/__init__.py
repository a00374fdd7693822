"""Interoperability with other backdoor toolkits (BackdoorBench ``attack_result.pt`` import,
``defense_result.pt`` export). Pickled inputs are read only with an explicit opt-in."""
from __future__ import annotations

from .backdoorbench import InteropError, export_defense, import_record, read_attack_result

__all__ = ["InteropError", "export_defense", "import_record", "read_attack_result"]
