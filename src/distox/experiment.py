"""Reproducible attack runs and defense runs, each a directory of safetensors + JSON records.

An *attack run* (:func:`run_attack`) trains a backdoored model from an :class:`AttackSpec`
(SPEC §3: SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine, batch 128, crop + flip,
all-to-one target 0, poison rate 10 %; optionally SAM of radius ρ for the paper's adaptive
attack) and writes::

    out/spec.json                       the spec, written first (guards resuming)
    out/model.safetensors               backdoored weights (written atomically, once complete)
    out/attack_resources.safetensors    attack.resources(): pattern, warp field, generator, ...
    out/attack.json                     format_version, spec, attack.params(), dataset + subset
                                        seeds and digests, training config, library versions
    out/history.csv                     per-epoch loss / lr (and ACC/ASR/RA when tracked)
    out/metrics.json                    {"acc", "asr", "ra"} (+ "clean_acc", "clean_asr", "clean_ra"), written last

Everything needed to rebuild the poisoned test set bit-identically is in ``attack.json`` plus
the resources file; :func:`load_run` does it and checks the digests recorded at attack time.
While training, ``out/checkpoint.pt`` is saved every epoch; rerunning the same spec resumes
from it, and it is deleted after success.

A *defense run* (:func:`run_defense`) loads an attack run, draws a seeded retain set from
the clean (possibly subset) training data (SPEC §1: 5 % uniformly at random, seed recorded),
purifies with any registered defense, tracks ACC/ASR/RA per epoch and writes
``defense.json`` (before/after metrics, DER per SPEC §2), ``model.safetensors`` and
``history.csv`` under ``RUN_DIR/defense/METHOD/``.

Example:
    >>> metrics = run_attack(AttackSpec("badnets", epochs=5, train_subset=10_000), Path("runs/bn"))
    >>> record = run_defense(Path("runs/bn"), DefenseSpec("d3", epochs=20))
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import io
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import attacks as attack_registry
from . import defenses as defense_registry
from .attacks.base import Attack, AttackError, PreparedContext
from .data import DatasetBundle, ImageSplit, load_dataset, select_retain
from .defenses.base import DefenseError, crop_padding_for
from .errors import DistoxError
from .metrics import BackdoorTestSet, Evaluator, der, evaluate
from .models import create_model
from .runs import FORMAT_VERSION, RunError, _atomic, load_into, load_state, read_json, save_model, save_tensors, write_json
from .training import LoopConfig, TrainingDiverged
from .utils import resolve_device

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
ATTACK_RECORD = "attack.json"
RESOURCES_FILE = "attack_resources.safetensors"
METRICS_FILE = "metrics.json"
SPEC_FILE = "spec.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.pt"
DEFENSE_RECORD = "defense.json"
CLEAN_DIR = "clean"
CLEAN_RECORD = "clean.json"


# ---------------------------------------------------------------------------- specs
@dataclass
class AttackSpec:
    """Everything that defines a backdoored model (defaults: SPEC §3, BackdoorBench).

    Args:
        attack: registry name (``distox.attacks.list()``), e.g. ``"badnets"``.
        dataset: a ``distox.data.load_dataset`` name ("fashion-mnist").
        model: a ``distox.models.create_model`` name ("small_cnn").
        model_kwargs: extra model arguments, e.g. ``{"width": 16}`` ({}).
        attack_kwargs: extra attack arguments, e.g. ``{"alpha": 0.2}`` ({}).
        epochs: training epochs (100). batch_size: 128. lr: 0.01.
        weight_decay: SGD weight decay (5e-4). momentum: 0.9.
        train_subset / test_subset: size of a seeded uniform subset of the training / test set
            (None = all).
        poison_rate: fraction of the (subset) training set poisoned (0.1).
        target: target label (0). mode: ``"all2one"`` or ``"all2all"``.
        sam_rho: train with sharpness-aware minimisation of this radius: the adaptive attack
            (None = plain SGD). It is adaptive SAM (ASAM, ‖T_w⁻¹e‖ = ρ, as FT-SAM): the paper's
            radii 1.0 and 3.0 are far too large for plain SAM, whose steps of norm ρ collapse a
            small model to one class (measured: ACC 10.25 % on Fashion-MNIST).
        augment: random crop + horizontal flip (True); flip: the flip part (True).
        clean_reference: also train a clean model the same way (``out/clean/``) and report
            its accuracy as ``clean_acc`` and its ASR/RA on this attack's backdoor test set as
            ``clean_asr`` / ``clean_ra``, the ASR floor (False).
        seed: seed of subsets, poisoned indices, initialisation and shuffling (0).
        data_root: where to look for the dataset (None: ``$DISTOX_DATA``, system paths).

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
    flip: bool = True
    clean_reference: bool = False

    def __post_init__(self) -> None:
        self.model_kwargs = dict(self.model_kwargs or {})
        self.attack_kwargs = dict(self.attack_kwargs or {})
        if self.data_root is not None:
            self.data_root = str(self.data_root)
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
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AttackSpec":
        return cls(**_known_fields(cls, d))

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (``data_root`` only says where data live)."""
        d = self.to_dict()
        d.pop("data_root", None)
        return d

    def loop_config(self, image_side: int) -> LoopConfig:
        """The shared training loop's configuration for this spec."""
        return LoopConfig(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                          momentum=float(self.momentum), weight_decay=float(self.weight_decay),
                          augment=bool(self.augment), flip=bool(self.flip),
                          crop_padding=crop_padding_for(image_side),
                          sam_rho=None if self.sam_rho is None else float(self.sam_rho),
                          sam_adaptive=self.sam_rho is not None, seed=int(self.seed))


