"""The one training loop every attack and defense in distox shares.

Data stay on the device as tensors and are batched there (no DataLoader workers); the loop
handles seeding, shuffling, augmentation (random crop with zero padding + horizontal flip,
SPEC §3; optionally an overlay of another image of the batch, ``blend``), SGD/Adam with cosine
annealing stepped once per epoch, optional (adaptive) SAM, mixed precision (bf16 autocast on
CUDA by default; ``precision``, ``channels_last`` and ``compile``: :mod:`distox.acceleration`),
per-epoch callbacks, a NaN/inf guard, a progress
bar, and per-epoch checkpoints so an interrupted run resumes where it stopped.

Checkpoints: after every epoch the model, optimiser, scheduler, both random generators, the
history and any ``extra_state`` (further modules, or any object with ``state_dict`` /
``load_state_dict``: a defense's epoch chooser, a λ controller) are saved atomically; a run
given the same checkpoint restarts after the last saved epoch and ends bit-identical to an
uninterrupted one. A :class:`Checkpoint` with an ``identity`` also refuses a file saved by a
different run (:class:`CheckpointMismatch`) instead of mixing the two.

What is minimised is an *objective*: ``objective(model, x, y) -> (loss, stats)``. Attacks
that control training (WaNet, Input-aware) pass a ``batch_transform``; D3 passes an
``after_step`` that projects weights back to their norm.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from .acceleration import PrecisionError, check_options, compile_model, resolve_precision, to_channels_last
from .errors import DistoxError, first_line
from .progress import progress_bar
from .runs import _atomic
from .sam import ASAM_ETA, apply_perturbation, frozen_bn_stats, sam_perturbation
from .utils import batchnorm_modules, copy_state_into, resolve_device

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing half-done is returned."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(
            f"loss became {value} at epoch {epoch} (step {step}); training stopped. "
            "Lower the learning rate or check the input data for NaN/inf values."
        )
        self.epoch, self.step, self.value = epoch, step, value


class CheckpointMismatch(DistoxError):
    """A checkpoint file saved by a different run (other arguments, data or model)."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} was saved by an interrupted run with other arguments, data or model; rerun that "
            f"command unchanged to resume it, or delete {path} to start over"
        )
        self.path = path


@dataclass(frozen=True)
class Checkpoint:
    """Where :func:`train` saves its per-epoch state, and the identity of the run it belongs to
    (any string, e.g. a digest of the arguments and data; None: not checked)."""

    path: Path
    identity: str | None = None


def saved_identity(path: str | os.PathLike) -> str | None:
    """The identity a checkpoint file was saved with (None for a file saved without one)."""
    return torch.load(path, map_location="cpu", weights_only=True).get("identity")


class Stateful(Protocol):
    """Anything whose state a checkpoint can hold (``nn.Module``, optimisers, small helpers)."""

    def state_dict(self) -> dict[str, Any]:
        ...

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        ...


