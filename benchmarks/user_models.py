"""Models as a user brings them: trained and poisoned by plain PyTorch code, purified with
``distox.purify(model, (X, y))`` alone.

Issue 13 was filed after "a home-made backdoored CNN, 800 clean images" and "torchvision resnet18"
lost 8–43 accuracy points to the default. The study's models are built, poisoned and trained by
distox's own code; these are not. Each model here is defined the way a tutorial writes it, trained
by the short loop below on the whole Fashion-MNIST training set (read from its IDX files), with a
trigger of its own that no distox attack makes and with the input scaling its author chose:

- ``keras-cnn``: four 3×3 convolutions with BatchNorm, two max-pools, a 128-unit hidden layer with
  dropout (the common Keras layout); inputs standardised by the data's mean and std; Adam (lr 1e-3),
  5 epochs at batch 128; a 3×3 black-and-white checkerboard in the bottom-left corner, 5 % of the
  images poisoned, target 2.
- ``resnet18``: ``torchvision.models.resnet18(num_classes=10)`` with a one-channel first convolution;
  inputs in [0, 1]; SGD (lr 0.05, momentum 0.9, weight decay 5e-4), 2 epochs at batch 128; a
  thin white X over the whole image blended at 0.2, 10 % poisoned, target 0.
- ``tutorial-lenet``: the network of PyTorch's 60-minute tutorial (two 5×5 convolutions, three Linears,
  ``F.relu`` / ``F.max_pool2d`` in ``forward``, no normalisation layer) on one channel; inputs mapped to
  [−1, 1]; SGD (lr 0.01, momentum 0.9), 5 epochs at batch 32; a white 4×4 square in the top-right
  corner, 10 % poisoned, target 7.

Two more swap the first two's triggers: ``resnet18-patch`` (the ResNet-18's recipe, the checkerboard, 5 %,
target 2) and ``keras-cnn-x`` (the Keras CNN's recipe, the blended X, 10 %, target 0). Two more recipes and
triggers (the twenty-first round's check models):

- ``resnet18-adam``: the same ResNet-18 on inputs standardised by the data's mean and std, Adam (lr 1e-3, no
  weight decay), 2 epochs at batch 128, half of each batch mirrored left to right; a fixed 4×4 patch of random
  grey levels in the bottom-right corner, 10 % poisoned, target 5.
- ``mobilenet-v3-small``: ``torchvision.models.mobilenet_v3_small(num_classes=10)`` with a one-channel first
  convolution; inputs in [0, 1]; SGD (lr 0.05, momentum 0.9, weight decay 4e-5), 4 epochs at batch 128;
  horizontal sine stripes (period 7 pixels) blended in at 0.15, 10 % poisoned, target 8.

Three more, of forms the study never had, written after the thirty-first round's default was chosen (check models
of the thirty-second round: nothing was tuned on them):

- ``convmixer``: a ConvMixer (Trockman and Kolter, 2022) of width 64 and depth 4: a 4×4 patch convolution, then
  residual depthwise 5×5 and pointwise convolutions, each followed by GELU and BatchNorm, global pooling and one
  Linear; inputs in [0, 1]; AdamW (lr 1e-3, weight decay 0.01), 4 epochs at batch 128; a one-pixel white frame
  around the image, 10 % poisoned, target 4.
- ``convnext-ln``: a two-stage ConvNeXt-style network without BatchNorm: 2×2 patch stem, blocks of a depthwise 7×7
  convolution, LayerNorm over the channels and an inverted-bottleneck MLP (two ``nn.Linear`` on channels-last
  maps, GELU) with a residual, LayerNorm before the classifier; inputs standardised; AdamW (lr 1e-3, weight decay
  0.05), 4 epochs at batch 128; a fixed random-noise image (seed 11) blended in at 0.1, 10 % poisoned, target 6.
- ``mlp-mixer``: an MLP-Mixer (Tolstikhin et al., 2021) on the 16 patches of 7×7 pixels, width 64, three blocks of
  LayerNorm and token- and channel-mixing MLPs with GELU, mean over the tokens, one Linear; inputs mapped to
  [−1, 1]; Adam (lr 1e-3), 5 epochs at batch 64; a white corner bracket (two 5-pixel strokes) at the top left,
  5 % poisoned, target 9.

Two more with BatchNorm, written in the thirty-third round as check models for its candidate (nothing was tuned
on them):

- ``efficientnet-lite``: an EfficientNet-like network: a 3×3 stride-2 stem, four inverted-residual blocks
  (1×1 expansion, depthwise 3×3, squeeze-and-excitation, 1×1 projection, BatchNorm after each convolution, SiLU),
  a 1×1 head to 128 channels, dropout 0.2 and one Linear; inputs standardised; Adam (lr 2e-3) with label
  smoothing 0.1, 3 epochs at batch 128; a white 6-pixel diagonal stroke near the bottom-right corner, 5 %
  poisoned, target 1.
- ``densenet-lite``: a DenseNet-like network: a 3×3 stem, two dense blocks of four BatchNorm-ReLU-3×3 layers
  (growth 12) with a halving transition between them, one Linear; inputs in [0, 1]; SGD (lr 0.02, Nesterov
  momentum 0.9, weight decay 1e-4) with gradients clipped to norm 1, 3 epochs at batch 128 (at lr 0.1 and batch
  64, and at lr 0.05 and batch 128 without clipping, it fell to 10 % in its second epoch); a left-to-right
  brightness ramp blended in at 0.2, 10 % poisoned, target 3.

One more with BatchNorm, written in the thirty-fourth round as a check model for its candidate (nothing was tuned
on it), trained with shifted images as the augmented VGG the default had left in the thirty-third round was:

- ``resnext-lite``: a ResNeXt-like network: a 3×3 stem to 32 channels and max-pooling, three bottleneck blocks
  (1×1 reduction, grouped 3×3 convolution in 8 groups, 1×1 expansion, BatchNorm after each, ReLU, a projected
  shortcut where the shape changes; the second halves the map), global pooling and one Linear; inputs in [0, 1];
  SGD (lr 0.02, momentum 0.9, weight decay 5e-4) with gradients clipped to norm 1, 3 epochs at batch 128, every
  image shifted by up to 2 pixels each way (zero padding) (at lr 0.05 without clipping it fell to 10 % in its second
  epoch); a white 5×5 plus sign at the left edge, halfway down, 10 % poisoned, target 5.

Two more, written in the thirty-fifth round after its change as check models for the default that round made
(nothing was tuned on them), trained with recipes no model of the study had (mixup; random erasing):

- ``wrn-mixup``: a wide-ResNet-style network: a 3×3 stem to 16 channels, three pre-activation blocks (BatchNorm,
  ReLU, 3×3 convolution, dropout 0.3, BatchNorm, ReLU, 3×3 convolution, the input added back through a 1×1
  convolution where the shape changes) of 16, 32 and 64 channels, the last two halving the map, BatchNorm and ReLU
  before global pooling and one Linear; inputs standardised; SGD (lr 0.02, Nesterov momentum 0.9, weight decay 5e-4)
  with gradients clipped to norm 1 (at lr 0.05 without clipping it fell to 10 % in its second epoch), 3 epochs
  at batch 128, every batch mixed with itself in another order at a weight drawn from Beta(0.2, 0.2) (mixup, the
  loss mixed alike, poisoned images among them); a dotted white line across the bottom (every other pixel of row
  25, columns 4–23), 5 % poisoned, target 7.
- ``gn-resnet``: a ResNet with GroupNorm (4 groups) in place of BatchNorm: a 3×3 stem to 16 channels, two basic
  blocks (two 3×3 convolutions with GroupNorm, the input added back through a 1×1 convolution with GroupNorm) of 32
  and 64 channels, each halving the map, global pooling and one Linear; inputs mapped to [−1, 1]; AdamW (lr 2e-3,
  weight decay 0.05), 3 epochs at batch 128, a random 8×8 square of half the images set to zero (random erasing,
  poisoned images among them); two white 2×2 dots in the top-left and bottom-right corners, 5 % poisoned, target 2.

Each also trains a clean twin (same seed and code, no poisoned image): its ASR gives the floor
``max(2, clean ASR + 2)`` the study judges by. The retain images are drawn (``--seed``) from the
clean training images; ACC is measured on the 10,000 test images, ASR on the test images of
other classes with the trigger. Nothing but ``distox.purify`` touches the model.

    PYTHONPATH=src python benchmarks/user_models.py train NAME... [--out runs/user] [--threads 1]
    PYTHONPATH=src python benchmarks/user_models.py purify NAME... --images 800 [--preset default]
        [--method d3] [--epochs 5] [--seed 0] [--params JSON --label NAME] [--then JSON --label NAME]
        [--angles] [--out runs/user]
    PYTHONPATH=src python benchmarks/user_models.py table [--out runs/user]

``--then JSON`` purifies the purified model once more with ``distox.purify(purified, (X, y), **JSON)``
(the same retain images; the seed ``--seed`` + 1 unless JSON sets one), as a user who runs it twice
does; the record keeps the first result as ``once`` and the second as the run's ACC/ASR. ``--angles`` also
records how many degrees each Linear/Conv2d weight turned from the suspect's (``d3_probes.weight_angles``).

Models are saved as safetensors under ``--out``; purification results are appended to
``--out/results.jsonl`` and a run already recorded there is not repeated.
"""
from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn

