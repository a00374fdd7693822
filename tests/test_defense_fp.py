"""FP (Fine-Pruning): the pruned units are the least-activated classifier inputs, the model no
longer depends on them, the sweep keeps the last level within the tolerance and prunes exactly
its count, bad input gives DefenseError; input untouched, same seed => same weights."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import distox
import distox.defenses.fp as fpmod
from distox.data.core import ImageSplit
from distox.defenses import FP, DefenseError, create
from distox.defenses.fp import InputMask, Units, find_classifier, find_units, prune_sweep, unit_means
from distox.defenses.heldout import split_retain
from distox.training import LoopConfig, train

from .conftest import make_bundle, tiny_model


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, ImageSplit]:
    """A small CNN trained on the synthetic bands, and a retain set of 60 images."""
    bundle = make_bundle(n_train=120, n_test=60)
    model = tiny_model()
    train(model, bundle.train.x, bundle.train.y, LoopConfig(epochs=6, batch_size=32, lr=0.05),
          device="cpu", progress=False)
    return model.eval(), bundle.test


def channel_means(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of each channel of the (N, C, 2, 2) map flattened into the classifier, by hand."""
    maps = []
    h = model.net.features.register_forward_hook(lambda m, a, out: maps.append(out.detach().clone()))
    with torch.no_grad():
        model.eval()(x)
    h.remove()
    return maps[0].mean(dim=(0, 2, 3))


