"""Model factories: ``create_model(name, num_classes, in_channels, mean, std)``.

Registered names: ``preactresnet18``, ``vgg19_bn``, ``small_cnn``, ``small_vgg``, ``small_vit``, and
``torchvision:NAME`` for any torchvision classification model (e.g. ``torchvision:resnet18``). Every
model comes wrapped in :class:`Normalized`, so it takes images in [0, 1].

``width`` is the base channels of ``small_cnn`` / ``small_vgg``, the token width of ``small_vit``
and a channel multiplier of ``preactresnet18`` / ``vgg19_bn``; torchvision models take their own
builder's keyword arguments instead. torchvision models accept 3-channel images, and 1-channel
ones through :class:`GrayToRGB`, which repeats the channel; the state-dict keys are then those
of the 3-channel model with one more ``net.`` (``net.fc.weight`` → ``net.net.fc.weight``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from .grayscale import GrayToRGB
from .normalized import Normalized
from .preactresnet import PreActResNet18
from .selection import SelectionError, linear_forward_order, select_weights
from .small_cnn import SmallCNN
from .small_vgg import SmallVGG
from .small_vit import SmallViT
from .vgg import VGG19BN

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "preactresnet18": lambda num_classes, in_channels, width=1.0, **kw: PreActResNet18(
        num_classes, in_channels, width
    ),
    "vgg19_bn": lambda num_classes, in_channels, width=1.0, **kw: VGG19BN(num_classes, in_channels, width),
    "small_cnn": lambda num_classes, in_channels, width=16, **kw: SmallCNN(
        num_classes, in_channels, int(width)
    ),
    "small_vgg": lambda num_classes, in_channels, width=16, **kw: SmallVGG(num_classes, in_channels, int(width)),
    "small_vit": lambda num_classes, in_channels, width=64, **kw: SmallViT(
        num_classes, in_channels, int(width), **kw
    ),
}


def list_models() -> list[str]:
    return sorted(_FACTORIES) + ["torchvision:<name>"]


def _torchvision(name: str, num_classes: int, in_channels: int, **kw) -> nn.Module:
    """torchvision's ``name`` (untrained), behind :class:`GrayToRGB` for 1-channel images."""
    import torchvision

    if in_channels not in (1, 3):
        raise ValueError(f"torchvision:{name} takes 3-channel (or 1-channel) images; this dataset has "
                         f"{in_channels}")
    try:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)
    except ValueError as exc:
        raise ValueError(f"unknown torchvision model '{name}': {exc}") from None
    return GrayToRGB(net) if in_channels == 1 else net


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> Normalized:
    """Build model ``name`` wrapped with normalisation (identity when mean/std are omitted)."""
    if name.startswith("torchvision:"):
        net = _torchvision(name.split(":", 1)[1], num_classes, in_channels, **kwargs)
    elif name in _FACTORIES:
        net = _FACTORIES[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    else:
        raise ValueError(f"unknown model '{name}'. Known: {', '.join(list_models())}")
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    return Normalized(net, mean, std)


__all__ = [
    "GrayToRGB", "Normalized", "PreActResNet18", "SmallCNN", "SmallVGG", "SmallViT", "VGG19BN",
    "SelectionError", "create_model", "list_models", "linear_forward_order", "select_weights",
]
