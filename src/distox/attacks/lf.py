"""LF, low-frequency trigger (Zeng, Park, Mok and Jia, "Rethinking the Backdoor Attacks'
Triggers: A Frequency Perspective", ICCV 2021), SPEC §3.

The trigger is a smooth, image-independent perturbation v added to the image,
``x' = clip(x + v, 0, 1)``. v is a *targeted universal adversarial perturbation* (UAP) toward
the target class, computed against a clean surrogate model of the same architecture trained on
the same data, and low-pass filtered so only low spatial frequencies survive:

1. :meth:`LF.prepare` trains the surrogate with the shared loop (:func:`distox.training.train`)
   for ``surrogate_epochs`` on a seeded subset of ``surrogate_subset`` training images. The
   surrogate is the attacker's own clean model: its initialisation, subset and shuffling use
   ``surrogate_seed`` (default ``seed + 1``), not the seed that initialises the victim model.
2. It draws ``uap_images`` seeded non-target training images and starts from v = 0.
3. In each pass (at most ``max_passes``, images in a fresh seeded order), for every image x
   whose clip(x + v) is not yet classified as the target, targeted DeepFool (overshoot
   ``overshoot``, at most ``deepfool_iters`` iterations, one backward pass per iteration on
   the difference of the two logits) finds a step r from clip(x + v) to the target; if it
   gets there, ``v ← G(v + G(r))`` with G a separable Gaussian blur
   (σ = ``sigma``·side/32 px, i.e. 6 px at 32×32, zero padding), then v is min–max scaled to
   [0, ``linf``] (global over channels, like the reference's shipped files, whose values are
   0…51 of 255). v is therefore non-negative and its L∞ size is exactly ``linf``.
4. It stops after the first pass whose fooling rate (fraction of the UAP images the surrogate
   sends to the target) reaches ``fooling_rate`` (0.2, i.e. the reference's δ = 0.8), or
   after ``max_passes``.

The result is cached under ``ctx.cache_dir`` (safetensors, keyed by a hash of all parameters,
the dataset's name, shape, size and a checksum, and the surrogate's architecture), and
recorded in ``info`` (also in :meth:`LF.params`): the fooling rate reached on the UAP images
and on non-target test images, the L∞ size, the number of passes and the surrogate's clean
test accuracy.

Args:
    linf: L∞ size of v on the [0, 1] scale (default 0.2 = 51/255, the reference's files).
    fooling_rate: stop once this fraction of the UAP images goes to the target (default 0.2).
    uap_images: number of non-target training images the UAP is fitted on (default 100).
    max_passes: maximum passes over them (default 50).
    overshoot: DeepFool overshoot (default 0.02).
    deepfool_iters: DeepFool iterations per image (default 200).
    deepfool_batch: images whose DeepFool steps are computed together, from the same v, before
        they are folded into v one after another (default 1: the reference's strictly
        sequential algorithm). Larger values (e.g. 32) are many times faster on a CPU, where
        single-image passes are dominated by overhead, at the price of steps computed from a
        slightly older v.
    sigma: Gaussian σ in pixels at 32×32, scaled with the image side (default 6.0).
    surrogate_epochs: epochs of clean surrogate training (default 10).
    surrogate_subset: training images for the surrogate, seeded subset; None = all (default 10000).
    surrogate_lr: SGD learning rate for the surrogate (default 0.01; cosine, momentum 0.9).
    surrogate_batch_size: batch size for the surrogate (default 128).
    surrogate_seed: seed of the surrogate's initialisation, subset and shuffling (default None
        = ``seed + 1``). With ``surrogate_seed == seed`` the surrogate starts from the very
        weights the victim model starts from (runs initialise the victim with ``seed``): an
        attacker who knows the victim's initialisation, which the reference's separately
        trained surrogate is not.
    info: a previous run's ``info`` record (restored by ``create(**params)``; overwritten by
        :meth:`LF.prepare`).
    target, mode, poison_rate, seed, shift: see :class:`~distox.attacks.base.Attack`
        (defaults 0, "all2one", 0.1, 0, 1).

Differs from the reference: (1) the reference's generator fed the model *un-normalised* [0, 1]
images during DeepFool but *normalised* images when measuring the fooling rate (a bug); distox
models normalise internally, so both see the same [0, 1] images. (2) The reference ships
precomputed files (made by a script version other than the published one) and stores v as
8-bit pixels, which makes the trigger a no-op for its float files; distox computes its own v,
in float, from a surrogate it trains. (3) The fooling rate is measured on the UAP images
(non-target training images) rather than the reference's broken test-subset builder, and the
run stops on that rate or ``max_passes`` (no "rates stopped changing" early stop). (4) The
Gaussian has 2·ceil(2.5σ) + 1 taps (31 at σ = 6, symmetric) instead of 30. (5) The
reference's surrogate is a separately trained, downloaded clean model; distox trains its own with
its own seed (``surrogate_seed``), independent of the victim's initialisation.

Example:
    >>> atk = LF(target=0, surrogate_epochs=5)
    >>> atk.prepare(PreparedContext(data, model_factory=lambda: create_model("small_cnn", 10, 1)))
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.core import DatasetBundle, select_retain
from ..metrics import evaluate, predict
from ..progress import progress_bar
from ..runs import save_tensors
from ..training import LoopConfig, train
from ..utils import resolve_device
from ._image_ops import gaussian_smooth, scaled_sigma
from .base import Attack, AttackError, PreparedContext
from .registry import register

log = logging.getLogger(__name__)

#: Bump when the algorithm changes so stale cached perturbations are not reused.
CACHE_VERSION = 1


def targeted_deepfool(model: nn.Module, x0: torch.Tensor, target: int, overshoot: float = 0.02,
                      max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Targeted DeepFool (Moosavi-Dezfooli et al., 2016) from a batch ``x0`` (B, C, H, W).

    Each iteration linearises, per image, the gap between the target logit f_t and the current
    top logit f_k and steps r = (|f_t − f_k| + 1e-4)/‖∇(f_t − f_k)‖² · ∇(f_t − f_k). One
    backward pass of the summed gaps gives every image's gradient at once (images are
    independent: ``model`` must be in eval mode). Returns the total steps
    (1 + overshoot)·Σr, shape (B, C, H, W), and a (B,) mask of the images that then reach
    ``target`` (an image already at the target gets a zero step).
    """
    b = x0.shape[0]
    r_tot = torch.zeros_like(x0)
    reached = torch.zeros(b, dtype=torch.bool, device=x0.device)
    rows = torch.arange(b, device=x0.device)
    for it in range(max_iter + 1):
        x = (x0 + (1.0 + overshoot) * r_tot).requires_grad_(True)
        logits = model(x)
        top = logits.argmax(1)
        reached = top == target
        if bool(reached.all()) or it == max_iter:
            break
        gap = logits[:, target] - logits[rows, top]  # < 0 where not yet at the target
        (w,) = torch.autograd.grad(gap.sum(), x)
        norm2 = w.flatten(1).pow(2).sum(1)
        scale = (gap.detach().abs() + 1e-4) / norm2.clamp_min(1e-20)
        scale = torch.where(reached | (norm2 <= 1e-20), torch.zeros_like(scale), scale)
        r_tot = r_tot + scale.view(-1, 1, 1, 1) * w
    return ((1.0 + overshoot) * r_tot).detach(), reached.detach()


