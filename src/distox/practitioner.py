"""Purify a suspect model of *your own* architecture from files: the library side of
``distox purify --model MODULE:FACTORY --weights FILE --data PATH_OR_NAME``.

The practitioner's situation (DESIGN "Who uses it"): a classifier from an untrusted source,
its architecture as Python code, and a small set of clean labelled images. They cannot
measure the attack success rate (they do not know the trigger), so the report shows what they
*can* check: accuracy on a seeded held-out validation split before and after purification,
the weight distance travelled by the selected weights (D3's objective, SPEC §1), the time,
and a warning when accuracy fell by more than a tolerance.

Steps, each failing with a one-line :class:`~distox.errors.DistoxError` *before* anything is
written:

1. :func:`import_factory` imports ``module:callable`` or ``path/to/file.py:callable``.
2. :func:`build_model` calls it (with ``num_classes=`` when the factory accepts it).
3. :func:`distox.runs.load_state` + :func:`distox.runs.load_into` load the weights
   (safetensors, or ``.pt`` with ``torch.load(weights_only=True)``; pickles only with
   ``trust_pickle=True``), reporting missing/unexpected keys.
4. :func:`load_clean_data` reads an image folder (one sub-folder per class) or a named dataset.
   A folder's labels: ``classes`` (``--classes a,b,c`` or a JSON file, :func:`parse_classes`)
   when given, else numeric folder names as the label itself, else the names sorted
   (:func:`distox.data.folder.folder_labels`); the folder→label mapping is printed and saved.
5. :func:`purify_files` holds out a stratified validation split, refuses labels the suspect
   model does not share (accuracy near chance, or most classes swapped:
   :mod:`distox.label_check`), runs :func:`distox.purify`, evaluates, and (when ``out`` is
   given) writes the purified weights as safetensors plus a JSON report beside them,
   atomically. Every epoch is checkpointed beside ``out`` (``NAME.checkpoint.pt``): rerunning
   the same command after an interruption resumes there; the file is deleted when done.

Input range: images are fed in [0, 1]. Models trained on normalised inputs (torchvision/timm
ImageNet models usually are) need ``normalize="imagenet"`` or ``normalize="0.5,0.5"``
(mean,std, one value or one per channel): the model is then wrapped in
:class:`distox.models.Normalized` for purification, and the *unwrapped* weights are saved, so
the output loads into the user's own architecture exactly like the input did.

Factories: any callable returning an ``nn.Module``; ``num_classes=`` is passed when it is
accepted (torchvision builders, most user classes). timm: ``model="timm:create_model"`` with
``model_kwargs={"model_name": "resnet18"}`` (CLI ``--model-kwarg model_name=resnet18``).

Example:
    >>> report = purify_files("torchvision.models:resnet18", "suspect.safetensors",
    ...                       "folder:clean_images/", normalize="imagenet", out="purified.safetensors")
    >>> report.after["acc"], report.warning
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.core import DataError, ImageSplit, holdout_split
from .errors import DistoxError, first_line
from .defenses.base import check_classes
from .guidance import DEFAULT_TOLERANCE, accuracy_warning
from .label_check import LabelCheck, check_labels, check_mode
from .metrics import round_metrics
from .models.normalized import Normalized
from .models.outputs import logits_view, unwrap
from .models.selection import SelectionError, select_weights
from .runs import load_into, load_state, safetensors_metadata, save_model, write_json

log = logging.getLogger(__name__)

#: ImageNet channel statistics (torchvision/timm pretrained models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PractitionerError(DistoxError):
    """A factory, weights file or option that cannot be used, with a message for the user."""


# ---------------------------------------------------------------------------- the model
def import_factory(spec: str) -> Callable[..., nn.Module]:
    """Import ``"package.module:callable"`` or ``"path/to/file.py:callable"``.

    The callable may be dotted (``"timm:create_model"``, ``"mymod:Nets.small"``).
    Raises :class:`PractitionerError` when the module or attribute cannot be imported.
    """
    if ":" not in spec:
        raise PractitionerError(
            f"--model must look like 'package.module:factory' or 'path/to/file.py:factory'; got {spec!r}")
    mod_name, _, attr = spec.rpartition(":")
    if not mod_name or not attr:
        raise PractitionerError(f"--model {spec!r}: both the module and the factory name are needed")
    try:
        if mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name:
            path = Path(mod_name).expanduser()
            if not path.is_file():
                raise PractitionerError(f"model file not found: {path}")
            name = f"_distox_user_model_{abs(hash(str(path.resolve())))}"
            spec_obj = importlib.util.spec_from_file_location(name, path)
            if spec_obj is None or spec_obj.loader is None:
                raise PractitionerError(f"cannot import {path} as a Python module")
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[name] = module
            try:
                spec_obj.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(mod_name)
    except PractitionerError:
        raise
    except Exception as exc:  # ImportError, SyntaxError, errors raised by the user's module
        raise PractitionerError(f"cannot import {mod_name!r} for --model {spec!r}: "
                                f"{type(exc).__name__}: {first_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PractitionerError(f"{mod_name!r} has no attribute {attr!r} (--model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PractitionerError(f"--model {spec!r}: {attr!r} is not callable")
    return obj


def accepts_kwarg(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (explicitly or through ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    params = sig.parameters.values()
    return name in sig.parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_model(factory: Callable[..., nn.Module], num_classes: int | None = None,
                kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Call ``factory(**kwargs)``, adding ``num_classes=`` when given and accepted.

    (timm's ``create_model`` and torchvision's builders take ``num_classes``; a plain
    ``nn.Module`` class with a ``num_classes`` argument does too.)
    """
    kw = dict(kwargs or {})
    if num_classes is not None and "num_classes" not in kw and accepts_kwarg(factory, "num_classes"):
        kw["num_classes"] = int(num_classes)
    try:
        model = factory(**kw)
    except Exception as exc:
        raise PractitionerError(f"the model factory failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise PractitionerError(f"the model factory returned {type(model).__name__}, not a torch nn.Module")
    return model


def parse_normalize(value: str | Sequence[float] | None, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``None``/``"none"`` → no normalisation; ``"imagenet"`` → ImageNet statistics;
    ``"m,s"`` (one value each) or ``"m1,m2,m3,s1,s2,s3"`` (one per channel) → (mean, std)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none"):
            return None
        if text == "imagenet":
            if channels != 3:
                raise PractitionerError(f"--normalize imagenet needs 3-channel images; these have {channels}")
            return IMAGENET_MEAN, IMAGENET_STD
        try:
            nums = [float(v) for v in text.split(",")]
        except ValueError:
            raise PractitionerError(
                f"--normalize must be 'imagenet', 'none' or 'mean,std' numbers; got {value!r}") from None
    else:
        nums = [float(v) for v in value]
    if len(nums) == 2:
        mean, std = (nums[0],) * channels, (nums[1],) * channels
    elif len(nums) == 2 * channels:
        mean, std = tuple(nums[:channels]), tuple(nums[channels:])
    else:
        raise PractitionerError(
            f"--normalize needs 2 numbers (mean,std) or {2 * channels} (one mean and std per channel); got {len(nums)}")
    if any(s <= 0 for s in std):
        raise PractitionerError(f"--normalize: std must be > 0; got {std}")
    return mean, std


# ---------------------------------------------------------------------------- the data
#: How each kind of label source is described in the report.
LABEL_RULES = {"given": "as given by --classes", "numeric": "numeric folder names taken as labels",
               "sorted": "folder names sorted alphabetically", "dataset": "the dataset's own labels"}


@dataclass
class CleanData:
    """The practitioner's clean labelled images (all of them, before the validation split)."""

    split: ImageSplit
    num_classes: int
    class_names: list[str]
    source: str
    mapping: dict[str, int] = field(default_factory=dict)  # class (folder) name → label
    label_rule: str = "dataset"  # a key of LABEL_RULES

    def labels_text(self, limit: int = 12) -> str:
        """``bag→0, boot→1, …`` (at most ``limit`` classes) and the rule that made it."""
        items = sorted(self.mapping.items(), key=lambda kv: kv[1])
        shown = ", ".join(f"{n}→{i}" for n, i in items[:limit])
        more = f", … ({len(items)} classes)" if len(items) > limit else ""
        return f"{shown}{more} ({LABEL_RULES[self.label_rule]})"


def parse_classes(value: str | Sequence[str] | Mapping[str, int] | None) -> list[str] | dict[str, int] | None:
    """``--classes``: ``"a,b,c"`` (label ``i`` is the ``i``-th name), or a path to a JSON file
    holding such a list or a ``{"name": label}`` dict; a list or dict passes through."""
    if value is None or isinstance(value, Mapping):
        return dict(value) if value is not None else None
    if not isinstance(value, str):
        return [str(v) for v in value]
    text = value.strip()
    if text.lower().endswith(".json") or Path(text).expanduser().is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise DataError(f"--classes file not found: {path}")
        try:
            loaded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"--classes {path} is not a readable JSON file: {first_line(exc)}") from None
        if isinstance(loaded, list) and all(isinstance(v, str) for v in loaded):
            return loaded
        if isinstance(loaded, dict):
            return loaded
        raise DataError(f"--classes {path} must hold a list of class names or a {{name: label}} object")
    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names):
        raise DataError(f"--classes needs two or more comma-separated class names; got {value!r}")
    return names