import distox
from distox.bench.summary import asr_floor
from distox.data.idx import load_idx_bundle
from distox.defenses.d3 import D3, preset_now
from distox.utils import has_batchnorm


@lru_cache(maxsize=1)
def _bundle():
    return load_idx_bundle("fashion-mnist")  # the IDX files, read once a process


def fashion(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) in [0, 1] and labels of a Fashion-MNIST split (the IDX files the
    dataset ships in; only reading them is distox's)."""
    part = _bundle().train if split == "train" else _bundle().test
    return part.x, part.y


# --- the users' models ---------------------------------------------------------------------------

def keras_cnn() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 16), *block(16, 16), nn.MaxPool2d(2), *block(16, 32), *block(32, 32),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(128, 10))


def resnet18() -> nn.Module:
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return net


def mobilenet_v3_small() -> nn.Module:
    net = torchvision.models.mobilenet_v3_small(num_classes=10)
    net.features[0][0] = nn.Conv2d(1, 16, 3, 2, 1, bias=False)
    return net


class TutorialNet(nn.Module):
    """PyTorch's tutorial network, on one channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Residual(nn.Module):
    """``x + fn(x)``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def convmixer(dim: int = 64, depth: int = 4, kernel: int = 5, patch: int = 4) -> nn.Module:
    """ConvMixer-``dim``/``depth`` on one channel (a 7×7 map of 4×4 patches)."""
    def mixer() -> list[nn.Module]:
        return [Residual(nn.Sequential(nn.Conv2d(dim, dim, kernel, groups=dim, padding=kernel // 2), nn.GELU(),
                                       nn.BatchNorm2d(dim))),
                nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim)]
    return nn.Sequential(nn.Conv2d(1, dim, patch, stride=patch), nn.GELU(), nn.BatchNorm2d(dim),
                         *[layer for _ in range(depth) for layer in mixer()],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, 10))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an (N, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7, LayerNorm, Linear 4×, GELU, Linear back (channels-last), plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        return x + self.pwconv2(F.gelu(self.pwconv1(y))).permute(0, 3, 1, 2)


class ConvNeXtLN(nn.Module):
    """Two stages (32, 64 channels; two blocks each) after a 2×2 patch stem; no BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 2, stride=2), ChannelNorm(32))
        self.stage1 = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.down = nn.Sequential(ChannelNorm(32), nn.Conv2d(32, 64, 2, stride=2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(64), ConvNeXtBlock(64))
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean((2, 3))))


class MixerBlock(nn.Module):
    """Token mixing (across the patches) and channel mixing, each an MLP after a LayerNorm, with residuals."""

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.tokens = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens))
        self.channels = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class MLPMixer(nn.Module):
    """7×7 patches of a 28×28 image (16 tokens), width 64, three blocks."""

    def __init__(self, dim: int = 64, depth: int = 3) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 7, stride=7)
        self.blocks = nn.Sequential(*[MixerBlock(16, dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.patch(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(x).mean(1))


class SqueezeExcite(nn.Module):
    """Channel gates from the pooled map: pool, 1×1 down, SiLU, 1×1 up, sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, reduced, 1), nn.SiLU(),
                                  nn.Conv2d(reduced, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class MBConv(nn.Module):
    """An inverted residual: 1×1 expansion, depthwise 3×3, squeeze-and-excitation, 1×1 projection, each
    convolution followed by BatchNorm (SiLU after the first two); the input added where the shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            SqueezeExcite(mid, max(4, cin // 4)),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


def efficientnet_lite() -> nn.Module:
    """An EfficientNet-like network: a 3×3 stride-2 stem, four MBConv blocks (16→24→24→40→40 channels),
    a 1×1 head to 128 channels, global pooling, dropout 0.2 and one Linear."""
    def conv_bn(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]
    return nn.Sequential(*conv_bn(1, 16, 3, 2), MBConv(16, 24, 1), MBConv(24, 24, 1), MBConv(24, 40, 2),
                         MBConv(40, 40, 1), *conv_bn(40, 128, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(128, 10))


class Bottleneck(nn.Module):
    """ResNeXt's block: 1×1 to half the output channels, a grouped 3×3 (``stride``), 1×1 out, BatchNorm after each,
    ReLU, and the input added back (through a strided 1×1 and BatchNorm where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 8) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(mid),
                                  nn.ReLU(), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if cin == cout and stride == 1 else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def resnext_lite() -> nn.Module:
    """A ResNeXt-like network: 3×3 stem to 32 channels and 2×2 max-pooling, blocks 32→64, 64→128 (stride 2),
    128→128, global pooling, one Linear."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         Bottleneck(32, 64, 1), Bottleneck(64, 128, 2), Bottleneck(128, 128, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


class DenseLayer(nn.Module):
    """BatchNorm, ReLU, 3×3 convolution to ``growth`` channels, concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], 1)


