"""Blended (Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems Using Data
Poisoning", 2017), SPEC §3.

The trigger is a fixed pattern P blended into the whole image:

    x' = (1 − α)·x + α·P,        α = 0.2 at train time (``alpha``) and test time (``test_alpha``).

P is a natural image that ships with scikit-image (default ``skimage.data.chelsea``, a
photograph of a cat), scaled to [0, 1], resized bilinearly to the input size (aspect ratio
not kept) and converted to grey by luminance (0.299 R + 0.587 G + 0.114 B) for 1-channel data
(repeated for other channel counts). ``pattern="noise"`` uses uniform random noise in [0, 1]
drawn from ``seed`` instead, as in the original Blended paper. P is exposed by
:meth:`Blended.resources` so a run directory rebuilds the poisoned test set exactly.

Args:
    alpha: blend weight on poisoned training images (default 0.2).
    test_alpha: blend weight on test images, i.e. :meth:`apply` (default 0.2).
    pattern: ``"skimage.data.<name>"`` (or just ``<name>``) for a bundled scikit-image
        sample image, or ``"noise"`` (default ``"skimage.data.chelsea"``).
    target, mode, poison_rate, seed, shift: see :class:`~distox.attacks.base.Attack`
        (defaults 0, "all2one", 0.1, 0, 1).

Differs from the reference: the reference blends a Hello Kitty cartoon kept in its own
repository and truncates the result to uint8; distox blends an image that ships with a
dependency (scikit-image), recorded by name in :meth:`Blended.params`, and keeps float
precision, so x' is exactly (1 − α)·x + α·P.
Resizing is anti-aliased like the reference's PIL bilinear resize.

Example:
    >>> atk = Blended(alpha=0.2, pattern="skimage.data.chelsea")
    >>> x_bd = atk.apply(torch.rand(4, 3, 32, 32))   # 0.8·x + 0.2·cat
"""
from __future__ import annotations

import numpy as np
import torch

from ._image_ops import match_channels, resize_bilinear
from .base import Attack, AttackError
from .registry import register

SKIMAGE_PREFIX = "skimage.data."


def _normalise_pattern_name(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise AttackError(f"pattern must be 'noise' or 'skimage.data.<name>'; got {pattern!r}")
    if pattern == "noise":
        return pattern
    name = pattern[len(SKIMAGE_PREFIX):] if pattern.startswith(SKIMAGE_PREFIX) else pattern
    import skimage.data

    if name.startswith("_") or not callable(getattr(skimage.data, name, None)):
        raise AttackError(
            f"unknown blend pattern {pattern!r}: use 'noise' or a scikit-image sample image such as "
            "'skimage.data.chelsea', 'skimage.data.astronaut' or 'skimage.data.coffee'"
        )
    return SKIMAGE_PREFIX + name


def load_sample_image(pattern: str) -> torch.Tensor:
    """A scikit-image sample image as a float (C, H, W) tensor in [0, 1] (C = 1 or 3)."""
    import skimage.data

    name = pattern[len(SKIMAGE_PREFIX):]
    try:
        arr = np.asarray(getattr(skimage.data, name)())
    except Exception as exc:  # a sample that needs a download, or a non-image helper
        raise AttackError(f"could not load blend pattern {pattern!r}: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise AttackError(f"blend pattern {pattern!r} is not a 2-D grey or RGB image (shape {arr.shape})")
    arr = arr[:, :, :3]
    scale = 255.0 if arr.dtype == np.uint8 else max(float(arr.max()), 1e-12)
    return torch.from_numpy(arr.astype(np.float32) / scale).permute(2, 0, 1).contiguous().clamp(0, 1)


def build_pattern(pattern: str, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """The blend pattern P of shape (C, H, W) in [0, 1] (deterministic in its arguments)."""
    c, h, w = (int(s) for s in shape)
    if pattern == "noise":
        return torch.rand((c, h, w), generator=torch.Generator().manual_seed(int(seed)))
    img = resize_bilinear(load_sample_image(pattern), (h, w)).clamp(0, 1)
    return match_channels(img, c)


@register
class Blended(Attack):
    """Blend a fixed natural image (or seeded noise) into the whole image; see the module doc."""

    name = "blended"
    kind = "data"
    min_side = 2

    def __init__(self, alpha: float = 0.2, test_alpha: float = 0.2,
                 pattern: str = SKIMAGE_PREFIX + "chelsea", **kwargs) -> None:
        super().__init__(**kwargs)
        for label, a in (("alpha", alpha), ("test_alpha", test_alpha)):
            if not (isinstance(a, (int, float)) and 0.0 <= a <= 1.0):
                raise AttackError(f"{label} must be in [0, 1]; got {a}")
        self.alpha, self.test_alpha = float(alpha), float(test_alpha)
        self.pattern = _normalise_pattern_name(pattern)
        self._pattern: torch.Tensor | None = None
        self._loaded = False

    def params(self) -> dict:
        return {**super().params(), "alpha": self.alpha, "test_alpha": self.test_alpha,
                "pattern": self.pattern}

    # ------------------------------------------------------------------ the pattern
    def pattern_for(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """P for images of shape (C, H, W): built once, or the one restored by
        :meth:`load_resources` (which must match the shape)."""
        shape = tuple(int(s) for s in shape)
        if self._pattern is not None and tuple(self._pattern.shape) == shape:
            return self._pattern
        if self._loaded:
            raise AttackError(
                f"the loaded blend pattern has shape {tuple(self._pattern.shape)}; images have shape {shape}"
            )
        self.check_image(shape)
        self._pattern = build_pattern(self.pattern, shape, self.seed)
        return self._pattern

    def check_data(self, data) -> None:
        super().check_data(data)
        self.pattern_for(data.image_shape)  # so that resources() is available after training

    def resources(self) -> dict[str, torch.Tensor]:
        return {} if self._pattern is None else {"pattern": self._pattern.clone()}

    def load_resources(self, tensors: dict[str, torch.Tensor]) -> None:
        if "pattern" not in tensors:
            raise AttackError("blended resources need a 'pattern' tensor")
        p = tensors["pattern"].detach().float().cpu()
        if p.ndim != 3:
            raise AttackError(f"blend pattern must have shape (C, H, W); got {tuple(p.shape)}")
        self._pattern, self._loaded = p.clone(), True

    # ------------------------------------------------------------------ trigger
    def blend(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        """(1 − alpha)·x + alpha·P for a batch ``x`` (N, C, H, W)."""
        if x.ndim != 4:
            raise AttackError(f"images must have shape (N, C, H, W); got {tuple(x.shape)}")
        p = self.pattern_for(tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)
        return (1.0 - alpha) * x + alpha * p

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.blend(x, self.test_alpha)

    def apply_train(self, x: torch.Tensor) -> torch.Tensor:
        return self.blend(x, self.alpha)