def load_clean_data(data: str, *, image_size: int | None = None, grayscale: bool | None = None,
                    limit: int | None = None, seed: int = 0, data_root: str | None = None,
                    progress: bool = False,
                    classes: str | Sequence[str] | Mapping[str, int] | None = None) -> CleanData:
    """Read clean images: an image folder (``PATH`` or ``folder:PATH``, one sub-folder per
    class) or a named dataset (``digits``, ``fashion-mnist``, ...: its clean training split).

    Args:
        data: folder path or dataset name.
        image_size: resize folder images to this side (None: the folder loader's default).
        grayscale: force 1 channel (True) or 3 (False); None: as the folder loader decides.
        limit: keep a seeded random subset of at most this many images (None: all).
        seed: seed of that subset.
        data_root: where named datasets are looked up.
        progress: progress bars while reading a folder.
        classes: a folder's class order (:func:`parse_classes`); None: numeric folder names
            as labels, else sorted names.

    Raises :class:`DataError` for no images, fewer images than classes, or ``classes`` with a named
    dataset, and :class:`~distox.defenses.DefenseError` for images of a single class (:func:`check_classes`).
    """
    from .data import load_dataset
    from .data.folder import label_rule

    classes = parse_classes(classes)

    name = data
    is_folder = data.startswith("folder:") or Path(data).expanduser().is_dir()
    if is_folder:
        path = data.split(":", 1)[1] if data.startswith("folder:") else data
        if not Path(path).expanduser().is_dir():
            raise DataError(f"image folder not found: {path}")
        # every image in "train": the practitioner's validation split is our own, below
        bundle = load_dataset(f"folder:{path}", image_size=image_size, grayscale=grayscale,
                              test_fraction=0.0, seed=seed, progress=progress, classes=classes)
        split = bundle.train
        source = f"folder:{path}"
        rule = label_rule(bundle.class_names, classes)
    else:
        if ("/" in data or data.startswith(".")) and not Path(data).exists():
            raise DataError(f"image folder not found: {data}")
        if classes is not None:
            raise DataError("--classes sets the labels of an image folder's class folders; "
                            f"{data!r} is a named dataset with labels of its own")
        bundle = load_dataset(name, data_root=data_root)
        rule = "dataset"
        split = bundle.train
        source = bundle.source or name
    if len(split) == 0:
        raise DataError(f"{data}: no images found")
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit must be >= 1; got {limit}")
        if limit < len(split):
            idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit]
            split = split.subset(idx.sort().values)
    present = sorted(int(c) for c in torch.unique(split.y))
    num_classes = int(bundle.num_classes)
    check_classes(split.y, f"{data}: the clean data")
    if len(split) < num_classes:
        raise DataError(f"{data}: {len(split)} clean images for {num_classes} classes; "
                        "need at least one image per class")
    names = list(bundle.class_names) or [str(i) for i in range(num_classes)]
    return CleanData(split, num_classes, names, source, {names[c]: c for c in present}, rule)