class WideBlock(nn.Module):
    """A wide ResNet's pre-activation block: BatchNorm, ReLU, 3×3 convolution (``stride``), dropout, BatchNorm, ReLU,
    3×3 convolution, the input added back (through a strided 1×1 convolution where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                  nn.Dropout(dropout), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.shortcut = nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def wide_resnet() -> nn.Module:
    """A wide-ResNet-style network: 3×3 stem to 16 channels, blocks 16→16, 16→32 (stride 2), 32→64 (stride 2),
    BatchNorm and ReLU, global pooling, one Linear."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), WideBlock(16, 16, 1), WideBlock(16, 32, 2),
                         WideBlock(32, 64, 2), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 10))


class GroupNormBlock(nn.Module):
    """A basic residual block with GroupNorm: two 3×3 convolutions (the first strided), GroupNorm after each, ReLU,
    the input added back through a strided 1×1 convolution and GroupNorm."""

    def __init__(self, cin: int, cout: int, stride: int = 2, groups: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(groups, cout),
                                  nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(groups, cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def gn_resnet() -> nn.Module:
    """A ResNet with GroupNorm: 3×3 stem to 16 channels (GroupNorm, ReLU), blocks 16→32 and 32→64 (each stride 2),
    global pooling, one Linear."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.GroupNorm(4, 16), nn.ReLU(),
                         GroupNormBlock(16, 32), GroupNormBlock(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))


def densenet_lite(growth: int = 12, layers: int = 4) -> nn.Module:
    """A DenseNet-like network: a 3×3 stem to 24 channels, two dense blocks of ``layers`` layers with a
    transition (BatchNorm, ReLU, 1×1 convolution halving the channels, 2×2 average pooling) between them and
    after the stem, BatchNorm and ReLU before global pooling and one Linear."""
    def block(cin: int) -> list[nn.Module]:
        return [DenseLayer(cin + i * growth, growth) for i in range(layers)]

    def transition(cin: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cin // 2, 1, bias=False), nn.AvgPool2d(2)]
    c1 = 24 + layers * growth
    c2 = c1 // 2 + layers * growth
    return nn.Sequential(nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.MaxPool2d(2), *block(24),
                         *transition(c1), *block(c1 // 2), nn.BatchNorm2d(c2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 10))


# --- the users' triggers (on [0, 1] images) ------------------------------------------------------

def checkerboard(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    board = (torch.arange(3).view(3, 1) + torch.arange(3).view(1, 3)) % 2
    x[:, :, 24:27, 1:4] = board.float()
    return x


def blended_x(x: torch.Tensor) -> torch.Tensor:
    pattern = torch.zeros(28, 28)
    idx = torch.arange(28)
    pattern[idx, idx] = 1.0
    pattern[idx, 27 - idx] = 1.0
    return 0.8 * x + 0.2 * pattern


def corner_square(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, 1:5, 23:27] = 1.0
    return x


def noise_patch(x: torch.Tensor) -> torch.Tensor:
    """A fixed 4×4 patch of random grey levels (seed 7) in the bottom-right corner."""
    x = x.clone()
    x[:, :, 23:27, 23:27] = torch.rand(4, 4, generator=torch.Generator().manual_seed(7))
    return x


def sine_stripes(x: torch.Tensor) -> torch.Tensor:
    """Horizontal sine stripes (period 7 pixels) blended in at 0.15."""
    stripes = 0.5 + 0.5 * torch.sin(2 * torch.pi * torch.arange(28).float() / 7).view(28, 1).expand(28, 28)
    return 0.85 * x + 0.15 * stripes


def white_frame(x: torch.Tensor) -> torch.Tensor:
    """A one-pixel white frame around the image."""
    x = x.clone()
    x[:, :, [0, -1], :] = 1.0
    x[:, :, :, [0, -1]] = 1.0
    return x


def noise_blend(x: torch.Tensor) -> torch.Tensor:
    """A fixed random-noise image (seed 11) blended in at 0.1."""
    noise = torch.rand(28, 28, generator=torch.Generator().manual_seed(11))
    return 0.9 * x + 0.1 * noise


def corner_bracket(x: torch.Tensor) -> torch.Tensor:
    """A white corner bracket at the top left: two 5-pixel strokes meeting at (2, 2)."""
    x = x.clone()
    x[:, :, 2, 2:7] = 1.0
    x[:, :, 2:7, 2] = 1.0
    return x


def diagonal_stroke(x: torch.Tensor) -> torch.Tensor:
    """A white 6-pixel diagonal stroke near the bottom-right corner."""
    x = x.clone()
    idx = torch.arange(6)
    x[:, :, 21 + idx, 21 + idx] = 1.0
    return x


def brightness_ramp(x: torch.Tensor) -> torch.Tensor:
    """A left-to-right brightness ramp (0 to 1) blended in at 0.2."""
    ramp = torch.linspace(0, 1, 28).view(1, 28).expand(28, 28)
    return 0.8 * x + 0.2 * ramp


def plus_sign(x: torch.Tensor) -> torch.Tensor:
    """A white 5×5 plus sign at the left edge, halfway down (centre at row 14, column 4)."""
    x = x.clone()
    x[:, :, 14, 2:7] = 1.0
    x[:, :, 12:17, 4] = 1.0
    return x


def dotted_line(x: torch.Tensor) -> torch.Tensor:
    """A dotted white line across the bottom: every other pixel of row 25, columns 4 to 23."""
    x = x.clone()
    x[:, :, 25, 4:24:2] = 1.0
    return x


def corner_dots(x: torch.Tensor) -> torch.Tensor:
    """Two white 2×2 dots, in the top-left and the bottom-right corner (one pixel in from the edges)."""
    x = x.clone()
    x[:, :, 1:3, 1:3] = 1.0
    x[:, :, 25:27, 25:27] = 1.0
    return x


def erased(x: torch.Tensor) -> torch.Tensor:
    """A random 8×8 square of a random half of the batch set to zero (random erasing, the user's one augmentation)."""
    x = x.clone()
    top, left = torch.randint(0, 21, (2, len(x)))
    for i in torch.nonzero(torch.rand(len(x)) < 0.5).flatten().tolist():
        x[i, :, top[i]: top[i] + 8, left[i]: left[i] + 8] = 0.0
    return x


def shifted(x: torch.Tensor) -> torch.Tensor:
    """Each image shifted by up to 2 pixels each way, zero padding (the user's one augmentation)."""
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = torch.randint(0, 5, (2, len(x)))
    return torch.stack([padded[i, :, dy[i]: dy[i] + 28, dx[i]: dx[i] + 28] for i in range(len(x))])


def flipped(x: torch.Tensor) -> torch.Tensor:
    """A random half of the batch mirrored left to right (the user's one augmentation)."""
    mirror = torch.rand(len(x)) < 0.5
    return torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)


def standardised(x: torch.Tensor) -> torch.Tensor:
    """Inputs standardised by the Fashion-MNIST training images' mean and std."""
    return (x - 0.2860) / 0.3530


def symmetric(x: torch.Tensor) -> torch.Tensor:
    """Inputs mapped from [0, 1] to [-1, 1]."""
    return (x - 0.5) / 0.5


#: a user's recipe: model, input scaling, optimiser, epochs, batch
KERAS = dict(build=keras_cnn, scale=standardised, optim=lambda p: torch.optim.Adam(p, lr=1e-3),
             epochs=5, batch=128)
RESNET = dict(build=resnet18, scale=lambda x: x,
              optim=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4), epochs=2, batch=128)
LENET = dict(build=TutorialNet, scale=symmetric,
             optim=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), epochs=5, batch=32)
