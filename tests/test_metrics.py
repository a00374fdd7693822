"""ACC / ASR / RA / DER (SPEC §2)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distox.attacks import create
from distox.metrics import BackdoorTestSet, der, evaluate, round_metrics, round_value

from .conftest import make_bundle


class Fixed(nn.Module):
    """Predicts class 0 when the bottom-right pixel is white, else the brightest row band."""

    def forward(self, x):
        logits = torch.zeros(len(x), 4)
        band = x[:, 0, :, :8].mean(-1).view(len(x), 4, 4).mean(-1).argmax(1)
        logits[torch.arange(len(x)), band] = 1.0
        trig = x[:, 0, -1, -1] == 1.0
        logits[trig] = torch.tensor([5.0, 0, 0, 0])
        return logits


def test_acc_asr_ra_on_a_known_model():
    b = make_bundle(n_test=40)
    atk = create("badnets")
    atk.check_data(b)
    bd = atk.backdoor_test_set(b.test)
    assert len(bd) == 30 and (bd.true != 0).all()  # all-to-one drops target-class images
    m = evaluate(Fixed(), b.test.x, b.test.y, bd, device="cpu")
    assert m == {"acc": 100.0, "asr": 100.0, "ra": 0.0}


def test_ra_counts_true_labels_and_all2all_keeps_every_image():
    b = make_bundle(n_test=40)
    atk = create("badnets", mode="all2all")
    atk.check_data(b)
    bd = atk.backdoor_test_set(b.test)
    assert len(bd) == 40 and torch.equal(bd.target, (bd.true + 1) % 4)
    clean_bd = BackdoorTestSet(b.test.x, torch.zeros_like(b.test.y), b.test.y)
    assert evaluate(Fixed(), b.test.x, b.test.y, clean_bd, device="cpu")["ra"] == 100.0


def test_der_formula_in_percent():
    before = {"acc": 92.0, "asr": 96.0}
    assert der(before, {"acc": 90.0, "asr": 1.0}) == pytest.approx(100 * (0.95 - 0.02 + 1) / 2)  # 96.5
    assert der(before, {"acc": 93.0, "asr": 99.0}) == pytest.approx(50.0)  # no credit for gains


def test_round_metrics_two_decimals_for_percentages_six_digits_otherwise():
    rec = {"acc": 16.509999334812164, "der": 74.2183, "before": {"asr": 99.99999}, "loss": 2.3158996685753066,
           "lr": 0.00853553390593, "epoch": 3, "name": "d3", "rows": [{"ra": 1.005}, 0.1 + 0.2],
           "nan": float("nan"), "flag": True}
    out = round_metrics(rec)
    assert out["acc"] == 16.51 and out["der"] == 74.22 and out["before"] == {"asr": 100.0}
    assert out["loss"] == 2.3159 and out["lr"] == 0.00853553 and out["rows"][1] == 0.3
    assert out["epoch"] == 3 and out["name"] == "d3" and out["flag"] is True and math.isnan(out["nan"])
    assert out["rows"][0]["ra"] in (1.0, 1.01)  # two decimals (binary 1.005 rounds either way)
    assert round_value(16.509999334812164, percent=True) == 16.51 and round_value(123456789.0) == 123457000.0


def test_evaluation_and_the_retain_check_restore_each_modules_own_mode():
    """A model whose BatchNorm was set to eval on purpose, the rest training, keeps exactly
    that after it is evaluated or checked (they used to reset every module to the top flag)."""
    from distox.defenses.base import check_retain
    from distox.models.selection import forward_order

    bundle = make_bundle(n_train=8)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 4))
    model.train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    evaluate(model, bundle.train.x, bundle.train.y, device="cpu")
    check_retain(model, bundle.train, torch.device("cpu"))
    forward_order(model, bundle.train.x)
    assert [m.training for m in model.modules()] == modes
