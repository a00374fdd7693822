"""WaNet (Nguyen & Tran, "WaNet - Imperceptible Warping-based Backdoor Attack", ICLR 2021),
SPEC §3 and reference notes §1.6.

The trigger is a fixed, smooth, random warping field. From the attack's seed:

1. control points ``ins ~ U[-1, 1]`` of shape (1, 2, k, k), ``ins ← ins / mean|ins|``;
2. ``noise_grid`` = bicubic upsampling (align_corners=True) of ``ins`` to H×W, as (1, H, W, 2);
3. ``identity`` = the sampling grid of the unwarped image (x = column, y = row in [-1, 1]);
4. ``grid = clamp((identity + s·noise_grid/H)·grid_rescale, -1, 1)``;

and the backdoor image is ``grid_sample(x, grid)`` (bilinear, zero padding, align_corners=True)
on the un-normalised image (equivalent to the reference's warp of the normalised tensor, since
the warp is linear and stays inside the image).

WaNet controls training (``kind = "training"``): per mini-batch a fraction ρ_a = poison_rate is
warped and relabelled to t(y), and a fraction ρ_n = cross_ratio·ρ_a ("noise mode") is warped
with ``clamp(grid + U[-1, 1]/H, -1, 1)`` (fresh noise per sample) keeping its true label, so
the classifier learns that only the exact field is the trigger.

Args:
    k: control-grid size (default 4).
    s: warping strength (default 0.5); 0 gives the identity.
    grid_rescale: scale of the warped grid (default 1).
    cross_ratio: noise-mode fraction relative to the poison rate (default 2).
    target, mode, poison_rate, seed, shift: see :class:`~distox.attacks.base.Attack`
        (defaults 0, "all2one", 0.1, 0, 1); ``seed`` fixes the warping field.

Differs from the reference:
    - The reference warps the *first* ``int(ρ·bs)`` rows of each batch (12 of 128, an
      effective rate of 9.375 %, and the last batch of 80 gets 8) and noise-warps the next
      ``int(12·2)``. distox picks the rows at random positions and uses
      ``stochastic_round(ρ·bs)`` rows, so the expected rate equals ρ for every batch size
      (this also covers the reference's ``generalize_to_lower_pratio`` case ρ·bs < 1).
    - The reference's own batch-wise augmentation (crop pad 5 with p = 0.8, rotation ±10°
      with p = 0.5, same parameters for the whole batch) and its MultiStepLR whose first
      milestone is never reached are replaced by the shared loop's configuration
      (:class:`~distox.training.LoopConfig`: per-sample crop + flip when ``augment``, cosine
      schedule); as in the reference, augmentation runs after the poisoning.
    - The field is drawn from a dedicated generator seeded with ``seed`` (the reference draws
      it from the global RNG after building the classifier), so it never depends on the model.
    - Non-square images are supported: the displacement is divided by W along x and H along y.

Example:
    >>> atk = WaNet(target=0, poison_rate=0.1, seed=0)
    >>> x_bd = atk.apply(torch.rand(4, 3, 32, 32))   # sub-pixel, image-wide warp
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from .base import Attack, AttackError
from .perbatch import split_batch
from .registry import register


def control_points(k: int, seed: int) -> torch.Tensor:
    """The (1, 2, k, k) random control displacements, U[-1, 1] scaled to mean |·| = 1."""
    gen = torch.Generator().manual_seed(int(seed))
    ins = torch.rand(1, 2, k, k, generator=gen) * 2 - 1
    return ins / ins.abs().mean()


def upsample_field(ins: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bicubic upsampling (align_corners=True) of control points to a (1, H, W, 2) field."""
    return F.interpolate(ins, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)


