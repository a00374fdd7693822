"""Model factories: ``create_model(name, num_classes, in_channels, mean, std)``.

Registered names: ``preactresnet18``, ``vgg19_bn``, ``small_cnn``, ``small_vgg``, ``small_vit``,
``hybrid_vit``, ``small_mlp``, ``lenet``, ``tutorial_cnn``, and
``torchvision:NAME`` for any torchvision classification model (e.g. ``torchvision:resnet18``). Every
model comes wrapped in :class:`Normalized`, so it takes images in [0, 1].

``width`` is the base channels of ``small_cnn`` / ``small_vgg``, the hidden units of ``small_mlp``, the token width of ``small_vit`` / ``hybrid_vit``
and a channel multiplier of ``preactresnet18`` / ``vgg19_bn``; torchvision models take their own
builder's keyword arguments instead. torchvision models accept 3-channel images, and 1-channel
ones through :class:`GrayToRGB`, which repeats the channel; the state-dict keys are then those
of the 3-channel model with one more ``net.`` (``net.fc.weight`` → ``net.net.fc.weight``).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..registry import keyword_names
from .grayscale import GrayToRGB
from .hybrid_vit import HybridViT
from .lenet import LeNet5
from .normalized import Normalized
from .preactresnet import PreActResNet18
from .selection import SelectionError, classifier_name, linear_forward_order, select_weights
from .small_cnn import SmallCNN
from .small_mlp import SmallMLP
from .small_vgg import SmallVGG
from .small_vit import SmallViT
from .tutorial_cnn import TutorialCNN
from .vgg import VGG19BN


def _preactresnet18(num_classes: int, in_channels: int, width: float = 1.0) -> nn.Module:
    return PreActResNet18(num_classes, in_channels, width)


def _vgg19_bn(num_classes: int, in_channels: int, width: float = 1.0, hidden: int = 4096) -> nn.Module:
    return VGG19BN(num_classes, in_channels, width, hidden)


def _small_cnn(num_classes: int, in_channels: int, width: int = 16, norm: str = "batch",
               head: str = "linear") -> nn.Module:
    return SmallCNN(num_classes, in_channels, int(width), norm, head)


def _small_vgg(num_classes: int, in_channels: int, width: int = 16) -> nn.Module:
    return SmallVGG(num_classes, in_channels, int(width))


def _small_mlp(num_classes: int, in_channels: int, width: int = 256, depth: int = 2, image_size: int = 28,
               norm: str = "none") -> nn.Module:
    return SmallMLP(num_classes, in_channels, int(width), int(depth), int(image_size), norm)


def _lenet(num_classes: int, in_channels: int, image_size: int = 28, norm: str = "none") -> nn.Module:
    return LeNet5(num_classes, in_channels, int(image_size), norm)


def _tutorial_cnn(num_classes: int, in_channels: int, image_size: int = 28) -> nn.Module:
    return TutorialCNN(num_classes, in_channels, int(image_size))


def _small_vit(num_classes: int, in_channels: int, width: int = 64, depth: int = 4, heads: int = 4,
               mlp_ratio: float = 2.0, patch_size: int = 4, image_size: int = 32) -> nn.Module:
    return SmallViT(num_classes, in_channels, int(width), depth, heads, mlp_ratio, patch_size, image_size)


def _hybrid_vit(num_classes: int, in_channels: int, width: int = 64, depth: int = 2, heads: int = 4,
                mlp_ratio: float = 2.0, image_size: int = 28) -> nn.Module:
    return HybridViT(num_classes, in_channels, int(width), depth, heads, mlp_ratio, image_size)


#: name → factory(num_classes, in_channels, **options); each option is a named keyword, so an
#: unknown one (a typo) is refused by :func:`check_model_kwargs` instead of being ignored.
_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "preactresnet18": _preactresnet18,
    "vgg19_bn": _vgg19_bn,
    "small_cnn": _small_cnn,
    "small_vgg": _small_vgg,
    "small_vit": _small_vit,
    "hybrid_vit": _hybrid_vit,
    "small_mlp": _small_mlp,
    "lenet": _lenet,
    "tutorial_cnn": _tutorial_cnn,
}


def list_models() -> list[str]:
    return sorted(_FACTORIES) + ["torchvision:<name>"]


def model_options(name: str) -> list[str]:
    """The keyword options model ``name`` accepts besides ``num_classes``/``in_channels``
    (torchvision models: the model class's own, e.g. ``width_per_group`` for ResNets)."""
    if name.startswith("torchvision:"):
        net = _torchvision_shape(name.split(":", 1)[1])
        params = inspect.signature(type(net).__init__).parameters.values()
        # those with a default: the builder sets the others (a ResNet's block and layers)
        return sorted(p.name for p in params if p.default is not p.empty and p.name != "num_classes")
    if name not in _FACTORIES:
        raise ValueError(f"unknown model '{name}'. Known: {', '.join(list_models())}")
    return sorted((keyword_names(_FACTORIES[name]) or set()) - {"num_classes", "in_channels"})


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the unknown options in ``kwargs`` and the valid ones,
    without building the model (torchvision models are built on the ``meta`` device: no memory,
    no time; on the CPU where their builder cannot run there, e.g. RegNet's), so a config or
    command fails before any training."""
    if name.startswith("torchvision:"):
        try:
            _torchvision_shape(name.split(":", 1)[1], **kwargs)
        except TypeError as exc:
            raise ValueError(f"{name}: {exc}; valid: {', '.join(model_options(name))}") from None
        return
    valid = model_options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for model '{name}'; valid: {', '.join(valid)}")


def _torchvision_shape(name: str, **kw) -> nn.Module:
    """torchvision's ``name`` with 10 classes, built on the ``meta`` device (no memory, no time) or,
    where its builder computes with tensors and cannot run there (RegNet's widths), on the CPU."""
    try:
        with torch.device("meta"):
            return _torchvision(name, 10, 3, **kw)
    except (NotImplementedError, RuntimeError):
        return _torchvision(name, 10, 3, **kw)


#: torchvision models whose training-mode forward also returns auxiliary classifiers' logits
#: (a named tuple): distox's training loops fit the main logits only, so these heads are left out.
AUXILIARY_HEADS = ("googlenet", "inception_v3")


def _torchvision(name: str, num_classes: int, in_channels: int, **kw) -> nn.Module:
    """torchvision's ``name`` (untrained), behind :class:`GrayToRGB` for 1-channel images.
    GoogLeNet and Inception-v3 come without their auxiliary heads (``aux_logits=False``; their
    weights initialised as torchvision's own training does): every distox loss is on the main
    logits, and with the heads a training-mode forward returns a named tuple."""
    import torchvision

    if name in AUXILIARY_HEADS:
        if kw.get("aux_logits"):
            raise ValueError(f"torchvision:{name}: aux_logits=true is not supported: distox trains on the "
                             f"main logits only (no auxiliary losses); leave it out")
        kw = {"aux_logits": False, "init_weights": True, **kw}

    if in_channels not in (1, 3):
        raise ValueError(f"torchvision:{name} takes 3-channel (or 1-channel) images; this dataset has "
                         f"{in_channels}")
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as exc:
        raise ValueError(f"unknown torchvision model '{name}': {exc}") from None
    try:
        net = builder(weights=None, num_classes=num_classes, **kw)
    except ValueError as exc:  # a bad option value
        raise ValueError(f"torchvision:{name}: {exc}") from None
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
        check_model_kwargs(name, kwargs)
        net = _FACTORIES[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    else:
        raise ValueError(f"unknown model '{name}'. Known: {', '.join(list_models())}")
    mean = tuple(mean) if mean is not None else (0.0,) * in_channels
    std = tuple(std) if std is not None else (1.0,) * in_channels
    return Normalized(net, mean, std)


__all__ = [
    "GrayToRGB", "Normalized", "PreActResNet18", "SmallCNN", "SmallMLP", "SmallVGG", "SmallViT", "VGG19BN",
    "SelectionError", "check_model_kwargs", "classifier_name", "create_model", "list_models", "model_options", "linear_forward_order", "select_weights",
]
