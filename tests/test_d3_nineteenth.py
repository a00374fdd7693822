"""The nineteenth round of the default study (BENCHMARKS.md): the final classifier's distance weighted
apart from the other selected weights (``classifier_weight``, an option off in every preset)."""
from __future__ import annotations

import pytest
import torch

from distox.defenses import D3, DefenseError

from .conftest import make_bundle
from .test_d3_eighteenth import FlatHead


def travelled(before: torch.nn.Module, after: torch.nn.Module, name: str) -> float:
    a, b = dict(before.named_parameters())[name].detach(), dict(after.named_parameters())[name].detach()
    return float((b - a).norm())


def test_classifier_weight_pushes_the_classifier_alone_harder():
    """With every weight in the distance and no warm start, a classifier weight of 11 moves the
    final classifier farther in the same steps; 1 is the paper's sum, bit for bit, and is left out of
    the record."""
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=2, batch_size=16, lr=0.01, blend=0.0, seed=0)
    start = FlatHead()
    plain = D3(**common)(FlatHead(), retain, device="cpu", progress=False)
    once = D3(classifier_weight=1, **common)(FlatHead(), retain, device="cpu", progress=False)
    heavy = D3(classifier_weight=11, **common)(FlatHead(), retain, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), once.model.state_dict().values()))
    assert "classifier_weight" not in plain.config and heavy.config["classifier_weight"] == 11.0
    assert travelled(start, heavy.model, "fc.weight") > 1.5 * travelled(start, plain.model, "fc.weight")
    for name in ("fc.weight", "hidden.weight", "conv.weight"):  # the norm constraint (Eq. 2) still holds
        assert torch.isclose(dict(heavy.model.named_parameters())[name].norm(),
                             dict(start.named_parameters())[name].norm(), rtol=1e-4)


@pytest.mark.parametrize("bad", [0, -1.0, True, "11"])
def test_classifier_weight_must_be_a_positive_number(bad):
    with pytest.raises(DefenseError, match="classifier_weight must be a number > 0"):
        D3(classifier_weight=bad)
