"""The definitions of runs: :class:`AttackSpec` (a backdoored model) and :class:`DefenseSpec`
(a defense applied to one), with their JSON round trip."""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..acceleration import check_options, drop_defaults
from ..attacks.base import AttackError
from ..errors import DistoxError
from ..data.augmentation import augmentation_for, resolve_flip
from ..defenses.base import DefenseError
from ..training import LoopConfig

log = logging.getLogger(__name__)

#: AttackSpec fields that do not change a clean reference model (same data, model and training).
ATTACK_ONLY_FIELDS = ("attack", "attack_kwargs", "poison_rate", "target", "mode", "clean_reference")


#: Training-recipe fields of :class:`AttackSpec` left out of its dict when at these defaults
#: (so the specs and bench keys of runs made before the fields existed hold).
RECIPE_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "label_smoothing": 0.0}


def drop_spec_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """An AttackSpec dict without the speed options (:func:`distox.acceleration.drop_defaults`)
    and the :data:`RECIPE_DEFAULTS` fields that hold their default."""
    return {k: v for k, v in drop_defaults(record).items()
            if not (k in RECIPE_DEFAULTS and v == RECIPE_DEFAULTS[k])}


def clean_recipe(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """An AttackSpec dict without :data:`ATTACK_ONLY_FIELDS`: what defines its clean reference
    model (``run_clean``'s spec, the bench's clean cell)."""
    return {k: v for k, v in spec_dict.items() if k not in ATTACK_ONLY_FIELDS}


class SpecRecord:
    """JSON round trip of a spec dataclass: ``to_dict`` (JSON-safe) and ``from_dict`` (unknown
    keys ignored with a warning, e.g. a record written by a newer distox)."""

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**_known_fields(cls, d))


