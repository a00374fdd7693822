"""The D3 paper's published numbers (SPEC §5: CIFAR-10, PreAct-ResNet18, poison 10 %,
retain 5 %), shown beside ours by ``distox report`` when a grid's profile is ``paper``.

``MAIN_TABLE[attack][defense]`` holds percent ``asr`` (and ``acc`` where the paper's table as
transcribed in SPEC §5 gives it: D3 only). The ``average`` row is copied as SPEC §5 gives it
(its D3 entries equal the SSBA row there; they are not recomputed here).

Example:
    >>> MAIN_TABLE["badnets"]["d3"]
    {'asr': 0.74, 'acc': 90.77}
"""
from __future__ import annotations

_DEFENSES = ("none", "ft", "ft-sam", "sau", "d3")

#: attack → (No defense ASR, FT ASR, FT-SAM ASR, SAU ASR, D3 ASR, D3 ACC)
_ROWS: dict[str, tuple[float, float, float, float, float, float]] = {
    "badnets": (95.03, 1.48, 2.28, 1.33, 0.74, 90.77),
    "blended": (99.92, 96.11, 11.61, 1.57, 0.22, 92.29),
    "wanet": (89.73, 17.10, 1.31, 0.58, 0.04, 93.31),
    "lf": (99.28, 78.44, 6.89, 0.71, 1.31, 92.37),
    "inputaware": (98.26, 1.72, 1.54, 0.93, 0.06, 92.96),
    "sig": (98.27, 2.37, 0.57, 1.84, 0.00, 89.99),
    "ssba": (97.86, 74.79, 3.20, 0.81, 0.46, 91.93),
    "average": (96.91, 38.86, 3.91, 1.04, 0.46, 91.93),
}

MAIN_TABLE: dict[str, dict[str, dict[str, float]]] = {
    attack: {**{d: {"asr": v} for d, v in zip(_DEFENSES, vals[:5])}, "d3": {"asr": vals[4], "acc": vals[5]}}
    for attack, vals in _ROWS.items()
}

#: SPEC §5 robustness (D3 ACC/ASR) and adaptive-attack (ASR) numbers, for reference.
ROBUSTNESS_D3: dict[str, dict[str, dict[str, float]]] = {
    "poison_rate=0.01": {"badnets": {"acc": 92.18, "asr": 0.68}, "blended": {"acc": 92.85, "asr": 0.24}},
    "poison_rate=0.5": {"badnets": {"acc": 86.90, "asr": 1.51}, "blended": {"acc": 89.01, "asr": 0.03}},
    "ratio=0.01": {"badnets": {"acc": 88.57, "asr": 2.31}, "blended": {"acc": 90.64, "asr": 2.86},
                   "wanet": {"acc": 91.96, "asr": 1.42}},
    "ratio=0.1": {"badnets": {"acc": 90.97, "asr": 0.44}, "blended": {"acc": 92.61, "asr": 0.01},
                  "wanet": {"acc": 93.53, "asr": 0.11}},
}
ADAPTIVE_SAM_RHO3_ASR: dict[str, dict[str, float]] = {
    "badnets": {"ft": 71.24, "ft-sam": 54.79, "d3": 1.24},
    "blended": {"ft": 82.17, "ft-sam": 91.93, "d3": 2.74},
}


def paper_value(attack: str, defense: str, metric: str) -> float | None:
    """The paper's percent ``metric`` ("acc"/"asr") for an attack (or "average") and a
    defense ("none" = no defense), or None where the paper's table has no such entry."""
    return MAIN_TABLE.get(attack.replace("_", "").replace("-", ""), {}).get(defense, {}).get(metric)