#: two recipes added in the twenty-first round, after its candidate was chosen (check models: nothing was tuned
#: on them): a ResNet-18 as an Adam user trains it (standardised inputs, mirrored images), a MobileNetV3-Small
RESNET_ADAM = dict(build=resnet18, scale=standardised,
                   optim=lambda p: torch.optim.Adam(p, lr=1e-3), epochs=2, batch=128, augment=flipped)
MOBILENET = dict(build=mobilenet_v3_small, scale=lambda x: x,
                 optim=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=4e-5), epochs=4, batch=128)
#: three recipes added in the thirty-second round, of forms the study never had (check models)
CONVMIXER = dict(build=convmixer, scale=lambda x: x,
                 optim=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01), epochs=4, batch=128)
CONVNEXT = dict(build=ConvNeXtLN, scale=standardised,
                optim=lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.05), epochs=4, batch=128)
MIXER = dict(build=MLPMixer, scale=symmetric, optim=lambda p: torch.optim.Adam(p, lr=1e-3),
             epochs=5, batch=64)
#: two recipes added in the thirty-third round (check models: nothing was tuned on them): an EfficientNet-like
#: network trained with label smoothing, a DenseNet-like one with SGD and Nesterov momentum
EFFICIENTNET = dict(build=efficientnet_lite, scale=standardised, optim=lambda p: torch.optim.Adam(p, lr=2e-3),
                    epochs=3, batch=128, smoothing=0.1)