def holdout(split: ImageSplit, val_fraction: float, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """Seeded stratified split into (retain, validation); every class with ≥ 2 images keeps
    at least one on each side (:func:`distox.data.stratified_split`)."""
    try:
        return holdout_split(split, val_fraction, seed)
    except ValueError as exc:
        raise DataError(f"--val-fraction {val_fraction} on {len(split)} clean images: {exc}") from None


# ---------------------------------------------------------------------------- purification
@dataclass
class PurifyReport:
    """What ``distox purify`` reports (all accuracies in percent on the validation split)."""

    model: str
    weights: str
    data: str
    method: str
    params: dict[str, Any]
    num_classes: int
    retain_size: int
    val_size: int
    before: dict[str, float]
    after: dict[str, float]
    acc_drop: float
    distance: float
    distance_layers: list[str]
    seconds: float
    tolerance: float
    warning: str | None = None
    normalize: Any = None
    out: str | None = None
    classes: dict[str, Any] = field(default_factory=dict)  # {"rule", "mapping": {name: label}}
    label_check: dict[str, Any] = field(default_factory=dict)
    resumed_from_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # what the defense found (Result.info), e.g. NC's flags

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, numbers rounded as in every distox record (:func:`~distox.metrics.round_metrics`)."""
        return round_metrics(asdict(self))

    def epochs_text(self) -> str:
        """``"  epochs N"`` as the run made them, with why when D3's steps floor set them."""
        floor = (self.params.get("min_steps_resolved") or {}).get("epochs")
        epochs = floor if floor is not None else self.params.get("epochs")
        if epochs is None:
            return ""
        if floor is not None and floor != self.params.get("epochs"):
            return f"  epochs {epochs} (at least {self.params['min_steps']} optimiser steps on {self.retain_size} images)"
        return f"  epochs {epochs}"

    def text(self) -> str:
        """A short human-readable summary."""
        lines = [
            f"method {self.method}  retain {self.retain_size} images  validation {self.val_size} images"
            f"{self.epochs_text()}",
            f"labels               {self.classes['text']}" if self.classes.get("text") else "",
            f"validation accuracy  before {self.before['acc']:.2f}%  after {self.after['acc']:.2f}%  "
            f"(change {self.after['acc'] - self.before['acc']:+.2f} points)",
            f"distance travelled   {self.distance:.4g}  (p-norm of W - W_init over {layer_list(self.distance_layers)})",
            f"time                 {self.seconds:.1f}s",
        ]
        if self.warning:
            lines.append(f"WARNING: {self.warning}")
        if self.resumed_from_epoch:
            lines.append(f"resumed after epoch {self.resumed_from_epoch} from the interrupted run's checkpoint")
        if self.out:
            lines.append(f"purified weights written to {self.out} (report: {report_path(self.out)})")
        return "\n".join(line for line in lines if line)


def report_path(out: str | Path) -> Path:
    """The JSON report beside the weights: ``purified.safetensors`` → ``purified.json``."""
    return Path(out).with_suffix(".json")


def checkpoint_path(out: str | Path) -> Path:
    """The per-epoch checkpoint beside the weights: ``purified.safetensors`` →
    ``purified.checkpoint.pt`` (deleted when the purification finishes)."""
    return Path(out).with_suffix(".checkpoint.pt")


def refuse_wrong_labels(model: nn.Module, clean: CleanData, device: str, mode: str = "error") -> LabelCheck:
    """Refuse (:class:`DataError`) clean labels the suspect model does not share
    (:mod:`distox.label_check`); the message shows the folder→label mapping and, when the
    model's predictions imply one, the ``--classes`` order to try. ``mode="warn"`` logs that
    message and goes on (labels the user knows to be right, on a model that really is that
    broken); the measurement is returned either way."""
    check = check_labels(model, clean.split, device=device)
    hint = f"labels now: {clean.labels_text()}"
    if clean.label_rule != "dataset":
        order = check.order(clean.class_names)
        hint += ("; pass --classes NAME,NAME,... (or a JSON file) in the order of the model's outputs"
                 + (f", e.g. --classes {','.join(order)}" if order else ""))
    hint += "; check --normalize, --grayscale/--rgb and --image-size too"
    problem = check.problem(clean.class_names, hint)
    if problem and mode == "error":
        raise DataError(problem + "; --label-check warn runs anyway")
    if problem:
        log.warning("%s (going on: label check 'warn')", problem)
    elif check.stale_batchnorm:
        log.warning("%s", check.stale_message())
    return check


def selected_distance(before: nn.Module, after: nn.Module, example: torch.Tensor, layers: Any = "auto",
                      p: float = 2.0) -> tuple[float, list[str]]:
    """Σ_W ‖W_after − W_before‖_p over the selected weights (default: the final classifier)."""
    try:
        w0 = select_weights(before, layers, example)
        w1 = select_weights(after, layers, example)
    except SelectionError:
        w0 = dict(before.named_parameters())
        w1 = dict(after.named_parameters())
    dist = 0.0
    with torch.no_grad():
        for k, v in w0.items():
            dist += float(torch.linalg.vector_norm((w1[k].detach().cpu() - v.detach().cpu()).flatten(), ord=p))
    return dist, [k.removesuffix(".weight") for k in w0]


def distance_selection(method: str, config: dict[str, Any]) -> Any:
    """The weights whose distance the report gives: those D3's distance covered in this run (its
    ``layers``, as its BatchNorm rule resolved them), the final classifier for other methods."""
    if method != "d3":
        return "auto"
    changed = (config.get("norm_rule_resolved") or {}).get("changed", {})
    return changed.get("layers", config.get("layers", "auto"))


def layer_list(names: list[str], most: int = 4) -> str:
    """``a, b, c``; past ``most`` names, their count with the first two and the last."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{len(names)} weights: {names[0]}, {names[1]}, ..., {names[-1]}"


def purify_files(
    model: str,
    weights: str | Path,
    data: str,
    *,
    num_classes: int | None = None,
    method: str = "d3",
    epochs: int | None = None,
    params: dict[str, Any] | None = None,
    val_fraction: float = 0.2,
    tolerance: float = DEFAULT_TOLERANCE,
    trust_pickle: bool = False,
    normalize: str | None = None,
    image_size: int | None = None,
    grayscale: bool | None = None,
    limit: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    data_root: str | None = None,
    classes: str | Sequence[str] | Mapping[str, int] | None = None,
    eval_every: int | None = None,
    label_check: str = "error",
) -> PurifyReport:
    """Purify the model built by ``model`` (``module:factory``) with ``weights`` on ``data``.

    Args:
        model: ``"package.module:factory"`` or ``"path/to/file.py:factory"``.
        weights: ``.safetensors`` or ``.pt``/``.pth`` state dict.
        data: image folder (``PATH`` or ``folder:PATH``) or a dataset name.
        num_classes: passed to the factory (default: the number of classes in ``data``).
        method: defense name (``"d3"``).
        epochs: defense epochs (None: the method's default; for D3's default preset 12, or more on a
            retain set too small for 600 optimiser steps in 12 epochs).
        params: the defense's hyper-parameters (e.g. ``{"lmd": 10, "eps": "auto"}``).
        val_fraction: held-out validation share of the clean images (0.2), stratified, seeded.
        tolerance: warn when validation accuracy falls by more than this many points (2.0).
        trust_pickle: allow unpickling a ``.pt`` that is not a plain tensor dict (False).
        normalize: ``None``/``"none"``, ``"imagenet"`` or ``"mean,std"`` (see module doc).
        image_size, grayscale, limit: see :func:`load_clean_data`.
        model_kwargs: extra keyword arguments for the factory.
        out: where to write the purified safetensors (+ ``.json`` report); None: write nothing.
            Epochs are checkpointed to :func:`checkpoint_path` meanwhile (resumed by a rerun).
        seed: seed of the split, the subset and the defense (0).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress: progress bars.
        data_root: where named datasets are looked up.
        classes: an image folder's class order (:func:`parse_classes`: ``"a,b,c"``, a JSON
            file, a list or a ``{name: label}`` dict).
        eval_every: also measure validation accuracy every this many epochs (and after the
            last) into the report's ``history`` (None: before and after only).
        label_check: clean labels the suspect model does not share (accuracy near chance, or
            most classes mostly predicted as another label): ``"error"`` refuses them (the
            default), ``"warn"`` logs the same message and purifies anyway, ``"off"`` skips the
            check (the report then says ``{"skipped": true}``).

    Returns the :class:`PurifyReport`. Every check runs before anything is written, including
    :func:`refuse_wrong_labels`.
    """
    from .api import PURIFIED_BY, purify

    check_mode(label_check)  # before any loading
    params = dict(params or {})
    factory = import_factory(model)
    clean = load_clean_data(data, image_size=image_size, grayscale=grayscale, limit=limit, seed=seed,
                            data_root=data_root, progress=progress, classes=classes)
    k = int(num_classes) if num_classes is not None else clean.num_classes
    net = build_model(factory, k, model_kwargs)
    state = load_state(weights, trust_pickle=trust_pickle)
    load_into(net, state, source=f"the weights in {weights}")
    net.eval()
    stats = parse_normalize(normalize, clean.split.x.shape[1])
    wrapped: nn.Module = Normalized(net, *stats) if stats is not None else net
    retain, val = holdout(clean.split, val_fraction, seed)
    wrapped = logits_view(wrapped, retain.x[:2])  # dict, tuple or softmax outputs: trained on the logits
    earlier = safetensors_metadata(weights).get(PURIFIED_BY)  # weights that `distox purify` wrote
    if earlier is not None:  # purify warns for D3 after D3
        setattr(wrapped, PURIFIED_BY, marker_from_header(earlier))
    probe_outputs(wrapped, retain, k)  # check_retain: the same refusals as distox.purify
    checked = (refuse_wrong_labels(wrapped, clean, device, label_check).to_dict() if label_check != "off"
               else {"skipped": True})
    log.info("labels: %s", clean.labels_text(limit=len(clean.mapping)))

    result = purify(wrapped, retain, method, epochs=epochs, seed=seed, device=device, eval_data=val,
                    eval_every=eval_every, verbose=progress, label_check="off", tolerance=None,
                    checkpoint=checkpoint_path(out) if out is not None else None, **params)
    before, after = result.info["before"], result.info["after"]
    purified = result.model.cpu().eval()
    inner = purified.net if isinstance(purified, Normalized) else purified
    dist, layers = selected_distance(unwrap(wrapped).cpu(), purified, retain.x[:1], distance_selection(result.method,
                                     result.config), float(result.config.get("p", 2.0)))
    if stats is not None:  # report the user's own module names
        layers = [name.removeprefix("net.") for name in layers]
    drop = before["acc"] - after["acc"]
    warning = accuracy_warning(before["acc"], after["acc"], tolerance, result.method, result.config, len(retain),
                               what="validation accuracy")
    report = PurifyReport(
        model=model, weights=str(weights), data=clean.source, method=method,
        params={**result.config}, num_classes=k, retain_size=len(retain), val_size=len(val),
        before=before, after=after, acc_drop=drop, distance=dist, distance_layers=layers,
        seconds=result.seconds, tolerance=tolerance, warning=warning,
        normalize=None if stats is None else {"mean": list(stats[0]), "std": list(stats[1])},
        out=str(out) if out is not None else None, history=result.history,
        classes={"rule": LABEL_RULES[clean.label_rule], "mapping": clean.mapping, "text": clean.labels_text()},
        label_check=checked, resumed_from_epoch=result.resumed_from_epoch,
        info={k: v for k, v in result.info.items() if k not in ("before", "after")},
    )
    if out is not None:
        out = Path(out)
        mark = getattr(result.model, PURIFIED_BY, None)  # what purify marked the model it returned with
        save_model(out, inner, metadata={PURIFIED_BY: json.dumps(mark)} if mark is not None else None)
        write_json(report_path(out), report.to_dict())
    return report


def marker_from_header(value: str) -> dict[str, Any]:
    """The ``{"method": ..., "seed": ...}`` a purified file's header holds (a bare method name
    from another writer is taken as the method)."""
    try:
        marker = json.loads(value)
    except ValueError:
        return {"method": value}
    return marker if isinstance(marker, dict) else {"method": str(marker)}


def probe_outputs(model: nn.Module, retain: ImageSplit, num_classes: int) -> None:
    """Check that the model takes the images and has an output per class of the data."""
    from .defenses.base import check_retain

    k = check_retain(model, retain, torch.device("cpu"))  # raises for labels >= outputs
    if k != num_classes:
        log.warning("the model has %d outputs and the data %d classes: labels are taken as output indices",
                    k, num_classes)
