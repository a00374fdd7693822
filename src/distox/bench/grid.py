"""Expand a :class:`~distox.bench.config.BenchConfig` into cells, each keyed by its config hash.

One **attack cell** per (dataset, model, attack entry, attack-grid combination, seed): it
trains one backdoored model (``distox.experiment.run_attack``). One **defense cell** per
(attack cell, defense entry, defense-grid combination): it purifies that model
(``run_defense``). With ``clean_reference``, one **clean cell** per clean training recipe
(the attack cell's config without the attack-only fields,
:func:`distox.experiment.clean_recipe`): it trains
the clean model (``run_clean``) once, and every attack cell of that recipe waits for it and
scores it on its own triggers (the clean-model ASR floor).

A cell's key is the SHA-256 of its full, canonical config; a defense key includes its
attack's key, so changing an attack option recomputes that attack and all of its defenses,
while changing a defense option recomputes only that defense's cells. The code revision of
the attack (attack cells) and of the defense and its attack (defense cells), the classes'
``revision`` attribute, is part of the key once it is above 1: bumping a class's revision
recomputes its cells and keeps every other key (and revision 1 keeps the keys of before
revisions existed). Machine details (``data_root``, device) and the grid part are not part of
any key.

Example:
    >>> grid = expand(load_config("smoke"))
    >>> len(grid.attacks), len(grid.defenses)
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..acceleration import non_default
from ..data.augmentation import resolve_flip
from ..experiment.specs import clean_recipe, drop_spec_defaults
from .config import ATTACK_SPEC_KEYS, DEFENSE_SPEC_KEYS, AttackEntry, BenchConfig, MethodEntry, ModelEntry

#: Bump when the meaning of a cell config changes (invalidates every cached cell).
KEY_VERSION = 1
#: Row and column label of clean cells (they feed the report's *Clean model* column).
CLEAN_LABEL = "clean"


def cell_key(kind: str, config: dict[str, Any], revisions: dict[str, int] | None = None) -> str:
    """Stable 16-hex-digit key: SHA-256 of the canonical JSON of ``{kind, config, version}``,
    plus ``revision`` (the entries of ``revisions`` other than 1) when there are any."""
    payload: dict[str, Any] = {"v": KEY_VERSION, "kind": kind, "config": config}
    bumped = {k: v for k, v in (revisions or {}).items() if v != 1}
    if bumped:
        payload["revision"] = bumped
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``config`` is an AttackSpec dict (attack cells), that dict without
    :func:`~distox.experiment.clean_recipe`'s fields (clean cells) or ``{"attack": attack_key, "defense": DefenseSpec
    dict}`` (defense cells). ``parent`` is the cell that must be done first: the attack of a
    defense cell, the shared clean model of an attack cell with ``clean_reference``.
    ``revisions`` records the code revisions the cell's key was made with."""

    kind: str  # "clean" | "attack" | "defense"
    key: str
    config: dict[str, Any] = field(hash=False, compare=False)
    group: str  # "dataset / model" the table is grouped by
    row: str  # attack label (a table row); "clean" for clean cells
    column: str  # defense label (a table column); "none" for attack cells, "clean" for clean cells
    seed: int
    parent: str | None = None
    revisions: dict[str, int] = field(default_factory=dict, hash=False, compare=False)
    part: str = "dev"  # "dev" or "check" (config.PARTS); not part of the key

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "config": self.config, "group": self.group,
                "row": self.row, "column": self.column, "seed": self.seed, "parent": self.parent,
                "revisions": self.revisions, "part": self.part}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        """Inverse of :meth:`to_dict`; manifests written before revisions and parts existed
        read as revision-less ``dev`` cells."""
        return cls(**{k: d[k] for k in ("kind", "key", "config", "group", "row", "column", "seed", "parent")},
                   revisions=dict(d.get("revisions") or {}), part=str(d.get("part") or "dev"))


