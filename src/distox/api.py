"""``distox.purify``: one call from a suspect model and clean data to a purified model."""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data.core import DataError, ImageSplit
from .defenses import registry as defense_registry
from .defenses.base import DefenseError, Result, check_model, check_retain, ready_on
from .guidance import (DEFAULT_ASR_TOLERANCE, DEFAULT_TOLERANCE, AccuracyWarning, BackdoorWarning, accuracy_warning,
                       backdoor_warning)
from .label_check import check_labels, check_mode
from .metrics import BackdoorTestSet, Evaluator, evaluate
from .models.outputs import logits_view, unwrap
from .utils import resolve_device

log = logging.getLogger(__name__)


class LabelWarning(UserWarning):
    """The clean labels do not look like the model's, or its BatchNorm statistics look stale
    (:mod:`distox.label_check`)."""


class RepurifyWarning(UserWarning):
    """D3 asked to purify a model that D3 already purified. D3 pushes the weights as far from
    where they *start* as the clean loss allows (Eq. 1); a second run starts from the purified
    weights, so it pushes them away from those — which can be back toward the suspect's. Measured
    (BENCHMARKS.md "Twentieth round"): on PyTorch's tutorial LeNet the default left 0.47 % ASR once
    and 61.49 % twice; on fifteen other models a second run moved ASR by at most 2.13 points."""


#: The attribute :func:`purify` sets on the model it returns (``{"method": ..., "seed": ...}``),
#: and the header key ``distox purify`` writes into the purified ``.safetensors`` file: what
#: purified it, so that purifying it again with D3 warns (:class:`RepurifyWarning`).
PURIFIED_BY = "distox_purified"


#: what :func:`purify` logs (verbose) when it was given no ``eval_data``: it measured no accuracy, so it cannot
#: say what the purification cost (on the study's models the default D3 cost from nothing to 7.8 points: BENCHMARKS.md)
NOT_MEASURED = ("no eval_data: the accuracy the purification cost was not measured; pass eval_data=(X, y) with "
                "clean images that are not in the retain data to see it (and an AccuracyWarning if it is large)")


def repurify_warning(earlier: Any, method: str) -> str | None:
    """The warning for running ``method`` on a model marked ``earlier`` (:data:`PURIFIED_BY`), or
    None: D3 after D3 only (fine-tuning a purified model, or D3 after another defense, starts
    nowhere near the suspect's antipode)."""
    if not isinstance(earlier, Mapping) or method != "d3" or str(earlier.get("method", "")) != "d3":
        return None
    return ("this model was already purified by D3 (distox.purify returned it); D3 pushes the weights away from "
            "where they start, so a second run can push them back toward the suspect's and bring its backdoor "
            "back: purify the original suspect model instead")


def as_split(data: Any, name: str = "clean data") -> ImageSplit:
    """Turn an ``(X, y)`` pair (torch tensors or NumPy arrays, or lists of them), an
    :class:`ImageSplit`, a torch ``Dataset`` of (image, label) or a ``DataLoader`` into an
    :class:`ImageSplit` (images as float tensors (N, C, H, W), labels as int64). Dataset items
    and DataLoader batches may also be dicts, as Hugging Face datasets give them
    (:func:`image_label`: ``{"pixel_values": ..., "labels": ...}``, ``{"image": ..., "label": ...}``).

    One-channel images without their channel axis (N, H, W), labels as a column (N, 1) and one-hot
    labels are brought to that form (:func:`standard_layout`). Images are brought to [0, 1]
    (:func:`to_unit_range`), with a logged warning whenever they are rescaled; an
    :class:`ImageSplit` is taken exactly as it is.
    """
    if isinstance(data, ImageSplit):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, (*_ARRAYS, list)) for t in data):
        x, y = (as_tensor(t) for t in data)
    elif isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            bx, by = image_label(batch, name)
            xs.append(torch.as_tensor(bx))
            ys.append(torch.as_tensor(by))
        if not xs:
            raise DataError(f"{name}: the DataLoader yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
    elif isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise DataError(f"{name}: the dataset is empty")
        items = [image_label(data[i], name) for i in range(n)]
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items])  # class indices, or one-hot rows
    else:
        raise DataError(
            f"{name} must be an (X, y) pair of tensors or NumPy arrays (or lists of them), a torch Dataset of "
            f"(image, label) or a DataLoader; got {type(data).__name__}"
            + (f" of {', '.join(type(t).__name__ for t in data)}" if isinstance(data, (tuple, list)) else "")
        )
    x, y = standard_layout(x, y, name)
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise DataError(f"{name}: labels must be whole numbers (class indices); got {y.dtype} values like "
                        f"{y[y != y.round()][0].item():g}")
    return ImageSplit(to_unit_range(x, name), y.long())