class Objective(Protocol):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        ...


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain mean cross-entropy, the default objective."""
    loss = F.cross_entropy(model(x), y)
    return loss, {"loss": float(loss.detach())}


def label_smoothed_objective(smoothing: float) -> Objective:
    """Mean cross-entropy against labels smoothed by ``smoothing`` (Szegedy et al., CVPR 2016, as
    PyTorch and most training recipes spell it: 1 − s + s/K on the true class, s/K on every
    other; FT-SAM's own loss follows its reference, s/(K − 1)): what ``LoopConfig.label_smoothing``
    trains with, a recipe that leaves a model less confident."""

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        return loss, {"loss": float(loss.detach())}

    return objective


@dataclass
class LoopConfig:
    """Hyper-parameters of one training run (defaults: BackdoorBench attack training)."""

    epochs: int = 100
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" | "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "cosine"  # "cosine" | "constant"
    cos_t_max: int | None = None  # None: anneal over the run (T_max = epochs)
    warmup_steps: int = 0  # the first optimiser steps' rate ramps linearly up to the schedule's (0: off)
    augment: bool = False
    crop_padding: int = 4
    flip: bool = True
    blend: float = 0.0  # overlay strength of blend_batch (0: off)
    label_smoothing: float = 0.0  # of the default cross-entropy objective (0: off)
    drop_last: bool = False
    sam_rho: float | None = None
    sam_adaptive: bool = False
    sam_eta: float = ASAM_ETA  # ASAM's η in T_w = |w| + η (FT-SAM reference: 0.0)
    amp: bool = True  # precision "auto": bf16 autocast on CUDA (False: fp32 there too)
    bn_eval: bool = False  # keep BatchNorm statistics frozen while training
    seed: int = 0
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16" (distox.acceleration)
    channels_last: bool = False  # conv weights and batches in NHWC memory order
    compile: bool = False  # train through torch.compile (eager fallback)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {self.optimizer!r}")
        if self.scheduler not in ("cosine", "constant"):
            raise ValueError(f"scheduler must be 'cosine' or 'constant'; got {self.scheduler!r}")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(f"warmup_steps must be an integer >= 0; got {self.warmup_steps!r}")
        if self.sam_rho is not None and self.sam_rho <= 0:
            raise ValueError(f"sam_rho must be > 0; got {self.sam_rho}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        check_blend(self.blend)
        check_options(self.precision, self.channels_last, self.compile)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Batches:
    """Shuffled mini-batches over tensors already on the device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = False, generator: torch.Generator | None = None) -> None:
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.y)
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        if n > self.batch_size and n % self.batch_size == 1:
            return n // self.batch_size  # a trailing batch of one breaks BatchNorm in train mode
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics frozen)."""
    for _, m in batchnorm_modules(model):
        m.eval()


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-sample random crop (zero padding ``padding``) and horizontal flip (p = 0.5).

    Random numbers come from ``generator`` (CPU) so the result is reproducible.
    """
    n, c, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device)[None, :])  # (n, h)
        cols = (ox[:, None] + torch.arange(w, device=x.device)[None, :])  # (n, w)
        x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                   torch.arange(c, device=x.device)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def check_blend(strength: float) -> float:
    """``strength`` of :func:`blend_batch` as a float, or :class:`ValueError` outside [0, 0.5)."""
    if not 0.0 <= float(strength) < 0.5:
        raise ValueError(f"blend must be in [0, 0.5) (the image's own label must stay the dominant one); got {strength}")
    return float(strength)


