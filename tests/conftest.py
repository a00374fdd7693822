"""Shared fixtures: small, seeded, CPU-only data and models."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from distox.data.core import DatasetBundle, ImageSplit
from distox.utils import cpu_vendor  # noqa: F401  (pinned exact results are per CPU vendor)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole suite: the tests' tiny convolutions run faster without
    threading overhead (several times faster on a busy 2-core machine), and float sums do not
    depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_bundle(n_train: int = 120, n_test: int = 60, channels: int = 1, side: int = 16,
                classes: int = 4, seed: int = 0) -> DatasetBundle:
    """Synthetic, learnable images: each class is a bright horizontal band at its own height."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> ImageSplit:
        y = torch.arange(n) % classes
        x = 0.2 * torch.rand(n, channels, side, side, generator=gen)
        band = side // classes
        for c in range(classes):
            x[y == c, :, c * band:(c + 1) * band, : side // 2] += 0.6
        return ImageSplit(x.clamp(0, 1), y)

    return DatasetBundle("synthetic", split(n_train), split(n_test), classes,
                         (0.5,) * channels, (0.5,) * channels, source="tests")


class Interrupted(Exception):
    """What :func:`stop_at` raises: a run interrupted in a test."""


def stop_at(epoch: int):
    """An ``on_epoch_end`` callback interrupting the run at the end of ``epoch``, before that
    epoch is checkpointed (the last saved epoch is ``epoch - 1``)."""
    def callback(e: int, model) -> dict[str, float]:
        if e == epoch:
            raise Interrupted
        return {}

    return callback


@pytest.fixture
def tiny_bundle() -> DatasetBundle:
    return make_bundle()


@pytest.fixture(scope="session")
def digits_bundle() -> DatasetBundle:
    from distox.data import load_dataset

    return load_dataset("digits")



def tiny_model(classes: int = 4, seed: int = 1):
    """A width-4 small CNN (with BatchNorm) on 1-channel images, seeded: the defenses' test model."""
    from distox.models import create_model

    torch.manual_seed(seed)
    return create_model("small_cnn", classes, 1, (0.5,), (0.5,), width=4)


def bare_cnn(classes: int = 4) -> torch.nn.Sequential:
    """A plain ``nn.Sequential`` CNN (conv, BatchNorm, two Linears) on 1-channel images, seeded:
    the user-built model of the model-form tests."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, classes))


def retain_split(n: int = 40) -> ImageSplit:
    """``n`` synthetic training images (:func:`make_bundle`): a retain set."""
    return make_bundle(n_train=n).train


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module (the benchmark scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
