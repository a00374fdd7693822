"""The defense base class: ``Defense(**hyper_parameters)(model, retain) -> Result``.

scikit-learn style: all hyper-parameters go to ``__init__`` (validated there, no work done);
the call copies the suspect model (the input is never modified), checks the retain data
against it with clear errors, trains the copy through the shared loop
(:func:`distox.training.train`) and returns a :class:`Result`.

Given a ``checkpoint`` path, the call saves every finished epoch there and, called again
with the same arguments, model and data, resumes after the last saved epoch with a result
bit-identical to an uninterrupted run (the file records :meth:`Defense.identity`; one saved
by a different purification is refused). Deleting the file afterwards is the caller's job.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..acceleration import check_options, drop_defaults, resolve_precision
from ..data.augmentation import Augmentation, augmentation_for
from ..data.core import ImageSplit
from ..errors import DistoxError
from ..metrics import Evaluator
from ..models.outputs import are_probabilities
from ..training import Checkpoint, LoopConfig, TrainingDiverged, TrainState, check_blend
from ..utils import caller_rng_kept, eval_mode, resolve_device, tensor_digest

log = logging.getLogger(__name__)


class DefenseError(DistoxError):
    """Bad input to a defense or a run that could not finish, with a message meant for the user."""


@dataclass
class Result:
    """A purified model with its per-epoch history and the resolved configuration."""

    model: nn.Module
    method: str
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    resumed_from_epoch: int = 0
    label_check: dict[str, Any] | None = None  # distox.purify's check of the clean labels
    warning: str | None = None  # distox.purify with eval_data: the accuracy cost, with measured advice
    backdoor_warning: str | None = None  # distox.purify with eval_data and attack: the backdoor remains, with advice

    def summary(self) -> dict[str, Any]:
        """Last-epoch metrics plus method and time (JSON-serialisable)."""
        last = self.history[-1] if self.history else {}
        return {"method": self.method, "seconds": round(self.seconds, 3), **last, **self.info}


def check_classes(y: torch.Tensor, what: str = "the retain (clean) set") -> None:
    """Refuse labels of a single class: fine-tuning on them teaches the model to predict that
    class for every input. One message for every entry point (API, ``distox purify``)."""
    classes = torch.unique(y)
    if len(classes) == 1:
        raise DefenseError(f"{what} holds images of one class only (label {int(classes[0])}); purifying on it "
                           "would teach the model to predict that class for every input: give clean images "
                           "of at least 2 classes")


def check_model(model: nn.Module) -> None:
    """Refuse what a defense cannot train: anything but an ``nn.Module``, and TorchScript
    (its layers are no longer ``nn.Linear``/``nn.Conv2d``, so no weight could be selected)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise DefenseError(
            "the model is TorchScript (torch.jit.script/trace); distox trains the Python nn.Module: build the "
            "model's class and load its weights (e.g. from safetensors) instead")
    if not isinstance(model, nn.Module):
        raise DefenseError(f"the model must be a torch nn.Module; got {type(model).__name__}")