_ARRAYS = (torch.Tensor, np.ndarray)

#: Keys of a dict item or batch that hold the images, and the labels, tried in this order.
IMAGE_KEYS = ("pixel_values", "image", "images", "img", "x", "input", "inputs")
LABEL_KEYS = ("labels", "label", "y", "target", "targets")


def image_label(item: Any, name: str = "clean data") -> tuple[Any, Any]:
    """(image(s), label(s)) of one Dataset item or DataLoader batch: its first two entries, or, for a
    dict (a Hugging Face dataset's rows), the first of :data:`IMAGE_KEYS` and of :data:`LABEL_KEYS`
    it holds. Raises :class:`DataError` naming what it got otherwise."""
    if isinstance(item, Mapping):
        found = [next((item[k] for k in keys if k in item), None) for keys in (IMAGE_KEYS, LABEL_KEYS)]
        if any(v is None for v in found):
            raise DataError(f"{name}: a dict item needs an image key ({', '.join(IMAGE_KEYS)}) and a label key "
                            f"({', '.join(LABEL_KEYS)}); got keys {', '.join(map(str, item)) or '(none)'}")
        return found[0], found[1]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(f"{name}: each item or batch must be (image, label) or a dict of them; got "
                    f"{type(item).__name__}" + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))


def as_tensor(data: torch.Tensor | np.ndarray | list) -> torch.Tensor:
    """A tensor from a tensor, a NumPy array, or a list of either (or of numbers), stacked."""
    if isinstance(data, list):
        if data and all(isinstance(t, torch.Tensor) for t in data):
            return torch.stack(data)
        data = np.asarray([t.numpy() if isinstance(t, torch.Tensor) else t for t in data])
    return torch.as_tensor(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data)