def blend_batch(x: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Overlay augmentation: x_i ← (1 − a_i)·x_i + a_i·x_π(i), with a_i ~ U(0, ``strength``) per
    image and π a random permutation of the batch; labels unchanged (``strength`` < 0.5, so the
    image's own content stays the dominant one).

    Teaches that a faint overlay does not change an image's class: mixup (Zhang et al., ICLR
    2018) without mixing the labels, as Borgnia et al. ("Strong data augmentation sanitizes
    poisoning and backdoor attacks", ICASSP 2021) use mixing against poisoned training sets. It
    needs nothing from the attack: the overlays are the retain set's own clean images. Random
    numbers come from ``generator`` (CPU), so the result is reproducible.
    """
    n = len(x)
    weight = (torch.rand(n, generator=generator) * strength).to(device=x.device, dtype=x.dtype)[:, None, None, None]
    other = x[torch.randperm(n, generator=generator).to(x.device)]
    return (1 - weight) * x + weight * other


def make_optimizer(params, config: LoopConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: LoopConfig):
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.cos_t_max or config.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


@dataclass
class TrainState:
    """What :func:`train` returns: the per-epoch history and wall time."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    precision: str = "fp32"  # as resolved for the device: fp32, bf16 or fp16
    compiled: bool = False  # trained through torch.compile (False after a fallback to eager)
    info: dict[str, Any] = field(default_factory=dict)  # what a defense found, for Result.info (JSON-ready)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: LoopConfig,
    *,
    objective: Objective = cross_entropy,
    params: list[nn.Parameter] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    batch_transform: Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    on_epoch_start: Callable[[int, nn.Module], None] | None = None,
    on_epoch_end: Callable[[int, nn.Module], dict[str, float]] | None = None,
    perturb_objective: Objective | None = None,
    checkpoint: str | os.PathLike | Checkpoint | None = None,
    extra_state: dict[str, Stateful] | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    desc: str = "train",
) -> TrainState:
    """Train ``model`` in place on ``(x, y)`` (images in [0, 1]) and return its history.

    ``params`` defaults to all of the model's parameters; pass ``optimizer`` to use one
    built elsewhere (its state is checkpointed too). ``extra_state`` names further state
    (an attack's generator, a defense's epoch chooser) saved in and restored from the
    ``checkpoint`` (a path, or a :class:`Checkpoint` whose identity must match the file's).

    ``config.precision``, ``config.channels_last`` and ``config.compile`` choose how the steps
    run (:mod:`distox.acceleration`); the objective receives the compiled model when compiling,
    while ``after_step`` and ``on_epoch_end`` always get ``model`` itself (callbacks evaluate
    eagerly). A precision the device cannot run raises :class:`~distox.acceleration.PrecisionError`.

    ``on_epoch_start(epoch, model)`` (1-based ``epoch``) runs before each epoch's first batch,
    after a resume too (e.g. i-BAU crafts the round's perturbation there); it must draw its
    random numbers from its own seeded generator for a resumed run to stay bit-identical.

    ``perturb_objective`` (with ``config.sam_rho``): the objective of SAM's first pass, whose
    gradient sets the ascent direction and whose stats the history records; ``objective`` (the
    default) gives the gradient the optimiser applies, at the perturbed weights. D3 uses it to
    take the ascent on its clean loss alone, not on its distance term.
    """
    if config.label_smoothing:
        if objective is not cross_entropy:
            raise ValueError("label_smoothing applies to the default cross-entropy objective; this training "
                             "minimises its own")
        objective = label_smoothed_objective(config.label_smoothing)
    dev = resolve_device(device)
    plan = resolve_precision(config.precision, dev, config.amp)
    model.to(dev)
    x, y = x.to(dev), y.to(dev)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = optimizer or make_optimizer(params, config)
    scaler = plan.grad_scaler()
    if scaler is not None:
        grouped = {id(p) for g in opt.param_groups for p in g["params"]}
        if any(id(p) not in grouped for p in params):
            raise PrecisionError("precision 'fp16' scales gradients per optimiser parameter group, and this "
                                 "optimiser's groups do not hold every trained parameter; use 'bf16' or 'fp32'")
    sched = make_scheduler(opt, config)
    batches = Batches(x, y, config.batch_size, shuffle=True, drop_last=config.drop_last, generator=gen)
    state = TrainState(precision=plan.name)
    start_epoch = 0

    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint(Path(checkpoint)) if checkpoint else None
    ckpt_path = checkpoint.path if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if checkpoint.identity is not None and saved.get("identity") != checkpoint.identity:
            raise CheckpointMismatch(ckpt_path)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        for name, module in (extra_state or {}).items():
            module.load_state_dict(saved["extra"][name])
        if scaler is not None and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        state.history = list(saved["history"])
        start_epoch = state.resumed_from_epoch = int(saved["epoch"])
        log.info("%s: resumed from %s at epoch %d", desc, ckpt_path, start_epoch)

    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = compile_model(model) if config.compile else model
    state.compiled = net is not model

    def gradients(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, epoch: int, step: int
                  ) -> tuple[dict[str, float], bool]:
        """Forward and backward passes of one step (both SAM passes); returns the objective's
        stats and whether the optimiser may step (False: fp16 gradients overflowed)."""
        first = objective if config.sam_rho is None or perturb_objective is None else perturb_objective
        with plan.autocast():
            loss, stats = first(net, xb, yb)
        if not torch.isfinite(loss):
            raise TrainingDiverged(epoch + 1, step, float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if config.sam_rho is not None:
            if scaler is not None and not _finite_grads(params):
                return stats, False  # scaler.step skips the update and lowers the scale
            eps = sam_perturbation(params, config.sam_rho, config.sam_adaptive, config.sam_eta)
            apply_perturbation(params, eps, +1.0)
            with frozen_bn_stats(model), plan.autocast():
                loss2, _ = objective(net, xb, yb)
            opt.zero_grad(set_to_none=True)
            (loss2 if scaler is None else scaler.scale(loss2)).backward()
            apply_perturbation(params, eps, -1.0)
        return stats, True

    t0 = time.perf_counter()
    bar = progress_bar(range(start_epoch, config.epochs), desc=desc, unit="epoch", enabled=progress,
                       initial=start_epoch, total=config.epochs)
    try:
        for epoch in bar:
            if on_epoch_start is not None:
                on_epoch_start(epoch + 1, model)
            model.train()
            if config.bn_eval:
                set_batchnorm_eval(model)
            sums: dict[str, float] = {}
            n_seen = 0
            lr = opt.param_groups[0]["lr"]
            for step, (xb, yb) in enumerate(batches):
                if batch_transform is not None:
                    xb, yb = batch_transform(xb, yb, gen)
                if config.augment:
                    xb = augment_batch(xb, gen, config.crop_padding, config.flip)
                if config.blend:
                    xb = blend_batch(xb, gen, config.blend)
                if config.channels_last:
                    xb = to_channels_last(xb)
                if net is not model and epoch == start_epoch and step == 0:
                    stats, ok, net = _first_compiled_step(gradients, net, model, opt, extra_state or {},
                                                          (xb, yb, epoch, step), desc)
                    state.compiled = net is not model
                else:
                    stats, ok = gradients(net, xb, yb, epoch, step)
                scheduled = warm_up(opt, epoch * len(batches) + step, config.warmup_steps)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                elif ok:
                    opt.step()
                for group, rate in zip(opt.param_groups, scheduled):
                    group["lr"] = rate
                if after_step is not None:
                    after_step(model)
                k = len(yb)
                n_seen += k
                for key, val in stats.items():
                    sums[key] = sums.get(key, 0.0) + val * k
            sched.step()
            row: dict[str, float] = {"epoch": epoch + 1, "lr": lr}
            row.update({k: v / max(n_seen, 1) for k, v in sums.items()})
            if on_epoch_end is not None:
                row.update(on_epoch_end(epoch + 1, model))
            state.history.append(row)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k not in ("epoch",)})
            if ckpt_path is not None:
                saved_state = {
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "history": state.history, "epoch": epoch + 1,
                    "extra": {n: m.state_dict() for n, m in (extra_state or {}).items()},
                    "identity": checkpoint.identity,
                }
                if scaler is not None:
                    saved_state["scaler"] = scaler.state_dict()
                _atomic_torch_save(saved_state, ckpt_path)
    finally:
        if config.channels_last:
            model.to(memory_format=torch.contiguous_format)
    bar.close()
    for p in params:  # the last step's gradients: the returned model does not carry them
        p.grad = None
    state.seconds = time.perf_counter() - t0
    return state