@dataclass
class AttackSpec(SpecRecord):
    """Everything that defines a backdoored model (defaults: SPEC §3, BackdoorBench).

    Args:
        attack: registry name (``distox.attacks.list()``), e.g. ``"badnets"``.
        dataset: a ``distox.data.load_dataset`` name ("fashion-mnist").
        model: a ``distox.models.create_model`` name ("small_cnn").
        model_kwargs: extra model arguments, e.g. ``{"width": 16}`` ({}).
        attack_kwargs: extra attack arguments, e.g. ``{"alpha": 0.2}`` ({}).
        epochs: training epochs (100). batch_size: 128. lr: 0.01.
        weight_decay: weight decay (5e-4). momentum: SGD momentum (0.9).
        optimizer: ``"sgd"`` (with momentum) or ``"adam"`` (β 0.9, 0.999), both cosine annealed.
        label_smoothing: train against labels smoothed by this much (0: plain cross-entropy);
            not with attacks that train with their own objective (Input-aware).
        train_subset / test_subset: size of a seeded uniform subset of the training / test set
            (None = all).
        poison_rate: fraction of the (subset) training set poisoned (0.1).
        target: target label (0). mode: ``"all2one"`` or ``"all2all"``.
        sam_rho: train with sharpness-aware minimisation of this radius: the adaptive attack
            (None = plain SGD). It is adaptive SAM (ASAM, ‖T_w⁻¹e‖ = ρ, as FT-SAM): the paper's
            radii 1.0 and 3.0 are far too large for plain SAM, whose steps of norm ρ collapse a
            small model to one class (measured: ACC 10.25 % on Fashion-MNIST).
        augment: random crop (+ horizontal flip), as the reference's train transform (True).
        flip: the flip part. None: as the reference for ``dataset`` (CIFAR-10 only,
            :mod:`distox.data.augmentation`), resolved to True/False when the spec is made,
            so that the spec's dict (run identity, bench cell key) says what ran.
        clean_reference: also train a clean model the same way (``out/clean/``) and report
            its accuracy as ``clean_acc`` and its ASR/RA on this attack's backdoor test set as
            ``clean_asr`` / ``clean_ra``, the ASR floor (False).
        seed: seed of subsets, poisoned indices, initialisation and shuffling (0).
        data_root: where to look for the dataset (None: ``$DISTOX_DATA``, system paths).
        precision, channels_last, compile: how the training loop runs
            (:mod:`distox.acceleration`; ``"auto"``, False, False). Each of these three, and
            ``optimizer`` and ``label_smoothing``, is part of the spec's dict (run identity, bench
            cell key) only when not at its default.

    Example:
        >>> spec = AttackSpec("blended", epochs=10, model_kwargs={"width": 16})
        >>> AttackSpec.from_dict(spec.to_dict()) == spec
        True
    """

    attack: str
    dataset: str = "fashion-mnist"
    model: str = "small_cnn"
    model_kwargs: dict = field(default_factory=dict)
    attack_kwargs: dict = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    train_subset: int | None = None
    test_subset: int | None = None
    poison_rate: float = 0.1
    target: int = 0
    mode: str = "all2one"
    sam_rho: float | None = None
    augment: bool = True
    seed: int = 0
    data_root: str | None = None
    weight_decay: float = 5e-4
    momentum: float = 0.9
    flip: bool | None = None
    clean_reference: bool = False
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    optimizer: str = "sgd"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        try:
            check_options(self.precision, self.channels_last, self.compile)
        except DistoxError as exc:
            raise AttackError(str(exc)) from None
        if self.optimizer not in ("sgd", "adam"):
            raise AttackError(f"optimizer must be 'sgd' or 'adam'; got {self.optimizer!r}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise AttackError(f"label smoothing must be in [0, 1); got {self.label_smoothing}")
        if float(self.weight_decay) < 0 or float(self.momentum) < 0:
            raise AttackError(f"weight decay and momentum must be >= 0; got {self.weight_decay}, {self.momentum}")
        self.model_kwargs = dict(self.model_kwargs or {})
        self.attack_kwargs = dict(self.attack_kwargs or {})
        if self.data_root is not None:
            self.data_root = str(self.data_root)
        self.flip = resolve_flip(self.flip, self.dataset)
        if int(self.epochs) < 1:
            raise AttackError(f"epochs must be >= 1; got {self.epochs}")
        if int(self.batch_size) < 1:
            raise AttackError(f"batch size must be >= 1; got {self.batch_size}")
        if not float(self.lr) > 0:
            raise AttackError(f"learning rate must be > 0; got {self.lr}")
        for name in ("train_subset", "test_subset"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise AttackError(f"{name.replace('_', ' ')} must be >= 1; got {v}")
        if not (isinstance(self.poison_rate, (int, float)) and 0.0 < self.poison_rate <= 1.0):
            raise AttackError(f"poison rate must be in (0, 1]; got {self.poison_rate}")
        if self.mode not in ("all2one", "all2all"):
            raise AttackError(f"mode must be 'all2one' or 'all2all'; got {self.mode!r}")
        if int(self.target) < 0:
            raise AttackError(f"target label must be >= 0; got {self.target}")
        if self.sam_rho is not None and not float(self.sam_rho) > 0:
            raise AttackError(f"SAM radius must be > 0; got {self.sam_rho}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; ``precision``, ``channels_last``, ``compile``, ``optimizer`` and
        ``label_smoothing`` only when not at their defaults (so the specs and bench keys of runs
        made before they existed hold)."""
        return drop_spec_defaults(super().to_dict())

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (``data_root`` only says where data live)."""
        d = self.to_dict()
        d.pop("data_root", None)
        return d

    def loop_config(self, image_side: int) -> LoopConfig:
        """The shared training loop's configuration for this spec (crop padding: the reference's
        for the dataset, :func:`distox.data.augmentation_for`)."""
        aug = augmentation_for(self.dataset, image_side, self.flip)
        return LoopConfig(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                          optimizer=self.optimizer, label_smoothing=float(self.label_smoothing),
                          momentum=float(self.momentum), weight_decay=float(self.weight_decay),
                          augment=bool(self.augment), flip=aug.flip, crop_padding=aug.crop_padding,
                          sam_rho=None if self.sam_rho is None else float(self.sam_rho),
                          sam_adaptive=self.sam_rho is not None, seed=int(self.seed), precision=self.precision,
                          channels_last=self.channels_last, compile=self.compile)


@dataclass
class DefenseSpec(SpecRecord):
    """A defense applied to an attack run (defaults: SPEC §1/§4).

    Args:
        method: defense registry name (``distox.defenses.list()``): "d3", "ft", ...
        ratio: retain set = this fraction of the clean (subset) training set (0.05).
        count: or an absolute number of retain images (None). When ``count`` is given it wins
            over ``ratio`` (the CLI rejects both at once).
        epochs: passes over the retain set (None = the defense's default).
        batch_size: None = the defense's default.
        seed: seed of the retain choice and of the defense (0).
        params: the defense's hyper-parameters, e.g. ``{"lmd": 10}`` ({}).

    Example:
        >>> DefenseSpec("d3", ratio=0.05, epochs=20, params={"preset": "paper"})
    """

    method: str
    ratio: float | None = 0.05
    count: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = dict(self.params or {})
        if self.count is not None:
            self.ratio = None
            if int(self.count) < 1:
                raise DefenseError(f"retain count must be >= 1; got {self.count}")
        elif self.ratio is None:
            raise DefenseError("give a retain ratio or a retain count")
        elif not 0.0 < float(self.ratio) <= 1.0:
            raise DefenseError(f"retain ratio must be in (0, 1]; got {self.ratio}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise DefenseError(f"epochs must be >= 1; got {self.epochs}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise DefenseError(f"batch size must be >= 1; got {self.batch_size}")



def jsonable(obj: Any) -> Any:
    """JSON round trip (tuples → lists), so specs compare equal to what was written."""
    return json.loads(json.dumps(obj, default=str))


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        log.warning("ignoring unknown %s fields: %s", cls.__name__, ", ".join(unknown))
    return {k: v for k, v in d.items() if k in names}