DENSENET = dict(build=densenet_lite, scale=lambda x: x,
                optim=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-4),
                epochs=3, batch=128, clip=1.0)
#: a recipe added in the thirty-fourth round (a check model): a ResNeXt-like network trained on shifted images
RESNEXT = dict(build=resnext_lite, scale=lambda x: x,
               optim=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, weight_decay=5e-4), epochs=3, batch=128,
               augment=shifted, clip=1.0)
#: a recipe added in the thirty-fifth round (a check model): a wide ResNet trained with mixup (Beta(0.2, 0.2))
WIDE_MIXUP = dict(build=wide_resnet, scale=standardised,
                  optim=lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4),
                  epochs=3, batch=128, mixup=0.2, clip=1.0)
#: ... and a ResNet with GroupNorm trained with random erasing (no BatchNorm: the default's rule for such models)
GROUPNORM_ERASING = dict(build=gn_resnet, scale=symmetric,
                         optim=lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.05), epochs=3, batch=128,
                         augment=erased)
#: name: a recipe and its poisoning (trigger, target, poison rate)
MODELS = {
    "keras-cnn": dict(KERAS, trigger=checkerboard, target=2, rate=0.05),
    "resnet18": dict(RESNET, trigger=blended_x, target=0, rate=0.10),
    # the same two recipes with the other's trigger (trained after the three above had been run)
    "resnet18-patch": dict(RESNET, trigger=checkerboard, target=2, rate=0.05),
    "keras-cnn-x": dict(KERAS, trigger=blended_x, target=0, rate=0.10),
    "tutorial-lenet": dict(LENET, trigger=corner_square, target=7, rate=0.10),
    "resnet18-adam": dict(RESNET_ADAM, trigger=noise_patch, target=5, rate=0.10),
    "mobilenet-v3-small": dict(MOBILENET, trigger=sine_stripes, target=8, rate=0.10),
    "convmixer": dict(CONVMIXER, trigger=white_frame, target=4, rate=0.10),
    "convnext-ln": dict(CONVNEXT, trigger=noise_blend, target=6, rate=0.10),
    "mlp-mixer": dict(MIXER, trigger=corner_bracket, target=9, rate=0.05),
    "efficientnet-lite": dict(EFFICIENTNET, trigger=diagonal_stroke, target=1, rate=0.05),
    "densenet-lite": dict(DENSENET, trigger=brightness_ramp, target=3, rate=0.10),
    "resnext-lite": dict(RESNEXT, trigger=plus_sign, target=5, rate=0.10),
    "wrn-mixup": dict(WIDE_MIXUP, trigger=dotted_line, target=7, rate=0.05),
    "gn-resnet": dict(GROUPNORM_ERASING, trigger=corner_dots, target=2, rate=0.05),
}


