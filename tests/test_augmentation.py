"""Training augmentation per dataset, as the reference does it (issue 17): random crop with 4 px
of padding everywhere, horizontal flip on CIFAR-10 only, for attacks and defenses alike;
``flip=None`` follows the table, an explicit flip overrides it, unknown data are not flipped."""
from __future__ import annotations

import copy

import pytest
import torch

from distox.api import purify
from distox.bench import expand, parse_config
from distox.data import REFERENCE_AUGMENTATION, Augmentation, DatasetBundle, ImageSplit, augmentation_for
from distox.defenses import D3, FT
from distox.experiment import AttackSpec
from distox.models import create_model

from .conftest import make_bundle

#: Each known dataset's image side, for specs and retain sets of its real size.
SIDES = {"cifar10": 32, "cifar100": 32, "gtsrb": 32, "tiny-imagenet": 64, "mnist": 28, "fashion-mnist": 28,
         "digits": 8}


def split_of(dataset: str | None, side: int, n: int = 4, channels: int = 1) -> ImageSplit:
    return ImageSplit(torch.rand(n, channels, side, side), torch.arange(n) % 2, dataset)


def test_the_table_is_the_reference_crop_4_px_and_flip_on_cifar10_only():
    assert set(REFERENCE_AUGMENTATION) == set(SIDES)
    assert [name for name, aug in REFERENCE_AUGMENTATION.items() if aug.flip] == ["cifar10"]
    # 4 px at every size the reference has, Tiny-ImageNet's 64 px included (not scaled to 8)
    assert {aug.crop_padding for name, aug in REFERENCE_AUGMENTATION.items() if name != "digits"} == {4}
    assert REFERENCE_AUGMENTATION["digits"] == Augmentation(crop_padding=1, flip=False)


@pytest.mark.parametrize("dataset", sorted(SIDES))
def test_attack_and_defense_augment_as_the_table(dataset):
    side, want = SIDES[dataset], REFERENCE_AUGMENTATION[dataset]
    spec = AttackSpec("badnets", dataset=dataset)
    assert spec.flip is want.flip and spec.to_dict()["flip"] is want.flip  # resolved at once
    loop = spec.loop_config(side)
    assert (loop.crop_padding, loop.flip) == (want.crop_padding, want.flip)
    retain = split_of(dataset, side)
    for defense in (FT(), D3(preset="reference"), D3(preset="paper")):
        loop = defense.loop_config(retain)
        assert (loop.crop_padding, loop.flip) == (want.crop_padding, want.flip)
        assert defense.get_params(retain)["flip"] is want.flip


@pytest.mark.parametrize("dataset", ["folder:/some/images", "synthetic", None])
def test_unknown_data_are_not_flipped_and_padding_scales_with_the_side(dataset):
    assert augmentation_for(dataset, 64) == Augmentation(crop_padding=8, flip=False)
    assert augmentation_for(dataset, 16) == Augmentation(crop_padding=2, flip=False)
    if dataset is not None:
        assert AttackSpec("badnets", dataset=dataset).flip is False
    assert D3().loop_config(split_of(dataset, 16)).flip is False


def test_explicit_flip_overrides_the_table():
    assert AttackSpec("badnets", dataset="mnist", flip=True).loop_config(28).flip is True
    assert AttackSpec("badnets", dataset="cifar10", flip=False).loop_config(32).flip is False
    assert D3(flip=False).loop_config(split_of("cifar10", 32)).flip is False
    assert D3(flip=True).get_params(split_of(None, 16))["flip"] is True
    assert D3().get_params()["flip"] is None  # unresolved until there are data


def test_splits_know_their_dataset_through_subsets():
    bundle = make_bundle()
    assert bundle.name == "synthetic" and bundle.train.dataset == bundle.test.dataset == "synthetic"
    assert bundle.train.subset(torch.arange(3)).dataset == "synthetic"
    assert bundle.test.to("cpu").dataset == "synthetic"


def test_purify_on_user_tensors_records_the_resolved_flip():
    bundle = make_bundle(n_train=16)
    model = create_model("small_cnn", 4, 1, (0.5,), (0.5,), width=4)
    result = purify(model, (bundle.train.x, bundle.train.y), "ft", epochs=1, verbose=False)
    assert result.config["flip"] is False
    result = purify(model, (bundle.train.x, bundle.train.y), "ft", epochs=1, verbose=False, flip=True)
    assert result.config["flip"] is True


@pytest.mark.parametrize("preset", ["reference", "paper"])
def test_fashion_mnist_retain_images_are_never_flipped_under_the_faithful_presets(preset):
    # each image is bright on its left half only: a 4 px crop keeps the left brighter, a flip
    # would make the right brighter
    n, side = 32, 28
    x = torch.zeros(n, 1, side, side)
    x[..., : side // 2] = 0.5 + 0.5 * torch.rand(n, 1, side, side // 2)
    data = ImageSplit(x, torch.arange(n) % 2)
    bundle = DatasetBundle("fashion-mnist", data, data, 2, (0.5,), (0.5,))
    retain = bundle.train.subset(torch.arange(n))
    model = create_model("small_cnn", 2, 1, (0.5,), (0.5,), width=4)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().cpu().clone()))
    result = D3(preset=preset, augment=True, epochs=2, batch_size=8)(copy.deepcopy(model), retain, progress=False)
    batches = torch.cat(seen)
    assert len(batches) >= 2 * n
    left, right = batches[..., :10].mean(dim=(1, 2, 3)), batches[..., -10:].mean(dim=(1, 2, 3))
    assert (left > right).all(), "a Fashion-MNIST retain image was flipped"
    assert not all(any(torch.equal(b, o) for o in x) for b in batches)  # the crop did run
    assert result.config["flip"] is False


def _grid_keys(dataset: str, **settings) -> list[str]:
    cfg = {"datasets": [dataset], "models": [{"name": "small_cnn", "kwargs": {"width": 4}}],
           "attack_settings": {"epochs": 1, **settings}, "attacks": ["badnets"], "defenses": ["none", "d3"]}
    return [c.key for c in expand(parse_config(cfg)).cells]


def test_bench_cells_hold_the_resolved_flip():
    # CIFAR-10 cells keep their keys (the reference flips there, as distox always did) ...
    assert _grid_keys("cifar10") == _grid_keys("cifar10", flip=True) != _grid_keys("cifar10", flip=False)
    # ... elsewhere the default is now no flip: new keys where the flip used to be on
    assert _grid_keys("fashion-mnist") == _grid_keys("fashion-mnist", flip=False) != _grid_keys(
        "fashion-mnist", flip=True)
    cells = expand(parse_config({"datasets": ["mnist", "cifar10"], "attacks": ["badnets"]})).attacks
    assert {c.config["dataset"]: c.config["flip"] for c in cells} == {"mnist": False, "cifar10": True}
