"""The attack runner's check on a trained model's BatchNorm running statistics
(distox.experiment.bn_check): it reports drift only where re-gathered statistics recover the
accuracy, never changes the model, and an attack run records and warns about it."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from distox.experiment import run_attack
from distox.experiment.bn_check import GAP, batchnorm_check
from distox.metrics import evaluate
from distox.training import LoopConfig, train

from .conftest import make_bundle
from .test_experiment import tiny_spec


def trained_bn_model(bundle) -> nn.Module:
    torch.manual_seed(0)
    c = bundle.image_shape[0]
    model = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, bundle.num_classes))
    train(model, bundle.train.x, bundle.train.y, LoopConfig(epochs=6, batch_size=32, lr=0.05, augment=False),
          device="cpu", progress=False)
    return model.eval()


def drift(model: nn.Module) -> None:
    """Every BatchNorm layer's running statistics far from the data's, as a late high learning rate leaves them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(5.0)
                m.running_var.mul_(0.01)


@pytest.fixture(scope="module")
def bundle():
    return make_bundle(n_train=240, n_test=120, side=16, seed=3)


def test_drifted_statistics_are_reported_and_the_model_left_as_it_is(bundle):
    model = trained_bn_model(bundle)
    clean = evaluate(model, bundle.test.x, bundle.test.y, device="cpu")["acc"]
    drift(model)
    acc = evaluate(model, bundle.test.x, bundle.test.y, device="cpu")["acc"]
    assert acc < clean - GAP  # the corruption is real
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = batchnorm_check(model, bundle.train.x, bundle.test.x, bundle.test.y, acc, clean)
    assert found is not None and found["acc_reestimated"] > acc + GAP
    assert found["acc"] == round(acc, 2) and found["clean_acc"] == round(clean, 2)
    assert found["images"] == len(bundle.train.x)  # fewer than CHECK_IMAGES: all of them
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_no_check_without_a_reference_near_it_or_without_batchnorm(bundle):
    model = trained_bn_model(bundle)
    clean = evaluate(model, bundle.test.x, bundle.test.y, device="cpu")["acc"]
    args = (bundle.train.x, bundle.test.x, bundle.test.y)
    assert batchnorm_check(model, *args, clean, clean) is None  # as accurate as its reference
    drift(model)
    acc = evaluate(model, bundle.test.x, bundle.test.y, device="cpu")["acc"]
    assert batchnorm_check(model, *args, acc, None) is None  # no reference known
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * bundle.image_shape[0], bundle.num_classes))
    assert batchnorm_check(plain, *args, 10.0, 90.0) is None
    # a model that is simply worse than its reference, statistics fine: re-gathering gains nothing
    # (a reference claimed 20 points better than the model really is)
    fine = trained_bn_model(bundle)
    real = evaluate(fine, bundle.test.x, bundle.test.y, device="cpu")["acc"]
    assert batchnorm_check(fine, *args, real, real + 2 * GAP) is None


def test_attack_run_records_and_warns_about_drifted_statistics(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DISTOX_CACHE", str(tmp_path / "cache"))
    spec = tiny_spec(epochs=8, clean_reference=True)

    def drift_at_end(epoch, model):
        if epoch == spec.epochs:
            drift(model)
        return None

    with caplog.at_level(logging.WARNING):
        metrics = run_attack(spec, tmp_path / "run", device="cpu", progress=False, on_epoch_end=drift_at_end)
    record = json.loads((tmp_path / "run" / "attack.json").read_text())
    found = record["batchnorm_check"]
    assert found is not None and found["acc"] == metrics["acc"] and found["clean_acc"] == metrics["clean_acc"]
    assert found["acc_reestimated"] > metrics["acc"] + GAP
    assert "BatchNorm running statistics" in caplog.text
    untouched = run_attack(tiny_spec(epochs=8, clean_reference=True), tmp_path / "plain", device="cpu",
                           progress=False)
    assert json.loads((tmp_path / "plain" / "attack.json").read_text())["batchnorm_check"] is None
    assert untouched["acc"] > untouched["clean_acc"] - GAP