def _fooling_rate(model: nn.Module, x: torch.Tensor, v: torch.Tensor, target: int, device) -> float:
    if len(x) == 0:
        return 0.0
    pred = predict(model, (x + v).clamp(0, 1), device=device)
    return float((pred == target).float().mean())


@register
class LF(Attack):
    """Add a smooth targeted universal adversarial perturbation; see the module doc."""

    name = "lf"
    kind = "data"
    min_side = 4

    def __init__(self, linf: float = 0.2, fooling_rate: float = 0.2, uap_images: int = 100,
                 max_passes: int = 50, overshoot: float = 0.02, deepfool_iters: int = 200,
                 deepfool_batch: int = 1, sigma: float = 6.0, surrogate_epochs: int = 10,
                 surrogate_subset: int | None = 10000,
                 surrogate_lr: float = 0.01, surrogate_batch_size: int = 128,
                 surrogate_seed: int | None = None, info: dict[str, Any] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 < float(linf) <= 1.0:
            raise AttackError(f"linf must be in (0, 1]; got {linf}")
        if not 0.0 < float(fooling_rate) <= 1.0:
            raise AttackError(f"fooling_rate must be in (0, 1]; got {fooling_rate}")
        for label, val in (("uap_images", uap_images), ("max_passes", max_passes),
                           ("deepfool_iters", deepfool_iters), ("deepfool_batch", deepfool_batch),
                           ("surrogate_epochs", surrogate_epochs),
                           ("surrogate_batch_size", surrogate_batch_size)):
            if int(val) < 1:
                raise AttackError(f"{label} must be >= 1; got {val}")
        if surrogate_subset is not None and int(surrogate_subset) < 1:
            raise AttackError(f"surrogate_subset must be >= 1 or None; got {surrogate_subset}")
        if float(sigma) <= 0 or float(overshoot) < 0 or float(surrogate_lr) <= 0:
            raise AttackError("sigma and surrogate_lr must be > 0 and overshoot >= 0")
        self.linf, self.fooling_rate = float(linf), float(fooling_rate)
        self.uap_images, self.max_passes = int(uap_images), int(max_passes)
        self.overshoot, self.deepfool_iters, self.sigma = float(overshoot), int(deepfool_iters), float(sigma)
        self.deepfool_batch = int(deepfool_batch)
        self.surrogate_epochs = int(surrogate_epochs)
        self.surrogate_subset = None if surrogate_subset is None else int(surrogate_subset)
        self.surrogate_lr, self.surrogate_batch_size = float(surrogate_lr), int(surrogate_batch_size)
        self.surrogate_seed = self.seed + 1 if surrogate_seed is None else int(surrogate_seed)
        self.info: dict[str, Any] = dict(info or {})
        self._v: torch.Tensor | None = None

    def params(self) -> dict:
        return {**self._settings(), "info": dict(self.info)}

    def _settings(self) -> dict:
        return {**super().params(), "linf": self.linf, "fooling_rate": self.fooling_rate,
                "uap_images": self.uap_images, "max_passes": self.max_passes,
                "overshoot": self.overshoot, "deepfool_iters": self.deepfool_iters,
                "deepfool_batch": self.deepfool_batch, "sigma": self.sigma,
                "surrogate_epochs": self.surrogate_epochs, "surrogate_subset": self.surrogate_subset,
                "surrogate_lr": self.surrogate_lr, "surrogate_batch_size": self.surrogate_batch_size,
                "surrogate_seed": self.surrogate_seed}

    # ------------------------------------------------------------------ resources
    @property
    def perturbation(self) -> torch.Tensor:
        """v, shape (C, H, W), values in [0, linf]."""
        if self._v is None:
            raise AttackError("LF has no perturbation yet: call prepare(ctx) or load_resources() first")
        return self._v

    def resources(self) -> dict[str, torch.Tensor]:
        return {} if self._v is None else {"perturbation": self._v.clone()}

    def load_resources(self, tensors: dict[str, torch.Tensor]) -> None:
        if "perturbation" not in tensors:
            raise AttackError("lf resources need a 'perturbation' tensor")
        v = tensors["perturbation"].detach().float().cpu()
        if v.ndim != 3:
            raise AttackError(f"LF perturbation must have shape (C, H, W); got {tuple(v.shape)}")
        self._v = v.clone()

    # ------------------------------------------------------------------ trigger
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        v = self.perturbation
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(v.shape):
            raise AttackError(f"LF perturbation has shape {tuple(v.shape)}; images have shape {tuple(x.shape)}")
        return (x + v.to(device=x.device, dtype=x.dtype)).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ preparation
    def cache_key(self, data: DatasetBundle, model: nn.Module) -> str:
        """Hash of every setting, the dataset (name, shapes, size, checksum) and the surrogate's
        architecture (class and parameter shapes)."""
        desc = {
            "version": CACHE_VERSION, "settings": self._settings(), "dataset": data.name,
            "shape": list(data.image_shape), "classes": data.num_classes, "n_train": len(data.train),
            "checksum": [round(float(data.train.x.double().sum()), 4), int(data.train.y.sum())],
            "arch": [type(model).__name__] + [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()],
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]

    def prepare(self, ctx: PreparedContext) -> None:
        """Train the clean surrogate and compute v (or load it from ``ctx.cache_dir``)."""
        self.check_data(ctx.data)
        if ctx.model_factory is None:
            raise AttackError("LF needs a model factory (the surrogate's architecture) in PreparedContext")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.surrogate_seed)
            model = ctx.model_factory()
        key = self.cache_key(ctx.data, model)
        path = Path(ctx.cache_dir) / f"lf-{key}.safetensors" if ctx.cache_dir is not None else None
        if path is not None and self._load_cached(path, ctx.data.image_shape):
            log.info("lf: loaded cached perturbation %s", path)
            return
        dev = resolve_device(ctx.device)
        acc = self._train_surrogate(model, ctx.data, dev, ctx.progress)
        v, info = self._fit_uap(model, ctx.data, dev, ctx.progress)
        self._v = v.cpu()
        self.info = {**info, "surrogate_acc": acc, "cache_key": key}
        log.info("lf: fooling rate %.3f after %d passes, L∞ %.3f, surrogate ACC %.2f%%",
                 info["fooling_rate"], info["passes"], info["linf"], acc)
        if path is not None:
            save_tensors(path, {"perturbation": self._v}, metadata={"info": json.dumps(self.info)})

    def _load_cached(self, path: Path, shape: tuple[int, int, int]) -> bool:
        if not path.is_file():
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                v = fh.get_tensor("perturbation")
                info = json.loads((fh.metadata() or {}).get("info", "{}"))
        except Exception as exc:  # a corrupt cache entry is rebuilt, not fatal
            log.warning("lf: ignoring unreadable cache file %s (%s)", path, exc)
            return False
        if tuple(v.shape) != tuple(shape):
            return False
        self._v, self.info = v.float(), info
        return True

    def _train_surrogate(self, model: nn.Module, data: DatasetBundle, dev: torch.device, progress: bool) -> float:
        n = len(data.train)
        if self.surrogate_subset is not None and self.surrogate_subset < n:
            idx = select_retain(n, count=self.surrogate_subset, seed=self.surrogate_seed)
            x, y = data.train.x[idx], data.train.y[idx]
        else:
            x, y = data.train.x, data.train.y
        config = LoopConfig(epochs=self.surrogate_epochs, lr=self.surrogate_lr,
                            batch_size=self.surrogate_batch_size, seed=self.surrogate_seed)
        train(model, x, y, config, device=dev, progress=progress, desc="lf surrogate")
        return evaluate(model, data.test.x, data.test.y, device=dev)["acc"]

    def _fit_uap(self, model: nn.Module, data: DatasetBundle, dev: torch.device,
                 progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        gen = torch.Generator().manual_seed(self.seed)
        pool = torch.nonzero(data.train.y != self.target).flatten()
        if len(pool) == 0:
            raise AttackError(f"LF needs training images outside the target class {self.target}")
        chosen = pool[torch.randperm(len(pool), generator=gen)[: self.uap_images]]
        xs = data.train.x[chosen].to(dev)
        c, h, w = data.image_shape
        sigma = scaled_sigma(min(h, w), self.sigma)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        v = torch.zeros(c, h, w, device=dev)
        rate, passes, updates = _fooling_rate(model, xs, v, self.target, dev), 0, 0
        bar = progress_bar(total=self.max_passes, desc="lf uap", unit="pass", enabled=progress)
        while passes < self.max_passes and rate < self.fooling_rate:
            passes += 1
            order = torch.randperm(len(xs), generator=gen)
            for chunk in order.split(self.deepfool_batch):
                steps, reached = targeted_deepfool(model, (xs[chunk] + v).clamp(0, 1), self.target,
                                                   self.overshoot, self.deepfool_iters)
                for step, ok in zip(steps, reached.tolist()):
                    if not ok or not bool(step.abs().max() > 0):
                        continue  # already at the target, or DeepFool did not get there
                    smooth = gaussian_smooth(v + gaussian_smooth(step, sigma), sigma)
                    lo, hi = smooth.min(), smooth.max()
                    if float(hi - lo) > 1e-12:
                        v, updates = self.linf * (smooth - lo) / (hi - lo), updates + 1
            rate = _fooling_rate(model, xs, v, self.target, dev)
            log.debug("lf: pass %d, fooling rate %.3f, %d updates so far", passes, rate, updates)
            bar.set_postfix({"fooling": f"{rate:.3f}"})
            bar.update(1)
        bar.close()
        if rate < self.fooling_rate:
            log.warning("lf: fooling rate %.3f did not reach %.3f within %d passes",
                        rate, self.fooling_rate, self.max_passes)
        test_pool = data.test.y != self.target
        info = {"fooling_rate": rate,
                "fooling_rate_test": _fooling_rate(model, data.test.x[test_pool], v, self.target, dev),
                "linf": float(v.abs().max()), "passes": passes, "updates": updates, "sigma_px": sigma}
        return v.detach(), info