def perturb_channels(model: nn.Module, x: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """Logits with large noise added to ``channels`` of the map that feeds the classifier."""
    gen = torch.Generator().manual_seed(5)

    def add(m, a, out):
        out = out.clone()
        out[:, channels] += 10.0 * torch.randn(out[:, channels].shape, generator=gen)
        return out

    h = model.net.features.register_forward_hook(add)
    with torch.no_grad():
        logits = model.eval()(x)
    h.remove()
    return logits


def test_classifier_input_and_channel_units_are_found():
    model = tiny_model()
    x = torch.rand(2, 1, 16, 16)
    name, layer = find_classifier(model, x)
    assert name == "net.fc" and layer is model.net.fc
    units = find_units(model, layer, x)  # fc's input is the flattened (8, 2, 2) pooled map
    assert (units.features, units.group, units.count, units.kind) == (32, 4, 8, "channel")
    assert find_units(model, layer, x, "feature") == Units(32, 1)
    assert torch.equal(units.feature_mask(torch.tensor([1.0, 0.0] * 4))[:8], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_pruned_channels_are_the_lowest_activation_ones(trained):
    model, retain = trained
    fp = FP(epochs=1, batch_size=32, acc_ratio=0.5)
    work = copy.deepcopy(model)
    mask = fp.prune(work, retain, torch.device("cpu"))
    k = fp.pruning_resolved["pruned"]
    assert 0 < k < 8
    train_part, _ = split_retain(retain, fp.val_fraction, fp.seed)  # ranked on the training part
    lowest = torch.argsort(channel_means(model, train_part.x), stable=True)[:k]
    assert sorted(mask.pruned.tolist()) == sorted(lowest.tolist())
    mask.remove()


def test_output_no_longer_depends_on_pruned_channels(trained):
    model, retain = trained
    result = FP(epochs=1, batch_size=32, acc_ratio=0.5)(model, retain, device="cpu", progress=False)
    purified = result.model
    res = result.config["pruning_resolved"]
    assert res["classifier"] == "net.fc" and res["units"] == "channel" and res["pruned"] > 0
    # the mask is folded into the weights: pruned channels' columns are zero, no hook is left
    w = purified.net.fc.weight.detach().view(4, 8, 4)
    pruned = [c for c in range(8) if w[:, c].abs().sum() == 0]
    assert len(pruned) == res["pruned"]
    assert not purified.net.fc._forward_pre_hooks
    x = retain.x[:10]
    with torch.no_grad():
        base = purified.eval()(x)
    assert torch.allclose(perturb_channels(purified, x, pruned), base, atol=1e-6)
    kept = [c for c in range(8) if c not in pruned]
    assert not torch.allclose(perturb_channels(purified, x, kept[:1]), base, atol=1e-3)
    # an ordinary state dict: loads strictly into a fresh model and computes the same logits
    fresh = tiny_model(seed=9)
    fresh.load_state_dict(purified.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), base)


def test_sweep_keeps_last_level_within_tolerance_and_prunes_exact_counts(monkeypatch):
    model = tiny_model()
    layer = model.net.fc
    mask = InputMask(layer, Units(32, 4))
    order = torch.tensor([5, 2, 7, 0, 1, 3, 4, 6])
    # held-out accuracy by number of pruned units; 10 % relative of 90 is 9 points
    table = {0: 90.0, 2: 88.0, 4: 82.0, 6: 80.0}
    seen = []

    def fake_accuracy(m, held, device):
        n = len(mask.pruned)
        seen.append(n)
        return table[n]

    monkeypatch.setattr(fpmod, "accuracy", fake_accuracy)
    out = prune_sweep(model, mask, order, held=None, acc_ratio=0.1, step=2)
    assert seen == [0, 2, 4, 6]          # exactly 0, s, 2s, ... units (no off-by-one)
    assert out["stopped_at"] == 6        # 80 is more than 9 points below 90
    assert out["pruned"] == 4 and out["heldout_acc_pruned"] == 82.0
    assert sorted(mask.pruned.tolist()) == [0, 2, 5, 7]   # the last acceptable level, not the violating one
    # a rise is no reason to stop (the drop rule is one-sided)
    table.update({2: 99.0, 4: 99.0, 6: 99.0})
    seen.clear()
    assert prune_sweep(model, mask, order, None, 0.1, 2)["pruned"] == 6 and seen == [0, 2, 4, 6]
    mask.remove()


class _PairMean(nn.Module):
    """Eight channels averaged in pairs into four logits: no Linear, no conv with a map per class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(len(x), 4, 2).mean(2)


def test_model_without_classifier_input_gives_defense_error():
    retain = make_bundle(n_train=40).train
    headless = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), _PairMean())
    with pytest.raises(DefenseError, match="no nn.Linear and no such head"):
        FP(epochs=1)(headless, retain, device="cpu", progress=False)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(DefenseError, match="not the final classifier"):
        FP(epochs=1, classifier="1")(mlp, retain, device="cpu", progress=False)
    with pytest.raises(DefenseError, match="not an nn.Linear"):
        FP(epochs=1, classifier="2")(mlp, retain, device="cpu", progress=False)
    FP(epochs=1, batch_size=16)(mlp, retain, device="cpu", progress=False)  # the last Linear works


@pytest.mark.parametrize("kwargs", [{"acc_ratio": 0}, {"acc_ratio": 1.5}, {"once_prune_ratio": 0},
                                    {"val_fraction": 1.0}, {"units": "neuron"}, {"epochs": 0}])
def test_bad_hyper_parameters_raise_defense_error(kwargs):
    with pytest.raises(DefenseError):
        FP(**kwargs)


def test_defaults_are_the_reference_ones():
    fp = FP()
    assert (fp.acc_ratio, fp.once_prune_ratio, fp.epochs, fp.batch_size) == (0.1, 0.01, 100, 256)
    assert (fp.lr, fp.momentum, fp.weight_decay, fp.augment) == (0.01, 0.9, 5e-4, True)
    assert (fp.val_fraction, fp.units, fp.classifier) == (0.2, "channel", None)


def test_input_untouched_and_same_seed_same_weights():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retain = make_bundle(n_train=40).train
    runs = [create("fp", epochs=1, batch_size=16)(model, retain, device="cpu", progress=False) for _ in range(2)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.net.fc._forward_pre_hooks
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(before[k], a[k]) for k in a if a[k].is_floating_point())


def test_purify_runs_fp_by_name():
    bundle = make_bundle(n_train=40, n_test=20)
    assert "fp" in distox.defenses.list()
    res = distox.purify(tiny_model(), (bundle.train.x, bundle.train.y), method="fp", epochs=1, batch_size=16,
                        device="cpu", eval_data=(bundle.test.x, bundle.test.y), verbose=False)
    assert res.method == "fp" and "acc" in res.info["after"] and "pruning_resolved" in res.config


def resumes_bit_identical(make_defense, model: nn.Module, retain: ImageSplit, tmp_path, monkeypatch) -> None:
    """A run interrupted (Ctrl-C) after epoch 1 and resumed from its checkpoint ends with the
    weights of an uninterrupted run (also used by the NAD tests)."""
    from distox import training

    ref = make_defense()(model, retain, device="cpu", progress=False)
    real = training._atomic_torch_save

    def interrupt(obj, path):
        if obj["epoch"] == 2:
            raise KeyboardInterrupt
        return real(obj, path)

    ckpt = tmp_path / "ckpt.pt"
    monkeypatch.setattr(training, "_atomic_torch_save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        make_defense()(model, retain, device="cpu", progress=False, checkpoint=ckpt)
    monkeypatch.setattr(training, "_atomic_torch_save", real)
    resumed = make_defense()(model, retain, device="cpu", progress=False, checkpoint=ckpt)
    assert resumed.resumed_from_epoch == 1
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_is_bit_identical(trained, tmp_path, monkeypatch):
    model, retain = trained
    resumes_bit_identical(lambda: FP(epochs=3, batch_size=32, acc_ratio=0.5), model, retain, tmp_path, monkeypatch)


def test_a_convolutional_class_head_has_its_input_channels_pruned():
    """No nn.Linear: FP prunes the input channels of the 1×1 conv that gives one map per class
    (SqueezeNet-style), ranks them by mean activation, and folds the mask into that conv."""
    torch.manual_seed(0)
    b = make_bundle(n_train=80, n_test=20)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    fp = FP(epochs=1, batch_size=16, acc_ratio=1.0)  # any drop accepted: the sweep prunes all but the last step
    name, layer = find_classifier(model, b.train.x[:2])
    assert name == "2" and isinstance(layer, nn.Conv2d)
    units = find_units(model, layer, b.train.x[:2])
    assert (units.count, units.group, units.kind) == (6, 1, "channel")
    means = unit_means(model, layer, units, b.train.x)
    relu_out = model[1](model[0](b.train.x))
    assert torch.allclose(means, relu_out.mean((0, 2, 3)), atol=1e-5)
    result = fp(model, b.train, device="cpu", progress=False)
    pruned = result.config["pruning_resolved"]["pruned"]
    assert result.config["pruning_resolved"]["classifier"] == "2" and pruned == 5
    head = result.model[2].weight
    assert int((head.abs().sum((0, 2, 3)) == 0).sum()) == pruned  # whole input-channel slices folded to 0
    assert not result.model[2]._forward_pre_hooks  # the mask's hook is gone
