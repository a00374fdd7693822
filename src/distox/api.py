"""``distox.purify``: one call from a suspect model and clean data to a purified model."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data.core import DataError, ImageSplit
from .defenses import registry as defense_registry
from .defenses.base import DefenseError, Result, check_retain
from .label_check import check_labels
from .metrics import BackdoorTestSet, Evaluator, evaluate
from .utils import resolve_device

log = logging.getLogger(__name__)


class LabelWarning(UserWarning):
    """The clean labels do not look like the model's (:mod:`distox.label_check`)."""


def as_split(data: Any, name: str = "clean data") -> ImageSplit:
    """Turn a ``(X, y)`` pair, a :class:`ImageSplit`, a torch ``Dataset`` of (image, label) or a
    ``DataLoader`` into an :class:`ImageSplit` (images as float tensors, labels as int64)."""
    if isinstance(data, ImageSplit):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        return ImageSplit(x.float(), y.long())
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise DataError(f"{name}: the DataLoader yielded no batches")
        return ImageSplit(torch.cat(xs).float(), torch.cat(ys).long())
    if isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise DataError(f"{name}: the dataset is empty")
        items = [data[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(it[0]) for it in items]).float()
        y = torch.tensor([int(it[1]) for it in items], dtype=torch.long)
        return ImageSplit(x, y)
    raise DataError(
        f"{name} must be an (X, y) tensor pair, a torch Dataset of (image, label) or a DataLoader; "
        f"got {type(data).__name__}"
    )


def purify(
    model: nn.Module,
    clean: Any,
    method: str = "d3",
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    eval_data: Any = None,
    attack: Any = None,
    verbose: bool = True,
    label_check: str = "warn",
    checkpoint: str | os.PathLike | None = None,
    **params: Any,
) -> Result:
    """Purify a suspect ``model`` with ``method`` (default D3 with its ``default`` preset).

    Args:
        model: the suspect classifier; it is never modified (a copy is trained).
        clean: the clean retain data: ``(X, y)`` tensors, a ``Dataset`` or a ``DataLoader``,
            images in the range the model expects.
        method: a registered defense name (``distox.defenses.list()``).
        epochs: passes over ``clean`` (default: the method's; 12 for D3's default preset).
        seed: seed of every random choice.
        eval_data: optional held-out clean ``(X, y)``/Dataset: ACC before, per epoch and after.
        attack: optional :class:`distox.attacks.Attack` (prepared): ASR and RA as well.
        verbose: progress bar and log lines; ``False`` is silent.
        label_check: before training, check that ``model`` agrees with the labels of ``clean``
            (:mod:`distox.label_check`: accuracy near chance, or most classes mostly predicted as
            another label, means wrong labels or preprocessing): ``"warn"`` (a
            :class:`LabelWarning`), ``"error"`` (a :class:`~distox.data.DataError`, as ``distox
            purify`` does) or ``"off"``. The measurement is in ``Result.label_check``.
        checkpoint: a file to save every finished epoch in; called again with the same
            arguments after an interruption, ``purify`` resumes from it (bit-identical result)
            and deletes it when done. One saved by another purification is refused.
        **params: the method's hyper-parameters (e.g. ``lmd=10, eps=0.1, layers="all-linear"``).

    Returns:
        :class:`Result` with ``model`` (purified copy), ``history`` (per epoch), ``config``,
        ``seconds`` and ``info`` (``before``/``after`` metrics when ``eval_data`` is given).
    """
    retain = as_split(clean, "clean data")
    if label_check not in ("warn", "error", "off"):
        raise DataError(f"label_check must be 'warn', 'error' or 'off'; got {label_check!r}")
    kwargs = dict(params, seed=seed)
    if epochs is not None:
        kwargs["epochs"] = epochs
    try:
        defense = defense_registry.create(method, **kwargs)
    except TypeError as exc:
        raise DefenseError(f"{method}: {exc}") from None
    checked = None
    if label_check != "off":
        dev = resolve_device(device)
        check_retain(model.to(dev), retain, dev)  # shape and label-range errors first
        checked = check_labels(model, retain, device=dev)
        problem = checked.problem(hint="check the label order and the input range/normalisation, or pass "
                                       "label_check='off' to purify anyway")
        if problem and label_check == "error":
            raise DataError(problem)
        if problem:
            warnings.warn(problem, LabelWarning, stacklevel=2)
    evaluator = None
    before = None
    if eval_data is not None:
        held = as_split(eval_data, "eval_data")
        backdoor: BackdoorTestSet | None = attack.backdoor_test_set(held) if attack is not None else None
        evaluator = Evaluator(held.x, held.y, backdoor, device=device)
        before = evaluate(model, held.x, held.y, backdoor, device=device)
    result = defense(model, retain, evaluator=evaluator, device=device, progress=verbose, checkpoint=checkpoint)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    if checked is not None:
        result.label_check = checked.to_dict()
    if evaluator is not None:
        result.info["before"] = before
        result.info["after"] = evaluator(defense.epochs, result.model)
    if verbose:
        log.info("%s finished in %.1fs", method, result.seconds)
    return result
