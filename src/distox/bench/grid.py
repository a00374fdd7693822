"""Expand a :class:`~distox.bench.config.BenchConfig` into cells, each keyed by its config hash.

One **attack cell** per (dataset, model, attack entry, attack-grid combination, seed): it
trains one backdoored model (``distox.experiment.run_attack``). One **defense cell** per
(attack cell, defense entry, defense-grid combination): it purifies that model
(``run_defense``). A cell's key is the SHA-256 of its full, canonical config; a defense key
includes its attack's key, so changing an attack option recomputes that attack and all of its
defenses, while changing a defense option recomputes only that defense's cells. Machine
details (``data_root``, device) are not part of any key.

Example:
    >>> grid = expand(load_config("configs/smoke.yaml"))
    >>> len(grid.attacks), len(grid.defenses)
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..data.augmentation import resolve_flip
from .config import ATTACK_SPEC_KEYS, DEFENSE_SPEC_KEYS, BenchConfig, MethodEntry

#: Bump when the meaning of a cell config changes (invalidates every cached cell).
KEY_VERSION = 1


def cell_key(kind: str, config: dict[str, Any]) -> str:
    """Stable 16-hex-digit key: SHA-256 of the canonical JSON of ``{kind, config, version}``."""
    text = json.dumps({"v": KEY_VERSION, "kind": kind, "config": config}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``config`` is an AttackSpec dict (attack cells) or
    ``{"attack": attack_key, "defense": DefenseSpec dict}`` (defense cells)."""

    kind: str  # "attack" | "defense"
    key: str
    config: dict[str, Any] = field(hash=False, compare=False)
    group: str  # "dataset / model" the table is grouped by
    row: str  # attack label (a table row)
    column: str  # defense label (a table column); "none" for attack cells
    seed: int
    parent: str | None = None  # the attack key of a defense cell

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "config": self.config, "group": self.group,
                "row": self.row, "column": self.column, "seed": self.seed, "parent": self.parent}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        return cls(**{k: d[k] for k in ("kind", "key", "config", "group", "row", "column", "seed", "parent")})


@dataclass
class Grid:
    """The expanded grid: attack cells, and defense cells in dependency order."""

    attacks: list[Cell]
    defenses: list[Cell]

    @property
    def cells(self) -> list[Cell]:
        return self.attacks + self.defenses

    def defenses_of(self, attack_key: str) -> list[Cell]:
        return [c for c in self.defenses if c.parent == attack_key]

    def __len__(self) -> int:
        return len(self.attacks) + len(self.defenses)


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _combos(entry: MethodEntry) -> Iterator[dict[str, Any]]:
    """Every combination of the entry's grid values, each merged over its fixed options."""
    keys = list(entry.grid)
    for values in itertools.product(*(entry.grid[k] for k in keys)):
        yield {**entry.options, **dict(zip(keys, values))}


def _label(entry: MethodEntry, combo: dict[str, Any], distinct: bool) -> str:
    """Table label: the entry's label (or name), then its grid values; fixed options too
    when another entry of the same name exists (``distinct=False``)."""
    shown = {k: combo[k] for k in entry.grid} if distinct else combo
    base = entry.label or entry.name
    return base + (" (" + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()) + ")" if shown else "")


def _distinct_names(entries: list[MethodEntry]) -> dict[int, bool]:
    seen: dict[str, int] = {}
    for e in entries:
        if not e.label:
            seen[e.name] = seen.get(e.name, 0) + 1
    return {i: bool(e.label) or seen[e.name] == 1 for i, e in enumerate(entries)}


def attack_config(cfg: BenchConfig, dataset: str, model: Any, name: str, combo: dict[str, Any],
                  seed: int) -> dict[str, Any]:
    """The AttackSpec dict of one attack cell (shared settings, then the entry's options), its
    flip resolved for ``dataset`` as :class:`~distox.experiment.AttackSpec` does (so the key says
    whether images were flipped)."""
    spec = cfg.attack_settings.model_dump()
    kwargs: dict[str, Any] = {}
    for k, v in combo.items():
        if k in ATTACK_SPEC_KEYS:
            spec[k] = v
        else:
            kwargs[k] = v
    spec["flip"] = resolve_flip(spec["flip"], dataset)
    return {"attack": name, "dataset": dataset, "model": model.name, "model_kwargs": dict(model.kwargs),
            "attack_kwargs": kwargs, "seed": seed, **spec}


def defense_config(cfg: BenchConfig, name: str, combo: dict[str, Any], seed: int) -> dict[str, Any]:
    """The DefenseSpec dict of one defense cell (shared settings, per-defense params, options)."""
    s = cfg.defense_settings
    spec: dict[str, Any] = {"ratio": s.ratio, "count": s.count, "epochs": s.epochs,
                            "batch_size": s.batch_size}
    params: dict[str, Any] = dict(s.params.get(name, {}))
    for k, v in combo.items():
        if k in DEFENSE_SPEC_KEYS:
            spec[k] = v
            if k == "count" and v is not None:
                spec["ratio"] = None
            elif k == "ratio" and v is not None:
                spec["count"] = None
        else:
            params[k] = v
    return {"method": name, "seed": seed, "params": params, **spec}


def expand(cfg: BenchConfig) -> Grid:
    """All cells of a grid, attack cells in config order, each followed logically by its
    defenses (``Grid.defenses_of``)."""
    attack_cells: list[Cell] = []
    defense_cells: list[Cell] = []
    a_distinct = _distinct_names(cfg.attacks)
    defenses = cfg.real_defenses()
    d_distinct = _distinct_names(defenses)
    multi_model = len(cfg.models) > 1
    for dataset in cfg.datasets:
        for mi, model in enumerate(cfg.models):
            mlabel = model.name + (f" {_fmt(model.kwargs)}" if multi_model and model.kwargs else "")
            group = f"{dataset} / {mlabel}"
            for ai, entry in enumerate(cfg.attacks):
                for combo in _combos(entry):
                    row = _label(entry, combo, a_distinct[ai])
                    for seed in cfg.seeds:
                        a_conf = attack_config(cfg, dataset, model, entry.name, combo, seed)
                        a_key = cell_key("attack", a_conf)
                        attack_cells.append(Cell("attack", a_key, a_conf, group, row, "none", seed))
                        for di, dentry in enumerate(defenses):
                            if entry.defenses is not None and (dentry.label or dentry.name) not in entry.defenses:
                                continue
                            for dcombo in _combos(dentry):
                                d_conf = {"attack": a_key,
                                          "defense": defense_config(cfg, dentry.name, dcombo, seed)}
                                defense_cells.append(Cell(
                                    "defense", cell_key("defense", d_conf), d_conf, group, row,
                                    _label(dentry, dcombo, d_distinct[di]), seed, parent=a_key))
    return _dedupe(Grid(attack_cells, defense_cells))


def _dedupe(grid: Grid) -> Grid:
    """Drop repeated cells (two entries expanding to the same config run once)."""
    def unique(cells: list[Cell]) -> list[Cell]:
        seen: set[str] = set()
        out = []
        for c in cells:
            if c.key not in seen:
                seen.add(c.key)
                out.append(c)
        return out

    return Grid(unique(grid.attacks), unique(grid.defenses))