@dataclass
class DefenseSpec:
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

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DefenseSpec":
        return cls(**_known_fields(cls, d))


# ---------------------------------------------------------------------------- helpers
def _jsonable(obj: Any) -> Any:
    """JSON round trip (tuples → lists), so specs compare equal to what was written."""
    return json.loads(json.dumps(obj, default=str))


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        log.warning("ignoring unknown %s fields: %s", cls.__name__, ", ".join(unknown))
    return {k: v for k, v in d.items() if k in names}


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 over the dtype, shape and bytes of CPU tensors (bit-identity fingerprint)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on (recorded in every run)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = {"distox": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("numpy", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - both are dependencies
            pass
    return out


def cache_dir() -> Path:
    """Where attack resources are cached: ``$DISTOX_CACHE`` or ``~/.cache/distox``."""
    return Path(os.environ.get("DISTOX_CACHE") or Path.home() / ".cache" / "distox").expanduser()


def subset_indices(n: int, k: int | None, seed: int) -> torch.Tensor | None:
    """Seeded uniform choice of ``k`` of ``n`` indices (sorted); None when ``k`` is None or ≥ n."""
    if k is None or int(k) >= n:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[: int(k)].sort().values


#: Offsets that keep the train- and test-subset draws independent for the same seed.
_TRAIN_SUBSET_OFFSET, _TEST_SUBSET_OFFSET = 0, 1


def load_spec_data(spec: AttackSpec) -> tuple[DatasetBundle, dict[str, Any]]:
    """Load the spec's dataset with its seeded subsets; returns the bundle and its record."""
    full = load_dataset(spec.dataset, spec.data_root)
    record: dict[str, Any] = {
        "name": full.name, "source": full.source, "num_classes": full.num_classes,
        "image_shape": list(full.image_shape), "mean": list(full.mean), "std": list(full.std),
        "train_size": len(full.train), "test_size": len(full.test),
    }
    splits = {}
    for split, k, offset in (("train", spec.train_subset, _TRAIN_SUBSET_OFFSET),
                             ("test", spec.test_subset, _TEST_SUBSET_OFFSET)):
        data: ImageSplit = getattr(full, split)
        seed = int(spec.seed) + offset
        idx = subset_indices(len(data), k, seed)
        splits[split] = data if idx is None else data.subset(idx)
        record[f"{split}_subset"] = {
            "size": len(splits[split]), "seed": seed, "method": "sorted(randperm(n, seed)[:size])",
            "indices_sha256": None if idx is None else tensor_digest(idx),
        }
    bundle = dataclasses.replace(full, train=splits["train"], test=splits["test"])
    record["train_labels_sha256"] = tensor_digest(bundle.train.y)
    record["test_sha256"] = tensor_digest(bundle.test.x, bundle.test.y)
    return bundle, record


def _init_parameters(cls: type) -> set[str] | None:
    """Keyword names accepted by ``cls.__init__`` along the MRO (None: accepts anything)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        sig = inspect.signature(vars(klass)["__init__"])
        var_kw = False
        for p in list(sig.parameters.values())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                names.add(p.name)
        if not var_kw:
            return names
    return None


def _construct(registry, name: str, kwargs: dict[str, Any], error: type, what: str):
    """``registry.create(name, **kwargs)`` with a clear error for unknown arguments."""
    cls = registry.get(name)
    accepted = _init_parameters(cls)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise error(f"{what} '{cls.name}' has no parameter(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(accepted))}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise error(f"bad parameters for {what} '{cls.name}': {exc}") from None
    except DistoxError:
        raise
    except ValueError as exc:
        raise error(f"{what} '{cls.name}': {exc}") from None


def build_attack(spec: AttackSpec) -> Attack:
    """The spec's attack object (not yet prepared)."""
    base = {"target": int(spec.target), "mode": spec.mode, "poison_rate": float(spec.poison_rate),
            "seed": int(spec.seed)}
    clash = sorted(set(base) & set(spec.attack_kwargs))
    if clash:
        raise AttackError(f"set {', '.join(clash)} through the spec's own fields (CLI: "
                          f"{', '.join('--' + k.replace('_', '-') for k in clash)}), not as attack parameters")
    kwargs = {**base, **spec.attack_kwargs}
    return _construct(attack_registry, spec.attack, kwargs, AttackError, "attack")


def attack_from_params(params: dict[str, Any]) -> Attack:
    """Rebuild an attack from its recorded :meth:`Attack.params` (informational keys dropped)."""
    cls = attack_registry.get(params["name"])
    accepted = _init_parameters(cls)
    kwargs = {k: v for k, v in params.items() if k != "name" and (accepted is None or k in accepted)}
    return _construct(attack_registry, params["name"], kwargs, AttackError, "attack")


def model_factory(spec: AttackSpec, data: DatasetBundle) -> Callable[[], nn.Module]:
    """A function building a fresh model of the spec's architecture for ``data``."""

    def make() -> nn.Module:
        try:
            return create_model(spec.model, data.num_classes, data.in_channels, data.mean, data.std,
                                **spec.model_kwargs)
        except TypeError as exc:
            raise RunError(f"bad model arguments for '{spec.model}': {exc}") from None
        except DistoxError:
            raise
        except ValueError as exc:
            raise RunError(str(exc)) from None

    return make


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write per-epoch rows as CSV (columns: union of keys in first-seen order), atomically."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    text = buf.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    _atomic(path, write)


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a ``history.csv`` back as a list of rows of floats (empty cells dropped)."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def _round(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in metrics.items()}


def _check_out(out: Path, spec_dict: dict[str, Any], force: bool, what: str) -> None:
    """Refuse to mix two different specs in one directory (unless ``force``: then clear it)."""
    spec_file = out / SPEC_FILE
    if spec_file.exists():
        old = read_json(spec_file)
    elif (out / ATTACK_RECORD).exists() and what == "attack":  # e.g. a run directory made by an importer
        old = read_json(out / ATTACK_RECORD).get("spec") or {}
    else:
        return
    old_id = {k: v for k, v in old.items() if k != "data_root"}
    if old_id == {k: v for k, v in spec_dict.items() if k != "data_root"}:
        return
    if not force:
        changed = sorted(k for k in set(old_id) | set(spec_dict)
                         if k != "data_root" and old_id.get(k) != spec_dict.get(k))
        raise RunError(f"{out} holds a different {what} run (differs in: {', '.join(changed)}); "
                       "choose another output directory or pass --force to replace it")
    for name in (MODEL_FILE, ATTACK_RECORD, RESOURCES_FILE, METRICS_FILE, HISTORY_FILE, CHECKPOINT_FILE,
                 CLEAN_RECORD, SPEC_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CLEAN_DIR, ignore_errors=True)


def _train_guarded(fn: Callable[[], Any], what: str) -> Any:
    try:
        return fn()
    except TrainingDiverged as exc:
        raise RunError(f"{what}: {exc}") from None


# ---------------------------------------------------------------------------- clean reference
def run_clean(spec: AttackSpec, out: Path, *, device: str | torch.device = "auto", progress: bool = True,
              data: DatasetBundle | None = None) -> dict[str, float]:
    """Train a clean model exactly as :func:`run_attack` would train the backdoored one
    (same data subset, architecture, loop and seed; no poisoning) and write
    ``out/model.safetensors``, ``out/clean.json`` and ``out/metrics.json`` (``{"acc"}``).
    Cached and resumable like :func:`run_attack`. Returns the metrics.

    Example:
        >>> run_clean(AttackSpec("badnets", epochs=5, train_subset=10_000), Path("runs/clean"))["acc"]
    """
    out = Path(out)
    spec_dict = spec.to_dict()
    spec_dict_clean = {k: v for k, v in spec_dict.items() if k not in _ATTACK_ONLY}
    _check_out(out, spec_dict_clean, False, "clean")
    if (out / METRICS_FILE).exists() and (out / MODEL_FILE).exists() and (out / CLEAN_RECORD).exists():
        return read_json(out / METRICS_FILE)
    write_json(out / SPEC_FILE, spec_dict_clean)
    dev = resolve_device(device)
    if data is None:
        data, _ = load_spec_data(spec)
    torch.manual_seed(int(spec.seed))
    model = model_factory(spec, data)()
    config = spec.loop_config(data.image_shape[-1])
    from .training import train

    state = _train_guarded(lambda: train(model, data.train.x, data.train.y, config, device=dev, progress=progress,
                                         checkpoint=out / CHECKPOINT_FILE, desc="clean"), "clean training")
    model.eval()
    metrics = _round(evaluate(model, data.test.x, data.test.y, device=dev))
    save_model(out / MODEL_FILE, model)
    write_history(out / HISTORY_FILE, state.history)
    write_json(out / CLEAN_RECORD, {"format_version": FORMAT_VERSION, "kind": "clean", "spec": spec_dict_clean,
                                    "training": config.to_dict(), "seconds": round(state.seconds, 3),
                                    "versions": library_versions(), "device": str(dev)})
    write_json(out / METRICS_FILE, metrics)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return metrics


#: Spec fields that do not change a clean reference model.
_ATTACK_ONLY = ("attack", "attack_kwargs", "poison_rate", "target", "mode", "clean_reference")


# ---------------------------------------------------------------------------- attack runs
def run_attack(spec: AttackSpec, out: Path, *, device: str | torch.device = "auto", progress: bool = True,
               force: bool = False, track_epochs: bool = False,
               on_epoch_end: Callable[[int, nn.Module], dict[str, float] | None] | None = None) -> dict[str, float]:
    """Train the backdoored model of ``spec`` into run directory ``out``; return its metrics.

    Args:
        spec: the attack run's definition.
        out: run directory (created). A finished run with the same spec is returned from
            ``metrics.json`` without recomputing; an interrupted one resumes from
            ``checkpoint.pt``; one with a different spec is an error unless ``force``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        progress: tqdm progress bars.
        force: replace a run of a different spec in ``out`` (False).
        track_epochs: evaluate ACC/ASR/RA after every epoch into ``history.csv`` (False).
        on_epoch_end: extra ``(epoch, model) -> dict | None`` callback (its dict joins the history).

    Returns:
        ``{"acc", "asr", "ra"}`` in percent, plus ``"clean_acc"``, ``"clean_asr"`` and
        ``"clean_ra"`` with ``spec.clean_reference`` (see :func:`score_clean_model`).
    """
    out = Path(out)
    spec_dict = spec.to_dict()
    _check_out(out, spec_dict, force, "attack")
    if all((out / f).exists() for f in (METRICS_FILE, MODEL_FILE, ATTACK_RECORD)):
        log.info("%s: finished run with the same spec; returning its metrics", out)
        return read_json(out / METRICS_FILE)

    dev = resolve_device(device)
    attack = build_attack(spec)  # parameter errors before any data is loaded
    data, data_record = load_spec_data(spec)
    attack.check_data(data)  # target outside the classes, image too small
    make_model = model_factory(spec, data)
    make_model()  # architecture errors before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC_FILE, spec_dict)

    t0 = time.perf_counter()
    torch.manual_seed(int(spec.seed))
    attack.prepare(PreparedContext(data=data, model_factory=make_model, device=dev, cache_dir=cache_dir(),
                                   progress=progress))
    prepare_seconds = time.perf_counter() - t0

    torch.manual_seed(int(spec.seed))
    model = make_model()
    config = spec.loop_config(data.image_shape[-1])
    # Training-controlled attacks (e.g. Input-aware) learn their trigger while training: rebuild
    # their poisoned test set every epoch; a fixed trigger's is built once.
    fixed_backdoor = attack.backdoor_test_set(data.test) if track_epochs and attack.kind != "training" else None

    def epoch_end(epoch: int, m: nn.Module) -> dict[str, float]:
        row: dict[str, float] = {}
        if track_epochs:
            bd = fixed_backdoor if fixed_backdoor is not None else attack.backdoor_test_set(data.test)
            row.update(Evaluator(data.test.x, data.test.y, bd, device=dev)(epoch, m))
        if on_epoch_end is not None:
            row.update(on_epoch_end(epoch, m) or {})
        return row

    state = _train_guarded(lambda: attack.train_model(model, data, config, device=dev, progress=progress,
                                                      checkpoint=out / CHECKPOINT_FILE, on_epoch_end=epoch_end),
                           f"attack {spec.attack}")
    model.eval()

    resources = attack.resources()
    backdoor = attack.backdoor_test_set(data.test)
    metrics = _round(evaluate(model, data.test.x, data.test.y, backdoor, device=dev))
    clean_seconds = None
    if spec.clean_reference:
        t1 = time.perf_counter()
        run_clean(spec, out / CLEAN_DIR, device=dev, progress=progress, data=data)
        metrics.update(score_clean_model(out / CLEAN_DIR / MODEL_FILE, spec, data, backdoor, device=dev))
        clean_seconds = round(time.perf_counter() - t1, 3)

    record = {
        "format_version": FORMAT_VERSION,
        "kind": "attack",
        "spec": spec_dict,
        "attack": _jsonable(attack.params()),
        "attack_class": f"{type(attack).__module__}.{type(attack).__qualname__}",
        "attack_kind": attack.kind,
        "dataset": data_record,
        "model": {"name": spec.model, "kwargs": spec.model_kwargs,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "training": config.to_dict(),
        "resources": {"file": RESOURCES_FILE, "names": sorted(resources),
                      "sha256": tensor_digest(*(resources[k] for k in sorted(resources))) if resources else None},
        "poisoned_train": len(attack.poison_indices(data.train.y)) if attack.kind != "training" else None,
        "backdoor_test": {"size": len(backdoor), "sha256": tensor_digest(backdoor.x, backdoor.target, backdoor.true)},
        "metrics": metrics,
        "seconds": {"prepare": round(prepare_seconds, 3), "train": round(state.seconds, 3),
                    "total": round(time.perf_counter() - t0, 3), "clean_reference": clean_seconds},
        "resumed_from_epoch": state.resumed_from_epoch,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_tensors(out / RESOURCES_FILE, resources, metadata={"attack": spec.attack})
    save_model(out / MODEL_FILE, model)
    write_history(out / HISTORY_FILE, state.history)
    write_json(out / ATTACK_RECORD, record)
    write_json(out / METRICS_FILE, metrics)  # last: its presence marks a finished run
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return metrics


# ---------------------------------------------------------------------------- loading
@dataclass
class LoadedRun:
    """An attack run loaded back: record, spec, attack (resources loaded), data, model."""

    run_dir: Path
    record: dict
    spec: AttackSpec
    attack: Attack
    data: DatasetBundle
    model: nn.Module

    def backdoor_test_set(self) -> BackdoorTestSet:
        """The poisoned test set, rebuilt from the record (a warning if its digest differs
        from the one recorded at attack time, e.g. a generator run on another device)."""
        bd = self.attack.backdoor_test_set(self.data.test)
        want = self.record.get("backdoor_test", {}).get("sha256")
        if want and tensor_digest(bd.x, bd.target, bd.true) != want:
            log.warning("%s: the rebuilt poisoned test set differs from the one at attack time", self.run_dir)
        return bd

    def retain_indices(self, ratio: float | None = None, count: int | None = None, seed: int = 0) -> torch.Tensor:
        """Seeded indices of the retain set within the run's clean training data."""
        if ratio is None and count is None:
            ratio = 0.05
        try:
            return select_retain(len(self.data.train), ratio=ratio, count=count, seed=seed)
        except DistoxError:
            raise
        except ValueError as exc:
            raise DefenseError(str(exc)) from None

    def retain(self, ratio: float | None = None, count: int | None = None, seed: int = 0) -> ImageSplit:
        """The retain set: a seeded uniform choice from the clean training data (SPEC §1)."""
        return self.data.train.subset(self.retain_indices(ratio, count, seed))

    def evaluate(self, model: nn.Module | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
        """ACC/ASR/RA of ``model`` (default: the backdoored one) on this run's test sets."""
        return _round(evaluate(model or self.model, self.data.test.x, self.data.test.y, self.backdoor_test_set(),
                               device=device))


def read_record(run_dir: Path, name: str) -> dict[str, Any]:
    """Read a run record, rejecting ones written by a newer distox format."""
    record = read_json(Path(run_dir) / name)
    if not isinstance(record, dict):
        raise RunError(f"{Path(run_dir) / name} is not a distox record")
    version = record.get("format_version")
    if not isinstance(version, int):
        raise RunError(f"{Path(run_dir) / name} has no valid format_version; it was not written by distox")
    if version > FORMAT_VERSION:
        raise RunError(f"{Path(run_dir) / name} has format_version {version}, newer than this distox "
                       f"understands ({FORMAT_VERSION}); upgrade distox to read it")
    return record


def load_run(run_dir: Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load an attack run: spec, dataset with the same subsets, attack with its resources and
    the backdoored model (eval mode, on ``device``).

    Raises :class:`RunError` for a missing directory, model or record, a record with a newer
    ``format_version``, or data that differ from the ones the run used; :class:`DataError`
    when the dataset is missing on this machine.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    if not (run_dir / ATTACK_RECORD).is_file():
        hint = " (training did not finish; rerun the same `distox attack` command to resume)" \
            if (run_dir / SPEC_FILE).exists() else ""
        raise RunError(f"{run_dir} is not a finished attack run: {ATTACK_RECORD} is missing{hint}")
    record = read_record(run_dir, ATTACK_RECORD)
    if not (run_dir / MODEL_FILE).is_file():
        raise RunError(f"{run_dir} has no {MODEL_FILE}: the backdoored model is missing")
    try:
        spec = AttackSpec.from_dict(record["spec"])
        params = record["attack"]
    except (KeyError, TypeError) as exc:
        raise RunError(f"{run_dir / ATTACK_RECORD} is incomplete: {exc}") from None
    data, data_record = load_spec_data(spec)
    saved = record.get("dataset", {})
    for key, what in (("train_labels_sha256", "training labels"), ("test_sha256", "test images")):
        if saved.get(key) and saved[key] != data_record[key]:
            raise RunError(f"the {spec.dataset} {what} on this machine differ from the ones this run used "
                           f"(source then: {saved.get('source')}; now: {data_record['source']}); the poisoned "
                           "test set cannot be rebuilt exactly")
    attack = attack_from_params(params)
    attack.check_data(data)
    names = record.get("resources", {}).get("names") or []
    res_path = run_dir / RESOURCES_FILE
    if names and not res_path.is_file():
        raise RunError(f"{run_dir} has no {RESOURCES_FILE}, needed to rebuild the {params['name']} trigger")
    if res_path.is_file():
        attack.load_resources(load_state(res_path))
    model = model_factory(spec, data)()
    load_into(model, load_state(run_dir / MODEL_FILE), source=str(run_dir / MODEL_FILE))
    dev = resolve_device(device)
    model.to(dev).eval()
    return LoadedRun(run_dir=run_dir, record=record, spec=spec, attack=attack, data=data, model=model)


def evaluate_run(run_dir: Path, device: str | torch.device = "auto") -> dict[str, float]:
    """Recompute ``metrics.json`` of an attack run (ACC, ASR, RA; ``clean_acc`` when a clean
    reference model is present)."""
    run = load_run(run_dir, device=device)
    metrics = run.evaluate(device=device)
    clean_model = Path(run_dir) / CLEAN_DIR / MODEL_FILE
    if clean_model.is_file():
        metrics.update(score_clean_model(clean_model, run.spec, run.data, run.backdoor_test_set(), device=device))
    return metrics


def score_clean_model(weights: Path, spec: AttackSpec, data: DatasetBundle, backdoor: BackdoorTestSet,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """Score a clean reference model (trained like ``spec``, without poison) on an attack's test
    sets: ``clean_acc``, and ``clean_asr`` / ``clean_ra`` on the attack's backdoor test set.

    ``clean_asr`` is the ASR of a model that never saw the trigger: the share of triggered
    images a clean model already sends to the target (e.g. because a strong blend makes a
    Fashion-MNIST image unrecognisable). A defense that merely restores clean behaviour lands
    near it, so it is the yardstick for a fixed ASR threshold (BENCHMARKS.md, cpu.yaml grid).
    """
    model = model_factory(spec, data)()
    load_into(model, load_state(weights), source=str(weights))
    m = _round(evaluate(model, data.test.x, data.test.y, backdoor, device=device))
    return {"clean_acc": m["acc"], "clean_asr": m["asr"], "clean_ra": m["ra"]}


# ---------------------------------------------------------------------------- defense runs
def run_defense(run_dir: Path, spec: DefenseSpec, out: Path | None = None, *, force: bool = False,
                device: str | torch.device = "auto", progress: bool = True, track_epochs: bool = True) -> dict[str, Any]:
    """Apply a defense to an attack run and score it (SPEC §2, §4).

    Args:
        run_dir: an attack run directory (:func:`run_attack`).
        spec: the defense and its retain set.
        out: output directory (default ``run_dir/defense/<method>``).
        force: overwrite an existing result there (False: :class:`RunError`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: tqdm progress bars.
        track_epochs: ACC/ASR/RA after every epoch into ``history.csv`` (True).

    Returns:
        The ``defense.json`` record: before/after ACC/ASR/RA, DER, retain set, resolved
        defense configuration, seconds.
    """
    run_dir = Path(run_dir)
    method = defense_registry.get(spec.method).name  # unknown method: clear error first
    out = Path(out) if out is not None else run_dir / "defense" / method
    if (out / DEFENSE_RECORD).exists() and not force:
        raise RunError(f"{out / DEFENSE_RECORD} already exists; pass --force (force=True) to overwrite it "
                       "or --out to write elsewhere")
    kwargs = dict(spec.params)
    if spec.epochs is not None:
        kwargs["epochs"] = int(spec.epochs)
    if spec.batch_size is not None:
        kwargs["batch_size"] = int(spec.batch_size)
    kwargs.setdefault("seed", int(spec.seed))
    defense = _construct(defense_registry, method, kwargs, DefenseError, "defense")

    dev = resolve_device(device)
    run = load_run(run_dir, device=dev)
    idx = run.retain_indices(spec.ratio, spec.count, spec.seed)
    retain = run.data.train.subset(idx)
    backdoor = run.backdoor_test_set()
    test = run.data.test
    before = _round(evaluate(run.model, test.x, test.y, backdoor, device=dev))
    evaluator = Evaluator(test.x, test.y, backdoor, device=dev) if track_epochs else None
    t0 = time.perf_counter()
    result = _train_guarded(lambda: defense(run.model, retain, evaluator=evaluator, device=dev, progress=progress),
                            f"defense {method}")
    seconds = time.perf_counter() - t0
    after = _round(evaluate(result.model, test.x, test.y, backdoor, device=dev))
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "defense",
        "method": method,
        "spec": spec.to_dict(),
        "run_dir": str(run_dir),
        "attack": run.record.get("attack", {}).get("name"),
        "attack_spec": run.record.get("spec"),
        "retain": {"seed": int(spec.seed), "ratio": spec.ratio, "count": spec.count, "size": len(idx),
                   "of": len(run.data.train), "indices_sha256": tensor_digest(idx), "indices": idx.tolist(),
                   "source": "clean training data of the run (after its train subset)"},
        "config": _jsonable(result.config),
        "before": before,
        "after": after,
        "der": round(der(before, after), 6),
        "seconds": round(seconds, 3),
        "epochs": len(result.history),
        "device": str(dev),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_model(out / MODEL_FILE, result.model)
    write_history(out / HISTORY_FILE, result.history)
    write_json(out / DEFENSE_RECORD, record)  # last: marks a finished result
    return record


__all__ = [
    "AttackSpec", "DefenseSpec", "LoadedRun", "evaluate_run", "library_versions", "load_run",
    "load_spec_data", "read_history", "run_attack", "run_clean", "run_defense", "tensor_digest",
]