def identity_grid(h: int, w: int) -> torch.Tensor:
    """(1, H, W, 2) sampling grid of the unwarped image: [..., 0] = column, [..., 1] = row."""
    rows = torch.linspace(-1, 1, h)
    cols = torch.linspace(-1, 1, w)
    yy, xx = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((xx, yy), dim=-1)[None]


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` of ``x`` (N, C, H, W) with a (1 or N, H, W, 2) grid (bilinear, zeros,
    align_corners=True)."""
    if grid.shape[0] == 1 and x.shape[0] != 1:
        grid = grid.expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


@register
class WaNet(Attack):
    """WaNet warping backdoor; see the module docstring for the algorithm and arguments."""

    name = "wanet"
    kind = "training"
    min_side = 4

    def __init__(self, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, cross_ratio: float = 2.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if int(k) < 2:
            raise AttackError(f"wanet: k (control grid size) must be >= 2; got {k}")
        if s < 0:
            raise AttackError(f"wanet: strength s must be >= 0; got {s}")
        if grid_rescale <= 0:
            raise AttackError(f"wanet: grid_rescale must be > 0; got {grid_rescale}")
        if cross_ratio < 0:
            raise AttackError(f"wanet: cross_ratio must be >= 0; got {cross_ratio}")
        self.k, self.s = int(k), float(s)
        self.grid_rescale, self.cross_ratio = float(grid_rescale), float(cross_ratio)
        self._ins = control_points(self.k, self.seed)
        self._fields: dict[tuple[int, int], torch.Tensor] = {}
        self._last_size: tuple[int, int] | None = None

    def params(self) -> dict:
        return {**super().params(), "k": self.k, "s": self.s, "grid_rescale": self.grid_rescale,
                "cross_ratio": self.cross_ratio}

    # ------------------------------------------------------------------ field
    def noise_grid(self, h: int, w: int) -> torch.Tensor:
        """The (1, H, W, 2) upsampled random field (cached per size)."""
        key = (int(h), int(w))
        if key not in self._fields:
            self._fields[key] = upsample_field(self._ins, h, w)
        self._last_size = key
        return self._fields[key]

    def grid(self, h: int, w: int) -> torch.Tensor:
        """The fixed warping grid ``clamp((identity + s·noise/side)·grid_rescale, -1, 1)``."""
        side = torch.tensor([float(w), float(h)])
        grid = (identity_grid(h, w) + self.s * self.noise_grid(h, w) / side) * self.grid_rescale
        return grid.clamp(-1, 1)

    def check_image(self, shape: tuple[int, int, int]) -> None:
        super().check_image(shape)
        self.noise_grid(shape[1], shape[2])

    def resources(self) -> dict[str, torch.Tensor]:
        out = {"control_points": self._ins.clone()}
        if self._last_size is not None:
            out["noise_grid"] = self._fields[self._last_size].clone()
        return out

    def load_resources(self, tensors: dict[str, torch.Tensor]) -> None:
        if "control_points" not in tensors:
            raise AttackError("wanet: resources lack 'control_points'")
        ins = tensors["control_points"].float()
        if ins.ndim != 4 or ins.shape[:2] != (1, 2):
            raise AttackError(f"wanet: control_points must have shape (1, 2, k, k); got {tuple(ins.shape)}")
        self._ins, self.k = ins.clone(), int(ins.shape[-1])
        self._fields, self._last_size = {}, None
        if "noise_grid" in tensors:
            field = tensors["noise_grid"].float().clone()
            self._last_size = (int(field.shape[1]), int(field.shape[2]))
            self._fields[self._last_size] = field

    # ------------------------------------------------------------------ trigger
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return warp(x, self.grid(h, w).to(x.device))

    def batch_transform(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]:
        """Per batch: warp + relabel ~ρ_a of the rows, noise-warp ~ρ_n (labels kept)."""
        rate_bd = self.poison_rate
        rate_noise = self.cross_ratio * self.poison_rate

        def transform(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            n, _, h, w = x.shape
            bd, noise = split_batch(n, [rate_bd, rate_noise], generator, device=x.device)
            grid = self.grid(h, w).to(x.device)
            x, y = x.clone(), y.clone()
            if len(bd):
                x[bd] = warp(x[bd], grid)
                y[bd] = self.target_labels(y[bd])
            if len(noise):
                side = torch.tensor([float(w), float(h)], device=x.device)
                jitter = (torch.rand(len(noise), h, w, 2, generator=generator) * 2 - 1).to(x.device)
                x[noise] = warp(x[noise], (grid + jitter / side).clamp(-1, 1))
            return x, y

        return transform