def standard_layout(x: torch.Tensor, y: torch.Tensor, name: str = "clean data") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, H, W) get their one channel, (N, 1, H, W), and one-hot labels (N, classes) become
    class indices, each with a logged warning saying so; labels as a column (N, 1) become (N,).
    Anything else is left for :class:`ImageSplit` to accept or refuse."""
    if x.ndim == 3:
        log.warning("%s: images of shape %s taken as one-channel (N, 1, H, W)", name, tuple(x.shape))
        x = x.unsqueeze(1)
    if x.ndim == 2:  # flattened images: say which shape they came from, rather than guess it
        raise DataError(f"{name}: images must be (N, C, H, W) (or (N, H, W)); got flat vectors {tuple(x.shape)}"
                        + flat_hint(int(x.shape[1])))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] > 1 and len(y) and bool(((y == 0) | (y == 1)).all()) and bool((y.sum(1) == 1).all()):
        log.warning("%s: one-hot labels %s taken as class indices (their argmax)", name, tuple(y.shape))
        y = y.argmax(1)
    return x, y


def flat_hint(size: int) -> str:
    """How to bring flat vectors of ``size`` values back to images, when the size says how."""
    for channels in (1, 3):
        side = round((size / channels) ** 0.5)
        if channels * side * side == size:
            return (f": {size} = {channels}×{side}×{side}, so pass X.reshape(-1, {channels}, {side}, {side}) (a model "
                    "whose first layer is an nn.Linear needs an nn.Flatten() in front of it)")
    return ""


#: Above this maximum, non-negative float images are taken to be 0–255 pixel values (a
#: resampled [0, 1] image may overshoot 1 a little; a 0–255 image under 2 would be all black).
_PIXEL_SCALE_MIN = 2.0


def to_unit_range(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Float images for a distox model, which takes images in [0, 1] (:mod:`distox.models`).

    * integer images (``uint8`` and other integer types): 0–255 pixel values, divided by 255
      (as ``torchvision.transforms.functional.convert_image_dtype``), with a logged warning;
    * float images with no negative value and a maximum above 2: 0–255 values, divided by 255,
      with a logged warning (a maximum above 255 is refused);
    * float images with no negative value and a maximum in (1, 2]: unchanged, with a logged
      warning (a resampled [0, 1] image may overshoot 1 a little);
    * other float images, e.g. standardised ones with negative values: unchanged.

    Raises :class:`DataError` for integer values outside 0–255, float values above 255 with no
    negative value, and NaN or infinite values.
    """
    if x.dtype == torch.bool or x.numel() == 0:
        return x.float()
    if not x.is_floating_point():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{name}: integer images must hold 0-255 pixel values; got {lo}..{hi}")
        log.warning("%s: %s images taken as 0-255 pixel values and divided by 255 (distox models take "
                    "images in [0, 1]; pass floats in [0, 1] to skip this)", name, str(x.dtype).removeprefix("torch."))
        return x.float() / 255.0
    x = x.float()
    if not torch.isfinite(x).all():
        raise DataError(f"{name}: the images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi > _PIXEL_SCALE_MIN:
        if hi > 255:
            raise DataError(f"{name}: float images with values up to {hi:g} are neither in [0, 1] nor 0-255 "
                            "pixel values; scale them to [0, 1]")
        log.warning("%s: float images in [0, %g] taken as 0-255 pixel values and divided by 255 (distox "
                    "models take images in [0, 1]; pass them in [0, 1] to skip this)", name, hi)
        return x / 255.0
    if lo >= 0 and hi > 1:
        log.warning("%s: float images reach %g, above the [0, 1] distox models take; passed unchanged", name, hi)
    return x


def purify(
    model: nn.Module,
    clean: Any,
    method: str = "d3",
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    eval_data: Any = None,
    eval_every: int | None = None,
    attack: Any = None,
    verbose: bool = True,
    label_check: str = "warn",
    checkpoint: str | os.PathLike | None = None,
    tolerance: float | None = DEFAULT_TOLERANCE,
    asr_tolerance: float | None = DEFAULT_ASR_TOLERANCE,
    **params: Any,
) -> Result:
    """Purify a suspect ``model`` with ``method`` (default D3 with its ``default`` preset).

    Args:
        model: the suspect classifier; it is never modified (a copy is trained).
        clean: the clean retain data, images (N, C, H, W) — or (N, H, W) for one channel — of at
            least 2 classes, labels as class indices or one-hot: ``(X, y)`` tensors or NumPy arrays
            (or lists of them), a ``Dataset`` or a ``DataLoader``. Images in [0, 1], or
            standardised as the model expects; ``uint8`` (0–255) images and non-negative float
            images above 2 are divided by 255 with a logged warning (:func:`to_unit_range`).
        method: a registered defense name (``distox.defenses.list()``).
        epochs: passes over ``clean`` (default: the method's; for D3's default preset 12, or more on a
            retain set too small for 600 optimiser steps in 12 epochs, ``min_steps``).
        seed: seed of every random choice.
        eval_data: optional held-out clean ``(X, y)``/Dataset: ACC before and after
            (``Result.info``), and per epoch with ``eval_every``.
        eval_every: also evaluate ``eval_data`` every this many epochs and after the last one,
            into ``Result.history`` (None: before and after only, the fast default).
        attack: optional :class:`distox.attacks.Attack` (prepared): ASR and RA as well.
        verbose: progress bar and log lines; ``False`` shows neither (a warning about the input,
            e.g. images rescaled from 0–255, is still logged).
        label_check: before training, check that ``model`` agrees with the labels of ``clean``
            (:mod:`distox.label_check`: accuracy near chance, or most classes mostly predicted as
            another label, means wrong labels or preprocessing): ``"warn"`` (a
            :class:`LabelWarning`), ``"error"`` (a :class:`~distox.data.DataError`, as ``distox
            purify`` does) or ``"off"``. The measurement is in ``Result.label_check``.
        checkpoint: a file to save every finished epoch in; called again with the same
            arguments after an interruption, ``purify`` resumes from it (bit-identical result)
            and deletes it when done. One saved by another purification is refused.
        tolerance: with ``eval_data``: when its accuracy falls by more than this many points,
            an :class:`~distox.guidance.AccuracyWarning` with the measured remedies for this
            method (:mod:`distox.guidance`) is issued and kept in ``Result.warning``; None: no check.
        asr_tolerance: with ``eval_data`` and ``attack``: when more than this share (%) of the
            triggered images still reach the target, a :class:`~distox.guidance.BackdoorWarning`
            with the measured remedies is issued and kept in ``Result.backdoor_warning``; None: no
            check (default 10: a model that never saw the trigger may send some there too).
        **params: the method's hyper-parameters (e.g. ``lmd=10, eps=0.1, layers="all-linear"``).

    Returns:
        :class:`Result` with ``model`` (purified copy), ``history`` (per epoch), ``config``,
        ``seconds`` and ``info`` (``before``/``after`` metrics when ``eval_data`` is given).
    """
    retain = as_split(clean, "clean data")
    check_mode(label_check)
    if eval_every is not None and (eval_data is None or int(eval_every) < 1):
        raise DataError(f"eval_every needs eval_data and a value >= 1; got {eval_every!r}"
                        + ("" if eval_data is not None else " without eval_data"))
    kwargs = dict(params, seed=seed)
    if epochs is not None:
        kwargs["epochs"] = epochs
    try:
        defense = defense_registry.create(method, **kwargs)
    except TypeError as exc:
        raise DefenseError(f"{method}: {exc}") from None
    check_model(model)
    again = repurify_warning(getattr(model, PURIFIED_BY, None), method)
    if again:
        warnings.warn(again, RepurifyWarning, stacklevel=2)
    model = ready_on(model, resolve_device(device))  # the caller's model stays where, and as, it is
    model = logits_view(model, retain.x[:2].to(resolve_device(device)))  # dict, tuple or softmax outputs
    checked = None
    if label_check != "off":
        dev = resolve_device(device)
        check_retain(model, retain, dev)  # shape and label-range errors first
        checked = check_labels(model, retain, device=dev)
        problem = checked.problem(hint="check the label order and the input range/normalisation, or pass "
                                       "label_check='off' to purify anyway")
        if problem and label_check == "error":
            raise DataError(problem)
        if problem:
            warnings.warn(problem, LabelWarning, stacklevel=2)
        elif checked.stale_batchnorm:
            warnings.warn(checked.stale_message(), LabelWarning, stacklevel=2)
    evaluator = None
    before = None
    if eval_data is not None:
        held = as_split(eval_data, "eval_data")
        backdoor: BackdoorTestSet | None = attack.backdoor_test_set(held) if attack is not None else None
        if eval_every is not None:
            evaluator = Evaluator(held.x, held.y, backdoor, device=device, every=int(eval_every), last=defense.epochs_for(retain, model))
        before = evaluate(model, held.x, held.y, backdoor, device=device)
    result = defense(model, retain, evaluator=evaluator, device=device, progress=verbose, checkpoint=checkpoint)
    trained, result.model = result.model, unwrap(result.model)  # the caller's module, returning what it returned
    try:  # a plain attribute: no state_dict entry
        setattr(result.model, PURIFIED_BY, {"method": method, "seed": seed})
    except (AttributeError, RuntimeError, TypeError):  # a module that takes no new attribute (TorchScript)
        log.debug("could not mark the purified %s as purified", type(result.model).__name__)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    if checked is not None:
        result.label_check = checked.to_dict()
    if eval_data is not None:
        result.info["before"] = before
        result.info["after"] = evaluate(trained, held.x, held.y, backdoor, device=device)
        result.warning = accuracy_warning(before["acc"], result.info["after"]["acc"], tolerance, defense.name,
                                          result.config, len(retain), what="eval_data accuracy")
        if result.warning:
            warnings.warn(result.warning, AccuracyWarning, stacklevel=2)
        if backdoor is not None:
            result.backdoor_warning = backdoor_warning(result.info["after"]["asr"], asr_tolerance, defense.name,
                                                       result.config, len(retain))
            if result.backdoor_warning:
                warnings.warn(result.backdoor_warning, BackdoorWarning, stacklevel=2)
    if verbose:
        log.info("%s finished in %.1fs", method, result.seconds)
        if eval_data is None:
            log.info(NOT_MEASURED)
    return result