def as_float32(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with float32 parameters and buffers: a model saved in float16, bfloat16
    or float64 is trained, and returned, in float32 (with a logged warning). The images are
    float32, and the optimiser's small steps would be lost in a 16-bit weight; ``precision``
    chooses mixed precision for the arithmetic instead."""
    dtypes = {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}
    if dtypes - {torch.float32}:
        log.warning("the model's parameters are %s; distox trains and returns a float32 copy (cast the result "
                    "back with .to(dtype) if needed)", ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes)))
        model.float()
    return model


def ready_on(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself when its tensors are float32 and on ``device``, else a copy made so
    (:func:`as_float32`): what ``purify`` measures before a defense runs, leaving the caller's
    model where, and as, it was."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device == device and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return as_float32(copy.deepcopy(model).to(device))


def unfreeze(model: nn.Module) -> list[nn.Parameter]:
    """Let every parameter of ``model`` (the defense's copy) train, returning those that had
    ``requires_grad=False``. A frozen backbone is how a fine-tuned model often arrives — and a
    backdoored pretrained backbone under a fine-tuned head is a common way a backdoor does: the
    defenses (the paper's D3 and its baselines) train the whole model, so a flag left from
    training must not hide layers from them (logged). :meth:`Defense.__call__` sets the flags
    back on the purified model."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    if frozen:
        log.warning("%d of the model's %d parameter tensors had requires_grad=False (frozen layers); the defense "
                    "trains every parameter, and the purified model gets the flags back",
                    len(frozen), len(list(model.parameters())))
        for p in frozen:
            p.requires_grad_(True)
    return frozen


def channel_hint(model: nn.Module, probe: torch.Tensor) -> str:
    """When grey images fail where their three-channel copies pass (or the other way round),
    say how to convert them; empty otherwise."""
    c = probe.shape[1]
    other = {1: probe.repeat(1, 3, 1, 1), 3: probe.mean(1, keepdim=True)}.get(c)
    if other is None:
        return ""
    try:
        with eval_mode(model), torch.no_grad():
            model(other)
    except Exception:
        return ""
    if c == 1:
        return (" — the model takes 3 channels and the images have 1: pass X.repeat(1, 3, 1, 1), or wrap the "
                "model in distox.models.GrayToRGB")
    return " — the model takes 1 channel and the images have 3: pass X.mean(1, keepdim=True) (grey)"


def check_retain(model: nn.Module, retain: ImageSplit, device: torch.device) -> int:
    """Validate retain data against the model; returns the model's number of classes.

    Rejects: fewer than 2 images, a single class (:func:`check_classes`), non-finite pixels,
    an image shape the model cannot take, a model output that is not (N, K) logits (probabilities
    from a final softmax included), and labels outside 0..K-1.
    """
    n = len(retain)
    if n < 2:
        raise DefenseError(f"the retain (clean) set has {n} image(s); at least 2 are needed")
    check_classes(retain.y)
    if not torch.isfinite(retain.x).all():
        raise DefenseError("the retain images contain NaN or infinite values")
    probe = retain.x[:2].to(device)
    try:
        with eval_mode(model), torch.no_grad():
            out = model(probe)
    except Exception as exc:  # the model's own error, summarised for the user
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        c, last = retain.x.shape[1], retain.x.shape[-1]
        hint = (" — the images look channels-last (N, H, W, C): pass X.permute(0, 3, 1, 2) (NumPy: "
                "X.transpose(0, 3, 1, 2))" if last in (1, 3, 4) and c not in (1, 3, 4) else channel_hint(model, probe))
        raise DefenseError(
            f"the model rejects retain images of shape {tuple(retain.x.shape[1:])} (C, H, W): {msg}{hint}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DefenseError(
            f"the model must return (N, num_classes) logits; got {got}"
            + ("" if isinstance(out, torch.Tensor) else
               ": wrap it in a module whose forward returns only the logits tensor (e.g. model(x)[0] or "
               "model(x)['logits']; distox.purify and distox purify take the logits out of a dict, a tuple or an "
               "output with .logits themselves, distox.models.outputs.logits_view)"))
    k = int(out.shape[1])
    if are_probabilities(out):
        raise DefenseError(
            "the model returns probabilities (each row is non-negative and sums to 1: a final softmax); the "
            "training losses need logits or log-probabilities: drop the final softmax, or wrap the model in a "
            "module whose forward returns torch.log(model(x)) (distox.purify and distox purify do that themselves, "
            "distox.models.outputs.logits_view)")
    bad = retain.y[(retain.y < 0) | (retain.y >= k)]
    if len(bad):
        one_based = int(retain.y.min()) == 1 and int(retain.y.max()) == k
        raise DefenseError(
            f"retain labels must be in 0..{k - 1} (the model has {k} outputs); found {sorted(set(bad.tolist()))[:10]}"
            + (f" — the labels run 1..{k}: pass y - 1" if one_based else ""))
    return k


class Defense:
    """Base for all defenses. Common arguments (reference defaults, SPEC §4):

    Args:
        epochs: passes over the retain set (100).
        batch_size: 256.
        lr: learning rate (0.01).
        augment: random crop (+ flip) on the retain set, as the reference's train transform.
        flip: horizontal flip within the augmentation. None: as the reference for the retain
            set's dataset (``retain.dataset``; CIFAR-10 only, :mod:`distox.data.augmentation`),
            no flip for data of unknown origin. The crop padding follows the same table.
        blend: overlay augmentation: every retain image is overlaid with another image of its
            batch at a weight drawn from U(0, ``blend``), label unchanged
            (:func:`~distox.training.blend_batch`); 0 (off, the reference) up to < 0.5.
        seed: seed of shuffling, augmentation and random warm starts (0).
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"``
            (a GPU, or a CPU with native bf16) or ``"fp16"`` (CUDA, with loss scaling);
            :mod:`distox.acceleration`.
        channels_last: convolution weights and batches in NHWC memory order (False).
        compile: train through ``torch.compile``, eager where it fails (False).

    The last three change how fast a run goes, not what it computes (up to rounding); each
    is recorded in :meth:`get_params` and :meth:`identity` only when it is not at its default.
    """

    name: ClassVar[str] = "base"
    #: Code revision: bump it when a change to the defense alters the models it produces, so
    #: that ``distox bench`` recomputes its cached cells (1 keeps the keys they had before).
    revision: ClassVar[int] = 1
    #: The epochs a defense runs unless told otherwise.
    default_epochs: ClassVar[int] = 100

    def __init__(self, epochs: int = default_epochs, batch_size: int = 256, lr: float = 0.01,
                 augment: bool = True, flip: bool | None = None, seed: int = 0, precision: str = "auto",
                 channels_last: bool = False, compile: bool = False, blend: float = 0.0) -> None:
        if int(epochs) < 1:
            raise DefenseError(f"epochs must be >= 1; got {epochs}")
        if int(batch_size) < 1:
            raise DefenseError(f"batch_size must be >= 1; got {batch_size}")
        if not lr > 0:
            raise DefenseError(f"lr must be > 0; got {lr}")
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.augment, self.seed = bool(augment), int(seed)
        self.flip = None if flip is None else bool(flip)
        try:
            self.blend = check_blend(blend)
        except ValueError as exc:
            raise DefenseError(str(exc)) from None
        try:
            speed = check_options(precision, channels_last, compile)
        except DistoxError as exc:
            raise DefenseError(str(exc)) from None
        self.precision, self.channels_last, self.compile = (speed[k] for k in ("precision", "channels_last", "compile"))

    def get_params(self, retain: ImageSplit | None = None) -> dict[str, Any]:
        """The hyper-parameters (saved with every result; ``precision``, ``channels_last``,
        ``compile`` and ``blend`` only when not at their defaults, so runs without them keep the
        records and cell keys they had before); with ``retain``, ``flip`` as resolved for that data."""
        params = drop_defaults({k: v for k, v in vars(self).items() if not k.startswith("_")})
        if not self.blend:
            params.pop("blend", None)
        if retain is not None:
            params["flip"] = self.augmentation(retain).flip
        return params

    @property
    def alters_images(self) -> bool:
        """Whether the loop trains on changed retain images (random crop and flip, overlay)
        rather than on the images themselves."""
        return self.augment or bool(self.blend)

    def augmentation(self, retain: ImageSplit) -> Augmentation:
        """Crop padding and flip of ``retain`` when ``augment``: the reference's for its dataset,
        the flip overridden by an explicit ``flip``."""
        return augmentation_for(retain.dataset, retain.x.shape[-1], self.flip)

    def loop_config(self, retain: ImageSplit, **overrides: Any) -> LoopConfig:
        """The shared loop's configuration for this defense (override per defense)."""
        aug = self.augmentation(retain)
        base = dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, augment=self.augment,
                    flip=aug.flip, crop_padding=aug.crop_padding, seed=self.seed, precision=self.precision,
                    channels_last=self.channels_last, compile=self.compile, blend=self.blend)
        base.update(overrides)
        return LoopConfig(**base)

    def epochs_for(self, retain: ImageSplit, model: nn.Module | None = None) -> int:
        """How many epochs a run on ``retain`` (of ``model``, when given) makes (``epochs``; a defense
        whose rules read the retain set's size or the model overrides it): what an evaluator's final
        epoch is."""
        return self.epochs

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        """Purify ``model`` in place (it is already a copy), saving every epoch to ``checkpoint``
        (passed on to :func:`~distox.training.train` with whatever extra state a resume needs).
        Implemented by each defense."""
        raise NotImplementedError

    def identity(self, model: nn.Module, retain: ImageSplit, tracked: bool, eval_every: int = 1) -> str:
        """Fingerprint of one purification (what owns a checkpoint): method, revision,
        hyper-parameters, the retain images and labels, every weight and buffer of the suspect
        ``model``, and whether epochs are evaluated (``tracked``, every ``eval_every`` epochs:
        it changes the history; an every-epoch cadence keeps the fingerprint it had before
        cadences existed)."""
        params = {k: v for k, v in self.get_params(retain).items() if not k.endswith("_resolved")}
        state = model.state_dict()
        head_fields = {"method": self.name, "revision": self.revision, "params": params, "tracked": tracked,
                       "state": sorted(state)}
        if tracked and eval_every != 1:
            head_fields["eval_every"] = int(eval_every)
        head = json.dumps(head_fields, sort_keys=True, default=str)
        body = tensor_digest(retain.x, retain.y) + tensor_digest(*(state[k] for k in sorted(state)))
        return hashlib.sha256((head + body).encode()).hexdigest()

    def __call__(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None = None,
                 device: str | torch.device = "auto", progress: bool = True,
                 checkpoint: str | os.PathLike | None = None) -> Result:
        dev = resolve_device(device)
        resolve_precision(self.precision, dev)  # a precision this device cannot run: refused before any work
        check_model(model)
        work = as_float32(copy.deepcopy(model).to(dev))
        check_retain(work, retain, dev)
        frozen = unfreeze(work)
        ckpt = None if checkpoint is None else Checkpoint(Path(checkpoint), self.identity(
            work, retain, evaluator is not None, getattr(evaluator, "every", 1)))
        t0 = time.perf_counter()
        try:
            with caller_rng_kept(dev):
                state = self.fit(work, retain, evaluator=evaluator, device=dev, progress=progress, checkpoint=ckpt)
        except TrainingDiverged as exc:
            raise DefenseError(f"{self.name}: {exc}") from None
        work.eval()
        for p in frozen:  # the caller's flags, back on the purified model
            p.requires_grad_(False)
        return Result(model=work, method=self.name, config=self.get_params(retain), history=state.history,
                      seconds=time.perf_counter() - t0, resumed_from_epoch=state.resumed_from_epoch,
                      info=dict(state.info))