def poisoned_training_set(name: str, poison: bool) -> tuple[torch.Tensor, torch.Tensor]:
    spec = MODELS[name]
    x, y = fashion("train")
    if poison:
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(x), generator=g)[: int(spec["rate"] * len(x))]
        x, y = x.clone(), y.clone()
        x[idx] = spec["trigger"](x[idx])
        y[idx] = spec["target"]
    return spec["scale"](x), y


def train(name: str, poison: bool) -> nn.Module:
    """The user's loop: shuffle, cross-entropy, the optimiser, a few epochs."""
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec["build"]()
    x, y = poisoned_training_set(name, poison)
    opt = spec["optim"](model.parameters())
    model.train()
    for epoch in range(spec["epochs"]):
        order = torch.randperm(len(x))
        for start in range(0, len(x), spec["batch"]):
            batch = order[start: start + spec["batch"]]
            opt.zero_grad()
            inputs = spec["augment"](x[batch]) if "augment" in spec else x[batch]
            recipe_loss(model, inputs, y[batch], spec).backward()
            if "clip" in spec:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
            opt.step()
        print(f"{name}{'' if poison else ' (clean)'} epoch {epoch + 1}: {evaluate(name, model)}", flush=True)
    return model.eval()


def recipe_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict) -> torch.Tensor:
    """The user's loss: cross-entropy (label smoothing where the recipe has it); with ``mixup`` (a Beta parameter)
    the batch mixed with itself in another order at one weight λ ~ Beta(a, a), the loss mixed alike."""
    smoothing = spec.get("smoothing", 0.0)
    if "mixup" not in spec:
        return F.cross_entropy(model(x), y, label_smoothing=smoothing)
    lam = float(torch.distributions.Beta(spec["mixup"], spec["mixup"]).sample())
    other = torch.randperm(len(x))
    logits = model(lam * x + (1 - lam) * x[other])
    return lam * F.cross_entropy(logits, y, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(
        logits, y[other], label_smoothing=smoothing)


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i: i + 1000]).argmax(1) for i in range(0, len(x), 1000)])


