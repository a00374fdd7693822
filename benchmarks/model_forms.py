"""Does ``distox.purify(model, clean)`` run end to end on models distox does not ship?

Architectures from torchvision (built at small input sizes, random weights) and the forms models
take in the wild — a dict, a Hugging Face-like object or a tuple as output, GoogLeNet's
training-mode named tuple, a final softmax, a Conv1d class head, frozen layers, weight or spectral
norm, no bias, no BatchNorm, GroupNorm, channels-last memory, 16-bit weights, two classes. Each
runs the default preset for ``--epochs`` on ``--images`` random images; the table says whether it
ran, what the default resolved (its BatchNorm rule, the weights its distance covers), how many of
the model's Linear and Conv2d weights the run changed, and how long it took. This is a smoke
benchmark of *coverage*, not of removal: the weights are random (a weight initialised to zero,
torchvision's ViT head, is given random values as training would: D3 keeps an all-zero weight at
zero, with a warning).

    PYTHONPATH=src python benchmarks/model_forms.py [--epochs 1] [--images 64] [--threads 1] [--only NAME ...]

Prints a markdown table; exits 1 when a model that should run fails.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import types
import warnings
from collections.abc import Callable

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.vision_transformer import VisionTransformer

import distox
from distox.models.selection import select_weights


def _cnn(channels: int = 1, head: nn.Module | None = None, norm: str = "batch") -> nn.Sequential:
    def normed(width: int) -> list[nn.Module]:
        return {"batch": [nn.BatchNorm2d(width)], "group": [nn.GroupNorm(4, width)], "none": []}[norm]
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), *normed(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), *normed(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), head or nn.Linear(32, 10))


class Returning(nn.Module):
    """``_cnn`` with its logits inside another output: ``dict``, ``object`` (``.logits``), ``tuple``,
    ``softmax`` (probabilities)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.net, self.form = _cnn(), form

    def forward(self, x: torch.Tensor):
        z = self.net(x)
        return {"dict": lambda: {"logits": z}, "object": lambda: types.SimpleNamespace(logits=z),
                "tuple": lambda: (z, x.mean()), "softmax": lambda: z.softmax(1)}[self.form]()


class Conv1dHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features, self.head = nn.Sequential(*list(_cnn())[:-1]), nn.Conv1d(32, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).unsqueeze(-1)).squeeze(-1)


def _frozen_stem() -> nn.Module:
    model = _cnn()
    for p in model[0].parameters():
        p.requires_grad_(False)
    return model


def _normed_head(kind: Callable[[nn.Module], nn.Module]) -> nn.Module:
    model = _cnn()
    model[-1] = kind(model[-1])
    return model