def warm_up(optimizer: torch.optim.Optimizer, global_step: int, warmup_steps: int) -> list[float]:
    """Scale each parameter group's rate for optimiser step ``global_step`` (0-based) by
    ``(global_step + 1) / warmup_steps`` while it is below ``warmup_steps`` (a linear warm-up, Goyal
    et al. 2017, "Accurate, large minibatch SGD"); returns the rates the schedule had set, which
    the caller puts back after the step (the schedule itself, and so a resumed run, never sees the
    scaling)."""
    scheduled = [group["lr"] for group in optimizer.param_groups]
    if global_step < warmup_steps:
        factor = (global_step + 1) / warmup_steps
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
    return scheduled


def _finite_grads(params: list[nn.Parameter]) -> bool:
    """Whether every gradient is finite (an fp16 loss-scaled backward pass may overflow)."""
    return all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)


def _first_compiled_step(gradients: Callable[..., tuple[dict[str, float], bool]], net: nn.Module,
                         model: nn.Module, opt: torch.optim.Optimizer, extra_state: dict[str, Stateful],
                         args: tuple[Any, ...], desc: str) -> tuple[dict[str, float], bool, nn.Module]:
    """The first step through the compiled ``net``, where torch.compile really compiles: on a
    compiler failure (no C++ compiler, an operation it cannot trace) the model's weights and
    buffers, the ``extra_state`` and the random state are restored and the step is redone
    eagerly; returns the step's result and the module to train with from now on."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    extra = {n: copy.deepcopy(m.state_dict()) for n, m in extra_state.items()}
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        stats, ok = gradients(net, *args)
        return stats, ok, net
    except TrainingDiverged:
        raise
    except Exception as exc:  # the compiler's failure; a genuine model error recurs eagerly below
        log.warning("%s: torch.compile failed (%s); training without compilation", desc, first_line(exc))
    copy_state_into(model, saved)
    for n, m in extra_state.items():
        m.load_state_dict(extra[n])
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    opt.zero_grad(set_to_none=True)
    stats, ok = gradients(model, *args)
    return stats, ok, model
