"""ACC / ASR / RA / DER (SPEC §2)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distox.attacks import create
from distox.metrics import BackdoorTestSet, der, evaluate

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


def test_der_formula():
    before = {"acc": 92.0, "asr": 96.0}
    assert der(before, {"acc": 90.0, "asr": 1.0}) == pytest.approx((0.95 - 0.02 + 1) / 2)
    assert der(before, {"acc": 93.0, "asr": 99.0}) == pytest.approx(0.5)  # no credit for gains
