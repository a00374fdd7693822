"""Input-aware dynamic backdoor (Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack",
NeurIPS 2020), SPEC §3 and reference notes §1.7.

Two encoder–decoder networks of the same architecture make the trigger of each image: a
generator G gives a pattern G(x) and a mask network M a mask; both end in
``tanh(z)/(2+1e-7) + 0.5`` and the mask is sharpened by
``m(x) = tanh(20·M(x) − 10)/(2+1e-7) + 0.5``. The backdoor image is, in pixel space,

    x_bd = x + (G(x) − x)·m(x)

Training (``kind = "training"``, :meth:`InputAware.train_model`) has two stages, both run by
the shared loop :func:`distox.training.train`:

1. ``mask_epochs`` epochs, M alone (Adam lr ``lr_mask``, betas (0.5, 0.9), cosine schedule):
   ``λ_norm·mean(relu(m(x1) − mask_density)) + λ_div·mean(d(x1, x2)/(d(m1, m2) + 1e-7))``
   with d the per-sample RMS distance between *dataset-normalised* images (as in the
   reference, whose networks and losses see normalised tensors; the masks are not
   normalised, so this scale sets how dense the mask becomes); M is then frozen.
2. ``epochs`` epochs (the :class:`~distox.training.LoopConfig`), the classifier C (its SGD,
   schedule and augmentation) jointly with G (Adam lr ``lr_generator``, betas (0.5, 0.9)): per
   batch ~``poison_rate`` of the rows become backdoor images relabelled to t(y), ~``cross_rate``
   become *cross* images ``x1 + (G(x2) − x1)·m(x2)`` with the trigger of another image x2 and
   their true label; loss ``CE + λ_div·mean(d(x1, x2)/(d(G(x1), G(x2)) + 1e-7))``, images and
   patterns both normalised.

Architecture (reference ``InputAwareGenerator``): ``depth`` levels of
[conv3×3-BN-ReLU ×2, max-pool 2] starting at ``width`` channels and doubling, a middle block,
then ``depth`` levels of [bilinear upsample ×2, conv-BN-ReLU ×2] halving back, the last conv
without ReLU; BN momentum 0.05. Auto size: width 32 / depth 3 for ≥ 32-pixel multi-channel
images (the reference's CIFAR net), width 16 / depth 2 otherwise (its MNIST net). Sides not
divisible by 2^depth are padded (replicate) and the output cropped back.

Args:
    mask_epochs: stage-1 epochs (default 25, the reference's ``clean_train_epochs``).
    mask_density: target mask density (default 0.032).
    lambda_div: diversity weight (default 1.0).
    lambda_norm: mask norm weight (default 100.0).
    lr_generator: Adam lr of G (default 0.01).
    lr_mask: Adam lr of M (default 0.01).
    cross_rate: per-batch fraction of cross samples (default None = ``poison_rate``).
    width: base channels of G and M (default None = auto, see above).
    accumulate_generator_grads: reproduce the reference's quirk of never zeroing G's gradients,
        so every G step uses the sum of all gradients so far (default False: zeroed per step).
    anneal_generator: let the classifier's schedule (cosine) anneal G's Adam lr as well, so C
        and G come to rest together at the end of the run (default False: G keeps a constant
        lr, as in the reference, where no schedule ever decays either network).
    depth: pooling levels of G and M (default None = auto).
    target, mode, poison_rate, seed, shift: see :class:`~distox.attacks.base.Attack`
        (defaults 0, "all2one", 0.1, 0, 1); ``seed`` initialises G and M.

Differs from the reference:
    - G's gradients are zeroed every step (the reference only zeroes C's optimiser, so G's
      gradients accumulate over the whole run; ``accumulate_generator_grads=True`` restores that).
    - The classifier trains for the full ``epochs`` after the mask stage (the reference's
      epoch counter continues from the mask stage, so C and G get only ``epochs − 25``).
    - Backdoor/cross rows are chosen at random positions with ``stochastic_round(rate·bs)``
      rows (the reference takes the first ``int(rate·bs)`` rows: 9.375 % at batch 128).
    - The partner image x2 is the next image of the same shuffled batch (the reference draws
      it from a second, independently shuffled loader); the pairing is equally random.
    - C uses the LoopConfig's optimiser and cosine schedule (the reference's MultiStepLR
      milestones are never reached, i.e. a constant lr); G keeps a constant lr (unless
      ``anneal_generator``); M's MultiStepLR
      [10, 20] is replaced by cosine annealing over ``mask_epochs``.
    - G and M see ``2x − 1`` (un-normalised images centred to [-1, 1]) rather than
      dataset-normalised images; the pattern lives in pixel space as in the reference. The
      diversity distances, however, are taken in the dataset-normalised scale like the
      reference's (``set_normalization``; train_model/fit_mask take the bundle's std): on
      Fashion-MNIST (std 0.5) measuring them in [0, 1] units halved the mask stage's image
      distance and left the mask at density 0.013 (~10 pixels) instead of 0.021.

Example:
    >>> atk = InputAware(target=0, poison_rate=0.1, mask_epochs=25)
    >>> atk.train_model(model, data, LoopConfig(epochs=100)); x_bd = atk.apply(data.test.x)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .base import Attack, AttackError
from .perbatch import split_batch
from .registry import register

log = logging.getLogger(__name__)

_EPS = 1e-7


# ---------------------------------------------------------------------- networks
def _block(cin: int, cout: int, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=1e-5, momentum=0.05)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class TriggerNet(nn.Module):
    """Encoder–decoder used for both G (``out_channels`` = image channels) and M (1 channel).

    Output in (0, 1): ``tanh(z)/(2+1e-7) + 0.5``. Input: images in [0, 1], any side (padded
    to a multiple of 2^depth internally).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.width, self.depth = in_channels, out_channels, width, depth
        chans = [width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(nn.Sequential(_block(cin, c), _block(c, c)))
            cin = c
        self.middle = _block(cin, cin)
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            cout = chans[i - 1] if i > 0 else out_channels
            self.up.append(nn.Sequential(_block(chans[i], chans[i]), _block(chans[i], cout, relu=i > 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mult = 2 ** self.depth
        ph, pw = (-h) % mult, (-w) % mult
        z = 2 * x - 1
        if ph or pw:
            z = F.pad(z, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        for level in self.down:
            z = F.max_pool2d(level(z), 2)
        z = self.middle(z)
        for level in self.up:
            z = level(F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False))
        if ph or pw:
            z = z[..., ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
        return torch.tanh(z) / (2 + _EPS) + 0.5


def sharpen_mask(raw: torch.Tensor) -> torch.Tensor:
    """The reference's mask threshold: ``tanh(20·raw − 10)/(2+1e-7) + 0.5``."""
    return torch.tanh(20 * raw - 10) / (2 + _EPS) + 0.5


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``sqrt(mean over C, H, W of (a − b)² + 1e-12)`` (the tiny constant keeps the
    gradient finite when two samples coincide; the reference's plain sqrt gives NaN there)."""
    return ((a - b).pow(2).flatten(1).mean(1) + 1e-12).sqrt()


def diversity(x1: torch.Tensor, x2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """Diversity loss ``mean(d(x1, x2) / (d(t1, t2) + 1e-7))`` (small when triggers differ)."""
    return (rms_distance(x1, x2) / (rms_distance(t1, t2) + _EPS)).mean()


def auto_architecture(shape: tuple[int, int, int]) -> tuple[int, int]:
    """(width, depth): (32, 3) for multi-channel images of side ≥ 32, else (16, 2)."""
    c, h, w = shape
    return (32, 3) if c > 1 and min(h, w) >= 32 else (16, 2)


# ---------------------------------------------------------------------- optimizer wrapper
class JointOptimizer(torch.optim.Optimizer):
    """Steps a main optimiser (the classifier's) and further ones (G's) together.

    ``param_groups`` are the main optimiser's, so the loop's scheduler anneals the classifier
    only (``anneal_others=True`` appends the other optimisers' groups, so one schedule anneals
    them all); ``zero_grad`` clears every wrapped optimiser (the fix for G's accumulating
    gradients; ``zero_others=False`` clears the main one only, like the reference);
    ``state_dict``/``load_state_dict`` cover all of them for checkpoints.
    """

    def __init__(self, main: torch.optim.Optimizer, *others: torch.optim.Optimizer,
                 zero_others: bool = True, anneal_others: bool = False) -> None:  # noqa: D107
        # Deliberately no super().__init__: this object only delegates.
        self.main, self.others = main, list(others)
        self.zero_others = zero_others  # False: the reference's accumulating G gradients
        self.anneal_others = anneal_others  # True: the schedule sees the others' groups too
        self.defaults = main.defaults

    @property
    def param_groups(self):  # type: ignore[override]
        if self.anneal_others:
            return self.main.param_groups + [g for opt in self.others for g in opt.param_groups]
        return self.main.param_groups

    @property
    def state(self):  # type: ignore[override]
        return self.main.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in (self.main, *self.others) if self.zero_others else (self.main,):
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):  # noqa: ANN001
        loss = self.main.step(closure)
        for opt in self.others:
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "others": [o.state_dict() for o in self.others]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.main.load_state_dict(state["main"])
        for opt, st in zip(self.others, state["others"]):
            opt.load_state_dict(st)

    def __repr__(self) -> str:
        return f"JointOptimizer({type(self.main).__name__}, {', '.join(type(o).__name__ for o in self.others)})"


# ---------------------------------------------------------------------- attack
@register
class InputAware(Attack):
    """Input-aware dynamic backdoor; see the module docstring for the algorithm and arguments."""

    name = "inputaware"
    kind = "training"
    min_side = 4

    def __init__(self, mask_epochs: int = 25, mask_density: float = 0.032, lambda_div: float = 1.0,
                 lambda_norm: float = 100.0, lr_generator: float = 0.01, lr_mask: float = 0.01,
                 cross_rate: float | None = None, width: int | None = None, depth: int | None = None,
                 accumulate_generator_grads: bool = False, anneal_generator: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if int(mask_epochs) < 0:
            raise AttackError(f"inputaware: mask_epochs must be >= 0; got {mask_epochs}")
        if not 0 < mask_density < 1:
            raise AttackError(f"inputaware: mask_density must be in (0, 1); got {mask_density}")
        if cross_rate is not None and not 0 <= cross_rate <= 1:
            raise AttackError(f"inputaware: cross_rate must be in [0, 1]; got {cross_rate}")
        if width is not None and int(width) < 1:
            raise AttackError(f"inputaware: width must be >= 1; got {width}")
        if depth is not None and int(depth) < 1:
            raise AttackError(f"inputaware: depth must be >= 1; got {depth}")
        self.mask_epochs, self.mask_density = int(mask_epochs), float(mask_density)
        self.lambda_div, self.lambda_norm = float(lambda_div), float(lambda_norm)
        self.lr_generator, self.lr_mask = float(lr_generator), float(lr_mask)
        self.cross_rate = None if cross_rate is None else float(cross_rate)
        self.width = None if width is None else int(width)
        self.depth = None if depth is None else int(depth)
        self.accumulate_generator_grads = bool(accumulate_generator_grads)
        self.anneal_generator = bool(anneal_generator)
        self.generator: TriggerNet | None = None
        self._std: torch.Tensor | None = None  # dataset std for the diversity distances
        self.mask_net: TriggerNet | None = None
        self.mask_history: list[dict[str, float]] = []

    def params(self) -> dict:
        return {**super().params(), "mask_epochs": self.mask_epochs, "mask_density": self.mask_density,
                "lambda_div": self.lambda_div, "lambda_norm": self.lambda_norm,
                "lr_generator": self.lr_generator, "lr_mask": self.lr_mask, "cross_rate": self.cross_rate,
                "width": self.width, "depth": self.depth,
                "accumulate_generator_grads": self.accumulate_generator_grads,
                "anneal_generator": self.anneal_generator}

    @property
    def _cross(self) -> float:
        return self.poison_rate if self.cross_rate is None else self.cross_rate

    # ------------------------------------------------------------------ networks
    def build_networks(self, shape: tuple[int, int, int]) -> None:
        """(Re)initialise G and M for images of ``shape`` (C, H, W), seeded with ``seed``."""
        auto_w, auto_d = auto_architecture(shape)
        self.width = self.width or auto_w
        self.depth = self.depth or auto_d
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.generator = TriggerNet(shape[0], shape[0], self.width, self.depth)
            self.mask_net = TriggerNet(shape[0], 1, self.width, self.depth)

    def _networks(self) -> tuple[TriggerNet, TriggerNet]:
        if self.generator is None or self.mask_net is None:
            raise AttackError("inputaware: the trigger networks are not trained yet; "
                              "run train_model() or load_resources() first")
        return self.generator, self.mask_net

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Sharpened mask m(x) of shape (N, 1, H, W) (with gradients; caller sets the mode)."""
        return sharpen_mask(self._networks()[1](x))

    def trigger(self, x: torch.Tensor, source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_out, pattern, mask)``: ``x`` blended with the trigger made from ``source``
        (default ``x`` itself; another image for cross samples)."""
        gnet, mnet = self._networks()
        src = x if source is None else source
        pattern = gnet(src)
        m = sharpen_mask(mnet(src))
        return x + (pattern - x) * m, pattern, m

    @torch.no_grad()
    def apply(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        gnet, mnet = self._networks()
        dev = next(gnet.parameters()).device
        modes = gnet.training, mnet.training
        gnet.eval()
        mnet.eval()
        try:
            out = [self.trigger(x[i:i + batch_size].to(dev).float())[0].to(x.device, x.dtype)
                   for i in range(0, len(x), batch_size)]
        finally:
            gnet.train(modes[0])
            mnet.train(modes[1])
        return torch.cat(out) if out else x.clone()

    # ------------------------------------------------------------------ resources
    def resources(self) -> dict[str, torch.Tensor]:
        gnet, mnet = self._networks()
        out = {f"generator.{k}": v.detach().cpu().clone() for k, v in gnet.state_dict().items()}
        out.update({f"mask.{k}": v.detach().cpu().clone() for k, v in mnet.state_dict().items()})
        return out

    def load_resources(self, tensors: dict[str, torch.Tensor]) -> None:
        nets = []
        for prefix in ("generator.", "mask."):
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not state:
                raise AttackError(f"inputaware: resources lack the '{prefix[:-1]}' network weights")
            try:
                first = state["down.0.0.0.weight"]
                depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down."))
                last = state[f"up.{depth - 1}.1.0.weight"]
                net = TriggerNet(int(first.shape[1]), int(last.shape[0]), int(first.shape[0]), depth)
                net.load_state_dict(state)
            except (KeyError, ValueError, RuntimeError) as exc:
                raise AttackError(f"inputaware: malformed '{prefix[:-1]}' weights: {exc}") from None
            nets.append(net.eval())
        self.generator, self.mask_net = nets
        self.width, self.depth = self.generator.width, self.generator.depth

    # ------------------------------------------------------------------ training
    def set_normalization(self, std: tuple[float, ...] | None) -> None:
        """Per-channel std of the dataset's normalisation, used by the diversity distances
        (None: images are compared in [0, 1] pixel units)."""
        self._std = None if std is None else torch.tensor([float(v) for v in std]).view(1, -1, 1, 1)

    def _normalized(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in the dataset-normalised scale of the reference (the mean cancels in a
        difference, so only the std is applied)."""
        return t if self._std is None else t / self._std.to(t.device, t.dtype)

    def _mask_objective(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        m1 = sharpen_mask(model(x))
        m2 = m1.roll(1, 0)  # the mask of the partner image x2 = x.roll(1)
        norm = F.relu(m1 - self.mask_density).mean()
        xn = self._normalized(x)
        div = diversity(xn, xn.roll(1, 0), m1, m2)
        loss = self.lambda_norm * norm + self.lambda_div * div
        return loss, {"loss": float(loss.detach()), "norm": float(norm.detach()), "div": float(div.detach()),
                      "density": float(m1.detach().mean())}

    def poison_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage-2 batch (with gradients through G): returns ``(x', y', diversity)``.

        ~``poison_rate`` of the rows (random positions) get their own trigger and label t(y);
        ~``cross_rate`` further rows get the trigger of their partner ``x.roll(1, 0)`` and
        keep their label; ``diversity`` pairs backdoor rows with cross partners as the
        reference does. Random numbers from ``generator`` (global CPU RNG when None).
        """
        bd, cross = split_batch(len(y), [self.poison_rate, self._cross], generator, device=x.device)
        partner = x.roll(1, 0)  # x2: the next image of the (shuffled) batch
        xs, ys = x.clone(), y.clone()
        div = x.new_zeros(())
        if len(bd):
            xs[bd], p_bd, _ = self.trigger(x[bd])
            ys[bd] = self.target_labels(y[bd])
        if len(cross):
            xs[cross], p_cr, _ = self.trigger(x[cross], partner[cross])
        pairs = min(len(bd), len(cross))
        if pairs:
            nz = self._normalized
            div = diversity(nz(x[bd[:pairs]]), nz(partner[cross[:pairs]]), nz(p_bd[:pairs]), nz(p_cr[:pairs]))
        return xs, ys, div

    def _joint_objective(self, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor):
        gnet, mnet = self._networks()
        gnet.train()
        mnet.eval()
        xs, ys, div = self.poison_batch(x, y)
        ce = F.cross_entropy(classifier(xs), ys)
        loss = ce + self.lambda_div * div
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "div": float(div.detach())}

    def fit_mask(self, data, config, *, device="auto", progress: bool = True, checkpoint=None) -> float:
        """Stage 1: train the mask network M alone for ``mask_epochs`` (Adam ``lr_mask``, betas
        (0.5, 0.9), cosine), with the batch size, augmentation and seed of ``config``; then
        freeze M. Builds G and M first when needed. Returns the seconds spent."""
        from dataclasses import replace

        from ..training import train

        if self.mask_net is None:
            self.check_data(data)
            self.build_networks(data.image_shape)
        self.set_normalization(data.std)
        mnet = self._networks()[1]
        self.mask_history = []
        seconds = 0.0
        if self.mask_epochs > 0:
            mask_cfg = replace(config, epochs=self.mask_epochs, optimizer="adam", lr=self.lr_mask,
                               betas=(0.5, 0.9), weight_decay=0.0, scheduler="cosine", cos_t_max=None,
                               sam_rho=None, bn_eval=False)
            mask_opt = torch.optim.Adam(mnet.parameters(), lr=self.lr_mask, betas=(0.5, 0.9))
            mask_ckpt = None
            if checkpoint is not None:
                p = Path(checkpoint)
                mask_ckpt = p.with_name(f"{p.stem}-mask{p.suffix}")
            mnet.requires_grad_(True)
            st = train(mnet, data.train.x, data.train.y, mask_cfg, objective=self._mask_objective,
                       optimizer=mask_opt, device=device, progress=progress, checkpoint=mask_ckpt,
                       desc=f"attack {self.name} (mask)")
            self.mask_history, seconds = st.history, st.seconds
            if st.history:
                log.info("inputaware: mask stage done, density %.4f (target %.4f)",
                         st.history[-1].get("density", float("nan")), self.mask_density)
        mnet.eval().requires_grad_(False)
        return seconds

    def train_model(self, model: nn.Module, data, config, *, device="auto", progress: bool = True,
                    checkpoint=None, on_epoch_end=None):
        """Stage 1 (mask network) then stage 2 (classifier ``model`` + generator), both with
        :func:`distox.training.train`; returns stage 2's state (its ``seconds`` include stage 1;
        stage 1's history is kept in :attr:`mask_history`).

        ``checkpoint``: stage 1 checkpoints to ``<stem>-mask<suffix>`` beside it; stage 2's
        checkpoint also holds G and M, so an interrupted run resumes in either stage.
        Note: the backdoor test set depends on the trained G/M; build it after this call.
        """
        from ..training import make_optimizer, train
        from ..utils import resolve_device

        self.check_data(data)
        dev = resolve_device(device)
        self.build_networks(data.image_shape)
        self.set_normalization(data.std)
        gnet, mnet = self._networks()
        gnet.to(dev)
        mnet.to(dev)
        x, y = data.train.x, data.train.y

        seconds = self.fit_mask(data, config, device=dev, progress=progress, checkpoint=checkpoint)

        # Stage 2: classifier + generator, the classifier for the full config.epochs.
        model.to(dev)
        c_params = [p for p in model.parameters() if p.requires_grad]
        opt = JointOptimizer(make_optimizer(c_params, config),
                             torch.optim.Adam(gnet.parameters(), lr=self.lr_generator, betas=(0.5, 0.9)),
                             zero_others=not self.accumulate_generator_grads,
                             anneal_others=self.anneal_generator)
        try:
            state = train(model, x, y, config, objective=self._joint_objective,
                          params=c_params + list(gnet.parameters()), optimizer=opt,
                          extra_state={"generator": gnet, "mask": mnet}, device=dev, progress=progress,
                          checkpoint=checkpoint, on_epoch_end=on_epoch_end, desc=f"attack {self.name}")
        finally:
            gnet.eval()
        state.seconds += seconds
        return state