@dataclass
class Grid:
    """The expanded grid: attack cells, defense cells and the shared clean cells."""

    attacks: list[Cell]
    defenses: list[Cell]
    cleans: list[Cell] = field(default_factory=list)

    @classmethod
    def of(cls, cells: list[Cell]) -> Grid:
        """The grid of ``cells`` sorted by kind (e.g. a manifest's cell list)."""
        return cls(*([c for c in cells if c.kind == kind] for kind in ("attack", "defense", "clean")))

    @property
    def cells(self) -> list[Cell]:
        """Every cell, clean cells first, then attacks, then defenses."""
        return self.cleans + self.attacks + self.defenses

    def defenses_of(self, attack_key: str) -> list[Cell]:
        return [c for c in self.defenses if c.parent == attack_key]

    def __len__(self) -> int:
        return len(self.cleans) + len(self.attacks) + len(self.defenses)


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
            "attack_kwargs": kwargs, "seed": seed, **drop_spec_defaults(spec)}


def defense_config(cfg: BenchConfig, name: str, combo: dict[str, Any], seed: int) -> dict[str, Any]:
    """The DefenseSpec dict of one defense cell (shared settings, per-defense params, options),
    with ``eval_every`` beside them when set (a run option, not a DefenseSpec field)."""
    s = cfg.defense_settings
    spec: dict[str, Any] = {"ratio": s.ratio, "count": s.count, "epochs": s.epochs,
                            "batch_size": s.batch_size}
    if s.eval_every is not None:
        spec["eval_every"] = s.eval_every
    params: dict[str, Any] = {**non_default(s.model_dump()), **s.params.get(name, {})}
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


def revisions_of(attack: str, defense: str | None = None) -> dict[str, int]:
    """The code revisions of an attack (and a defense): ``{"attack": n[, "defense": m]}``."""
    from .. import attacks, defenses

    out = {"attack": int(attacks.get(attack).revision)}
    if defense is not None:
        out["defense"] = int(defenses.get(defense).revision)
    return out


def cell_part(model: ModelEntry, entry: AttackEntry) -> str:
    """``check`` when the model or the attack entry is marked ``part: check``, else ``dev``."""
    return "check" if "check" in (model.part, entry.part) else "dev"


def expand(cfg: BenchConfig) -> Grid:
    """All cells of a grid, attack cells in config order, each followed logically by its
    defenses (``Grid.defenses_of``); shared clean cells for attacks with ``clean_reference``."""
    clean_cells: list[Cell] = []
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
                    part = cell_part(model, entry)
                    for seed in cfg.seeds:
                        a_conf = attack_config(cfg, dataset, model, entry.name, combo, seed)
                        a_rev = revisions_of(entry.name)
                        a_key = cell_key("attack", a_conf, a_rev)
                        clean_key = None
                        if a_conf["clean_reference"]:
                            c_conf = clean_recipe(a_conf)
                            clean_key = cell_key("clean", c_conf)
                            clean_cells.append(Cell("clean", clean_key, c_conf, group, CLEAN_LABEL,
                                                    CLEAN_LABEL, seed, part=model.part))
                        attack_cells.append(Cell("attack", a_key, a_conf, group, row, "none", seed,
                                                 parent=clean_key, revisions=a_rev, part=part))
                        for di, dentry in enumerate(defenses):
                            if entry.defenses is not None and (dentry.label or dentry.name) not in entry.defenses:
                                continue
                            d_rev = revisions_of(entry.name, dentry.name)
                            for dcombo in _combos(dentry):
                                d_conf = {"attack": a_key,
                                          "defense": defense_config(cfg, dentry.name, dcombo, seed)}
                                defense_cells.append(Cell(
                                    "defense", cell_key("defense", d_conf, d_rev), d_conf, group, row,
                                    _label(dentry, dcombo, d_distinct[di]), seed, parent=a_key,
                                    revisions=d_rev, part=part))
    return _dedupe(Grid(attack_cells, defense_cells, clean_cells))


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

    return Grid(unique(grid.attacks), unique(grid.defenses), unique(grid.cleans))
