"""Typed benchmark-grid configuration, validated before anything runs.

Example grids ship with the package (``src/distox/configs/*.yaml``): ``distox bench smoke``
(or ``configs/smoke.yaml``, from any directory) runs ``smoke.yaml``; any other path is a file
of your own (:func:`resolve_config`).

A grid is datasets × models × attacks × attack options × defenses × defense options × seeds
(DESIGN "bench/"). Every name is checked against the registries (``distox.attacks.list()``,
``distox.defenses.list()``, ``distox.data.list_datasets()``, ``distox.models.list_models()``)
every option key against the constructor's signature (a model's ``kwargs`` too, a defense's
``**kwargs`` followed to its base class) and every attack and defense is built once from its
options (no data, no training) to check the values, so a typo fails at once with the key path,
e.g. ``attacks[2].name: unknown attack 'foo'; valid: badnets, blended, ...`` or
``defense_settings.params.d3.lmdd: unknown option for defense 'd3'; valid: ...``.

YAML layout (every field except ``attacks``/``defenses`` has a default)::

    name: smoke                 # label of the grid
    profile: smoke              # "paper" puts the paper's numbers beside ours in reports
    datasets: [digits]
    models: [{name: small_cnn, kwargs: {width: 4}}]    # or just "small_cnn"
    seeds: [0]
    attack_settings: {epochs: 2, batch_size: 64, lr: 0.05, augment: false}
    defense_settings: {ratio: 0.1, epochs: 2, batch_size: 32}
    attacks:
      - badnets                                     # shorthand for {name: badnets}
      - {name: blended, options: {alpha: 0.2}, grid: {poison_rate: [0.01, 0.1]}}
      - {name: wanet, defenses: [d3], part: check}  # only these defense entries (label or name)
    defenses:
      - none                                        # the attack's own numbers (always shown)
      - {name: d3, options: {preset: paper}, grid: {ratio: [0.01, 0.05]}}

``options`` are fixed values, ``grid`` lists values whose Cartesian product gives one cell
each. Attack option keys that are :class:`~distox.experiment.AttackSpec` fields (epochs,
batch_size, lr, train_subset, test_subset, poison_rate, target, mode, sam_rho, augment,
weight_decay, momentum, flip, clean_reference, precision, channels_last, compile, optimizer,
label_smoothing) set
the spec; any other key is an argument of the attack's constructor. Defense option keys
ratio, count, epochs, batch_size set the :class:`~distox.experiment.DefenseSpec`; any other
key is a defense hyper-parameter (``params``).

How fast cells train: ``precision`` (auto | fp32 | bf16 | fp16), ``channels_last`` and
``compile`` (:mod:`distox.acceleration`) in ``attack_settings`` (every attack cell, as spec
fields) and ``defense_settings`` (every defense, as hyper-parameters; an entry's own option
wins); ``defense_settings.eval_every: N`` also evaluates each defense every N epochs into the
cell's ``history.csv`` (default: after the defense only). Each is part of a cell's key only
when set to a non-default value.

``part`` (models and attacks; ``dev`` by default) splits the grid into a *development* part,
used to choose methods and settings, and a held-out *check* part: a cell is ``check`` when
its model or its attack entry is. ``distox report`` summarises the two parts separately; the
part is not part of any cell key. With ``clean_reference: true`` every (dataset, model, seed,
training recipe) trains one shared clean model (a ``clean`` cell, :mod:`distox.bench.grid`).

Example:
    >>> cfg = load_config("smoke")
    >>> [a.name for a in cfg.attacks]
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import DistoxError
from ..registry import keyword_names

#: AttackSpec fields that an attack entry's options/grid may set (others go to attack_kwargs).
ATTACK_SPEC_KEYS = ("epochs", "batch_size", "lr", "train_subset", "test_subset", "poison_rate",
                    "target", "mode", "sam_rho", "augment", "weight_decay", "momentum", "flip",
                    "clean_reference", "precision", "channels_last", "compile", "optimizer", "label_smoothing")
#: DefenseSpec fields that a defense entry's options/grid may set (others go to params).
DEFENSE_SPEC_KEYS = ("ratio", "count", "epochs", "batch_size")
#: Pseudo-defense: the backdoored model itself (the "No defense" column, always reported).
NO_DEFENSE = "none"
#: Grid parts: ``dev`` (development, the default) and ``check`` (held out; see the module doc).
PARTS = ("dev", "check")
Part = Literal["dev", "check"]


class BenchError(DistoxError):
    """A malformed grid config or an unusable bench directory, with the offending key named."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class ModelEntry(_Strict):
    """A model factory name (``distox.models.create_model``) and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    part: Part = "dev"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from ..models import list_models

        known = [m for m in list_models() if not m.startswith("torchvision:")]
        if v not in known and not v.startswith("torchvision:"):
            raise ValueError(f"unknown model '{v}'; valid: {', '.join(known)}, torchvision:<name>")
        return v


class AttackSettings(_Strict):
    """Attack-training settings shared by every attack cell (AttackSpec defaults, SPEC §3)."""

    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0)
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    poison_rate: float = Field(0.1, gt=0, le=1)
    target: int = Field(0, ge=0)
    mode: Literal["all2one", "all2all"] = "all2one"
    sam_rho: float | None = Field(None, gt=0)
    augment: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    momentum: float = Field(0.9, ge=0)
    flip: bool | None = Field(None, description="None: as the reference for each dataset (CIFAR-10 only)")
    clean_reference: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    compile: bool = False
    optimizer: Literal["sgd", "adam"] = "sgd"
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class DefenseSettings(_Strict):
    """Settings shared by every defense cell (DefenseSpec; None = the defense's default)."""

    ratio: float | None = Field(0.05, gt=0, le=1)
    count: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-defense hyper-parameters, e.g. {d3: {lmd: 10}}")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    compile: bool = False
    eval_every: int | None = Field(None, ge=1, description="ACC/ASR/RA every N defense epochs (and after the "
                                                            "last) into history.csv; None: after the defense only")

    @model_validator(mode="after")
    def _one_size(self) -> DefenseSettings:
        if self.count is not None:
            self.ratio = None
        if self.ratio is None and self.count is None:
            raise ValueError("give ratio or count for the retain set")
        return self


def _as_entry(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class MethodEntry(_Strict):
    """One attack or defense with fixed ``options`` and a ``grid`` of option values."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return _as_entry(v)

    @model_validator(mode="after")
    def _no_overlap(self) -> MethodEntry:
        both = sorted(set(self.options) & set(self.grid))
        if both:
            raise ValueError(f"option(s) {', '.join(both)} given both in options and grid")
        for k, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{k} is empty")
        return self


class AttackEntry(MethodEntry):
    """An attack; ``defenses`` (optional) restricts which defense entries (by their label, or
    name when unlabelled) run on it, e.g. only D3 on a poison-rate ablation; ``part`` puts its
    cells in the grid's ``dev`` or ``check`` part."""

    defenses: list[str] | None = None
    part: Part = "dev"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .. import attacks

        key = v.lower().replace("_", "-")
        valid = attacks.list()
        if key not in {n.replace("_", "-") for n in valid}:
            raise ValueError(f"unknown attack '{v}'; valid: {', '.join(valid)}")
        return attacks.get(key).name


class DefenseEntry(MethodEntry):
    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .. import defenses

        key = v.lower().replace("_", "-")
        valid = defenses.list()
        if key != NO_DEFENSE and key not in valid:
            raise ValueError(f"unknown defense '{v}'; valid: {NO_DEFENSE}, {', '.join(valid)}")
        return key


class BenchConfig(_Strict):
    """A whole benchmark grid (see the module docstring for the YAML layout)."""

    name: str = "bench"
    profile: str = "custom"
    datasets: list[str] = Field(default_factory=lambda: ["fashion-mnist"], min_length=1)
    models: list[ModelEntry] = Field(default_factory=lambda: [ModelEntry(name="small_cnn")], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    attack_settings: AttackSettings = Field(default_factory=AttackSettings)
    defense_settings: DefenseSettings = Field(default_factory=DefenseSettings)
    attacks: list[AttackEntry] = Field(min_length=1)
    defenses: list[DefenseEntry] = Field(default_factory=list)
    data_root: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return [_as_entry(m) for m in v] if isinstance(v, list) else v

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, v: list[str]) -> list[str]:
        from ..data import list_datasets

        for i, name in enumerate(v):
            if name not in list_datasets() and not name.startswith("folder:"):
                raise ValueError(f"[{i}]: unknown dataset '{name}'; valid: "
                                 f"{', '.join(list_datasets())}, folder:PATH")
        return v

    def real_defenses(self) -> list[DefenseEntry]:
        """Defense entries other than ``none``."""
        return [d for d in self.defenses if d.name != NO_DEFENSE]


# ---------------------------------------------------------------------------- option checks
def _unknown_keys(where: str, keys: Any, accepted: set[str] | None, what: str) -> list[str]:
    """Errors ``WHERE.KEY: unknown option for WHAT; valid: ...`` for keys not in ``accepted``
    (None: the constructor takes any keyword)."""
    if accepted is None:
        return []
    valid = ", ".join(sorted(accepted - {"seed"}))
    return [f"{where}.{k}: unknown option for {what}; valid: {valid}" for k in keys if k not in accepted]


def _entry_keys(prefix: str, kind: str, entry: MethodEntry, cls: type, spec_keys: tuple[str, ...]) -> list[str]:
    """Errors for ``entry``'s options/grid keys that are neither spec fields nor ``cls`` arguments
    (D3 forwards ``**kwargs`` to Defense: :func:`~distox.registry.keyword_names` follows it)."""
    accepted = keyword_names(cls)
    accepted = None if accepted is None else accepted | set(spec_keys)
    return [err for where, keys in (("options", entry.options), ("grid", entry.grid))
            for err in _unknown_keys(f"{prefix}.{where}", keys, accepted, f"{kind} '{entry.name}'")]


def _check_names(cfg: BenchConfig) -> list[str]:
    """Every option key against its constructor's signature and every cross-reference."""
    from .. import attacks, defenses
    from ..models import check_model_kwargs

    errors: list[str] = []
    for i, model in enumerate(cfg.models):
        try:
            check_model_kwargs(model.name, model.kwargs)
        except ValueError as exc:
            errors.append(f"models[{i}].kwargs: {exc}")
    for i, entry in enumerate(cfg.attacks):
        errors += _entry_keys(f"attacks[{i}]", "attack", entry, attacks.get(entry.name), ATTACK_SPEC_KEYS)
    for i, entry in enumerate(cfg.defenses):
        if entry.name == NO_DEFENSE:
            if entry.options or entry.grid:
                errors.append(f"defenses[{i}]: '{NO_DEFENSE}' takes no options")
            continue
        errors += _entry_keys(f"defenses[{i}]", "defense", entry, defenses.get(entry.name), DEFENSE_SPEC_KEYS)
    names = {d.label or d.name for d in cfg.defenses} | {NO_DEFENSE}
    for i, entry in enumerate(cfg.attacks):
        for j, d in enumerate(entry.defenses or []):
            if d not in names:
                errors.append(f"attacks[{i}].defenses[{j}]: '{d}' is not a defense entry of this grid; "
                              f"valid: {', '.join(sorted(names))}")
    for name, params in cfg.defense_settings.params.items():
        if name not in defenses.list():
            errors.append(f"defense_settings.params.{name}: unknown defense '{name}'; "
                          f"valid: {', '.join(defenses.list())}")
        else:
            errors += _unknown_keys(f"defense_settings.params.{name}", params,
                                    keyword_names(defenses.get(name)), f"defense '{name}'")
    return errors


def _check_values(cfg: BenchConfig) -> list[str]:
    """Build every attack and defense of the grid (constructors only: no data, no training) so
    that a bad value, e.g. ``preset: papr``, fails before the first cell runs."""
    from ..experiment import AttackSpec, DefenseSpec, build_attack, build_defense
    from .grid import _combos, attack_config, defense_config

    errors: list[str] = []
    seed, dataset, model = cfg.seeds[0], cfg.datasets[0], cfg.models[0]
    for kind, entries in (("attacks", cfg.attacks), ("defenses", cfg.defenses)):
        for i, entry in enumerate(entries):
            if entry.name == NO_DEFENSE:
                continue
            for combo in _combos(entry):
                try:
                    if kind == "attacks":
                        build_attack(AttackSpec.from_dict(attack_config(cfg, dataset, model, entry.name, combo, seed)))
                    else:
                        d = defense_config(cfg, entry.name, combo, seed)
                        d.pop("eval_every", None)  # a run option, not part of the spec
                        build_defense(DefenseSpec.from_dict(d))
                except DistoxError as exc:
                    shown = ", ".join(f"{k}={v}" for k, v in combo.items())
                    errors.append(f"{kind}[{i}] ({entry.name}{': ' + shown if shown else ''}): {exc}")
                    break
    return errors


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "tagged-union")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _format_validation(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        msg = re.sub(r" or instance of (Attack|Defense|Model)Entry", " (or a name)", msg)
        loc = _loc(tuple(err.get("loc", ())))
        if msg.startswith("["):  # a list validator that already names the index
            idx, _, msg = msg.partition("]: ")
            loc, msg = f"{loc}{idx}]", msg
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return lines


def parse_config(data: Any, source: str = "config") -> BenchConfig:
    """Validate a mapping (parsed YAML) into a :class:`BenchConfig`; raises :class:`BenchError`
    listing every problem as ``key.path: message``."""
    if not isinstance(data, dict):
        raise BenchError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        cfg = BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise BenchError(f"{source}: " + "; ".join(_format_validation(exc))) from None
    errors = _check_names(cfg)
    errors = errors or _check_values(cfg)
    if errors:
        raise BenchError(f"{source}: " + "; ".join(errors))
    return cfg


#: The example grids shipped inside the package (package data): ``distox bench smoke``.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the example grids shipped with distox (``smoke``, ``cpu``, ``paper``, ...)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def resolve_config(config: str | os.PathLike) -> Path:
    """The grid file ``config`` names: an existing file as given; otherwise a shipped grid
    named ``NAME``, ``NAME.yaml`` or ``configs/NAME.yaml`` (the form the docs use, valid from
    any directory). Raises :class:`BenchError` listing the shipped names."""
    path = Path(config)
    if path.is_file():
        return path
    if path.exists():
        raise BenchError(f"config {path} is not a file")
    shipped = SHIPPED_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    by_name = len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "configs")
    if by_name and shipped.is_file():
        return shipped
    names = ", ".join(shipped_configs())
    if by_name and not path.suffix:
        raise BenchError(f"no config named '{config}': not a file here nor a shipped grid; shipped: {names}")
    raise BenchError(f"config file not found: {path} (shipped grids, usable by name: {names})")


def load_config(config: str | os.PathLike) -> BenchConfig:
    """Read and validate a grid YAML file or shipped grid (:func:`resolve_config`,
    :func:`parse_config`)."""
    path = resolve_config(config)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BenchError(f"{path} is not valid YAML: {exc}") from None
    return parse_config(data, str(path))