#: name -> (factory, channels, side, classes); torchvision models at the smallest side they take
MODELS: dict[str, tuple[Callable[[], nn.Module], int, int, int]] = {
    "torchvision resnet18": (lambda: tvm.resnet18(num_classes=10), 3, 32, 10),
    "torchvision densenet (small)": (lambda: tvm.DenseNet(8, (2, 2), 16, num_classes=10), 3, 32, 10),
    "torchvision squeezenet1_1": (lambda: tvm.squeezenet1_1(num_classes=10), 3, 64, 10),
    "torchvision googlenet": (lambda: tvm.googlenet(num_classes=10, aux_logits=False, init_weights=True), 3, 64, 10),
    "torchvision googlenet, aux heads": (lambda: tvm.googlenet(num_classes=10, aux_logits=True, init_weights=True), 3, 64, 10),
    "torchvision convnext (small)": (lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)],
                                                      num_classes=10), 3, 32, 10),
    "torchvision vit (small)": (lambda: VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=10), 3, 32, 10),
    "torchvision swin_t": (lambda: tvm.swin_t(num_classes=10), 3, 32, 10),
    "torchvision mobilenet_v3_small": (lambda: tvm.mobilenet_v3_small(num_classes=10), 3, 32, 10),
    "torchvision shufflenet_v2_x0_5": (lambda: tvm.shufflenet_v2_x0_5(num_classes=10), 3, 32, 10),
    "torchvision mnasnet0_5": (lambda: tvm.mnasnet0_5(num_classes=10), 3, 32, 10),
    "torchvision efficientnet_b0": (lambda: tvm.efficientnet_b0(num_classes=10), 3, 32, 10),
    "torchvision regnet_x_400mf": (lambda: tvm.regnet_x_400mf(num_classes=10), 3, 32, 10),
    "torchvision alexnet": (lambda: tvm.alexnet(num_classes=10), 3, 64, 10),
    "torchvision vgg11_bn": (lambda: tvm.vgg11_bn(num_classes=10), 3, 32, 10),
    "output: dict with logits": (lambda: Returning("dict"), 1, 28, 10),
    "output: object with .logits": (lambda: Returning("object"), 1, 28, 10),
    "output: (logits, extra) tuple": (lambda: Returning("tuple"), 1, 28, 10),
    "output: softmax probabilities": (lambda: Returning("softmax"), 1, 28, 10),
    "head: Conv1d": (Conv1dHead, 1, 28, 10),
    "head: Linear without bias": (lambda: _cnn(head=nn.Linear(32, 10, bias=False)), 1, 28, 10),
    "head: weight norm": (lambda: _normed_head(nn.utils.parametrizations.weight_norm), 1, 28, 10),
    "head: spectral norm": (lambda: _normed_head(nn.utils.parametrizations.spectral_norm), 1, 28, 10),
    "frozen stem (requires_grad False)": (_frozen_stem, 1, 28, 10),
    "no normalisation": (lambda: _cnn(norm="none"), 1, 28, 10),
    "GroupNorm": (lambda: _cnn(norm="group"), 1, 28, 10),
    "channels-last memory": (lambda: _cnn().to(memory_format=torch.channels_last), 1, 28, 10),
    "bfloat16 weights": (lambda: _cnn().to(torch.bfloat16), 1, 28, 10),
    "two classes": (lambda: _cnn(head=nn.Linear(32, 2)), 1, 28, 2),
}


def resolved(config: dict) -> str:
    """What the default decided for this model, in a few words."""
    rule = config.get("norm_rule_resolved") or {}
    changed = rule.get("changed") or {}
    layers = changed.get("layers", config.get("layers"))
    return f"BatchNorm {'yes' if rule.get('batchnorm') else 'no'}; distance on {layers}"


def run(name: str, epochs: int, images: int) -> tuple[str, str, float]:
    make, channels, side, classes = MODELS[name]
    torch.manual_seed(0)
    model = make()
    for layer in model.modules():  # torchvision's ViT starts its head at zero: a trained one is not
        if isinstance(layer, (nn.Linear, nn.Conv2d)) and not nn.utils.parametrize.is_parametrized(layer) \
                and not layer.weight.detach().any():
            nn.init.normal_(layer.weight, std=0.02)
    x, y = torch.rand(images, channels, side, side), torch.arange(images) % classes
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: the label check warns every time
        result = distox.purify(model, (x, y), epochs=epochs, verbose=False, label_check="off")
    seconds = time.perf_counter() - start
    before, after = select_weights(model, "all"), select_weights(result.model, "all")
    changed = sum(not torch.equal(before[name], after[name]) for name in before)
    return "ran", f"{resolved(result.config)}; {changed} of {len(before)} Linear/Conv weights changed", seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--only", nargs="*", default=None, help="model names (substrings) to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    failed = 0
    print("| model | input | result | what the default resolved | s |\n|---|---|---|---|---|")
    for name, (_, channels, side, _) in MODELS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        try:
            status, what, seconds = run(name, args.epochs, args.images)
        except Exception as exc:  # reported, and the exit status says so
            failed += 1
            status, what, seconds = "**failed**", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}", float("nan")
        print(f"| {name} | {channels}×{side}×{side} | {status} | {what} | {seconds:.1f} |", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