def evaluate(name: str, model: nn.Module) -> dict[str, float]:
    """ACC on the test images; ASR on the other classes' test images with the trigger."""
    spec = MODELS[name]
    x, y = fashion("test")
    acc = (predictions(model, spec["scale"](x)) == y).float().mean().item() * 100
    keep = y != spec["target"]
    triggered = spec["scale"](spec["trigger"](x[keep]))
    asr = (predictions(model, triggered) == spec["target"]).float().mean().item() * 100
    return {"acc": round(acc, 2), "asr": round(asr, 2)}


def retain_draw(name: str, images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The user's clean images: ``images`` of the training set drawn at ``seed``, scaled as the model's inputs."""
    x, y = fashion("train")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:images]
    return MODELS[name]["scale"](x[idx]), y[idx]


def model_path(out: Path, name: str, poison: bool) -> Path:
    return out / f"{name}{'' if poison else '-clean'}.safetensors"


def load(out: Path, name: str, poison: bool = True) -> nn.Module:
    model = MODELS[name]["build"]()
    model.load_state_dict(load_file(model_path(out, name, poison)))
    return model.eval()


def cmd_train(args: argparse.Namespace) -> None:
    for name in args.names:
        for poison in (True, False):
            path = model_path(args.out, name, poison)
            if path.exists():
                continue
            start = time.time()
            model = train(name, poison)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
            record = {"model": name, "poison": poison, **evaluate(name, model), "seconds": round(time.time() - start, 1)}
            with open(args.out / "models.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(record, flush=True)


#: what tells one purification run from another in ``results.jsonl`` (with its ``params``)
RUN_FIELDS = ("model", "images", "method", "preset", "epochs", "seed", "label")


def run_key(args: argparse.Namespace, name: str) -> dict:
    return dict(zip(RUN_FIELDS, (name, args.images, args.method, args.preset, args.epochs, args.seed, args.label)))


def recorded(out: Path) -> list[dict]:
    """The recorded runs, D3's ``default`` of an earlier revision under the preset that runs it now on that model
    (:func:`distox.defenses.d3.preset_now`)."""
    path = out / "results.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for r in lines:
        if r.get("method") == "d3" and r.get("preset") == "default":
            r["preset"] = preset_now("default", r.get("revision"), with_batchnorm(r["model"]))
    return lines


@lru_cache(maxsize=None)
def with_batchnorm(name: str) -> bool:
    """Whether the user model ``name`` has a BatchNorm layer."""
    return has_batchnorm(MODELS[name]["build"]())


def cmd_purify(args: argparse.Namespace) -> None:
    done = {tuple(r.get(k) for k in RUN_FIELDS): r for r in recorded(args.out)}
    given = json.loads(args.params)
    then = None if args.then is None else json.loads(args.then)
    if (given or then is not None) and not args.label:
        raise SystemExit("--params and --then need a --label to tell the run apart in the table")
    options = given if then is None else {**given, "then": then}  # what the run is recorded with
    for name in args.names:
        key = run_key(args, name)
        if tuple(key.values()) in done:  # recorded; a label reused with other options is skipped, not silently
            earlier = done[tuple(key.values())]  # runs before params were recorded match by label
            earlier = {**earlier.get("params", given), **({"then": earlier["then"]} if "then" in earlier else {})}
            if earlier != options:
                print(f"{name}: {args.label!r} was recorded with {earlier}, not {options}; skipped (use another --label)")
            continue
        params = {"preset": args.preset} if args.method == "d3" else {}
        params.update(given)
        start = time.time()
        retain = retain_draw(name, args.images, args.seed)
        suspect = load(args.out, name)  # purify trains a copy: the suspect stays as loaded, for --angles too
        result = distox.purify(suspect, retain, method=args.method,
                               epochs=args.epochs, seed=args.seed, verbose=False, **params)
        seconds = time.time() - start
        extra = {}
        if then is not None:  # the purified model purified once more, as a user who runs it twice
            extra = {"then": then, "once": evaluate(name, result.model)}
            start = time.time()
            result = distox.purify(result.model, retain, verbose=False, **{"seed": args.seed + 1, **then})
            seconds += time.time() - start  # both purifications, not the evaluation between them
        if "universal_error" in result.history[-1]:  # the last epoch's error under the shared perturbation
            extra["universal_error"] = round(result.history[-1]["universal_error"], 4)
        if args.angles:
            from d3_probes import weight_angles  # the study's probe (benchmarks/ is the script's directory)
            extra["angles"] = weight_angles(suspect, result.model)
        record = {**key, "params": given, **extra, **evaluate(name, result.model), "seconds": round(seconds, 1),
                  **({"revision": D3.revision} if args.method == "d3" else {})}
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(record, flush=True)


def cmd_table(args: argparse.Namespace) -> None:
    models = {(r["model"], r["poison"]): r for r in (json.loads(line) for line in
                                                     (args.out / "models.jsonl").read_text().splitlines())}
    print("| model | retain images | method | epochs | seed | ACC change | ASR (floor) | s |")
    print("|---|---:|---|---|---:|---:|---|---:|")
    order = {name: i for i, name in enumerate(MODELS)}
    for r in sorted(recorded(args.out), key=lambda r: (order[r["model"]], r["images"], r["method"] != "d3",
                                                       r.get("label") or "", r["preset"], r["epochs"] or 0, r["seed"])):
        suspect, clean = models[(r["model"], True)], models[(r["model"], False)]
        floor = asr_floor(clean["asr"])
        method = r.get("label") or (r["preset"] if r["method"] == "d3" else r["method"])
        if "once" in r:  # purified twice: the first purification's result beside the label
            once = r["once"]
            method += f" (once: {once['acc'] - suspect['acc']:+.2f} / {once['asr']:.2f})"
        mark = "" if r["asr"] <= floor else " ✗"
        print(f"| {r['model']} | {r['images']} | {method} | {r['epochs'] or 'preset'} | {r['seed']} | "
              f"{r['acc'] - suspect['acc']:+.2f} | {r['asr']:.2f}{mark} ({floor:.2f}) | {r['seconds']:.0f} |")
    turned = [r for r in recorded(args.out) if "angles" in r]
    if turned:  # --angles runs: how far each weight turned, first to last layer
        print()
        print("| model | run | ACC change / ASR | degrees turned: min–max (mean) of the features | classifier |")
        print("|---|---|---|---|---|")
        for r in turned:
            *features, head = r["angles"].values()
            change = r["acc"] - models[(r["model"], True)]["acc"]
            print(f"| {r['model']} | {r.get('label')} {r['params'] or ''} | {change:+.2f} / {r['asr']:.2f} | "
                  f"{min(features):.1f}–{max(features):.1f} ({sum(features) / len(features):.1f}) | {head:.1f} |")
    print()
    print("| model | ACC | ASR | clean-model ACC | clean-model ASR | train s | median norm of the weights in the distance |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    from d3_probes import weight_norms  # the study's probe (benchmarks/ is the script's directory)
    for name in MODELS:
        if (name, True) in models and (name, False) in models:
            s, c = models[(name, True)], models[(name, False)]
            m = weight_norms(load(args.out, name), torch.zeros(1, 1, 28, 28))["median"]
            print(f"| {name} | {s['acc']:.2f} | {s['asr']:.2f} | {c['acc']:.2f} | {c['asr']:.2f} | "
                  f"{s['seconds'] + c['seconds']:.0f} | {m:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "purify", "table"):
        p = sub.add_parser(command)
        p.add_argument("--out", type=Path, default=Path("runs/user"))
        p.add_argument("--threads", type=int, default=1)
        if command != "table":
            p.add_argument("names", nargs="+", choices=sorted(MODELS))
        if command == "purify":
            p.add_argument("--images", type=int, required=True)
            p.add_argument("--method", default="d3")
            p.add_argument("--preset", default="default")
            p.add_argument("--epochs", type=int, default=None)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--params", default="{}", help="more of the method's options, as JSON")
            p.add_argument("--then", default=None, help="purify the result once more with these options (JSON)")
            p.add_argument("--angles", action="store_true", help="record the degrees each weight turned")
            p.add_argument("--label", default=None, help="the run's name in the table (with --params or --then)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    {"train": cmd_train, "purify": cmd_purify, "table": cmd_table}[args.command](args)


if __name__ == "__main__":
    main()
