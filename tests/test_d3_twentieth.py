"""The twentieth round of the default study (BENCHMARKS.md): a distance weight per weight by its size
(``layer_weighting="size"``, an option off in every preset)."""
from __future__ import annotations

import pytest
import torch

from distox.defenses import D3
from distox.defenses.d3 import REFERENCE_NORM, median_norm, size_scales

from .conftest import make_bundle
from .test_d3_eighteenth import FlatHead
from .test_d3_nineteenth import travelled


def test_size_scales_weigh_only_weights_larger_than_the_reference():
    norms = [torch.tensor(v) for v in (0.5, REFERENCE_NORM, 2 * REFERENCE_NORM, 30.0)]
    assert size_scales(norms) == pytest.approx([1.0, 1.0, 2.0, 30.0 / REFERENCE_NORM])
    assert size_scales(norms)[:2] == [1.0, 1.0]  # up to the reference: the paper's weight, exactly
    assert REFERENCE_NORM == 5.06  # the VGG Blended development model's median norm (BENCHMARKS.md)


def grown(factor: float) -> FlatHead:
    """FlatHead with its hidden Linear's weight ``factor`` times larger (norm above the reference)."""
    model = FlatHead()
    with torch.no_grad():
        model.hidden.weight.mul_(factor)
    return model


def test_size_weighting_pushes_large_weights_harder_and_leaves_small_models_as_the_paper():
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=2, batch_size=16, lr=0.01, blend=0.0, seed=0)
    small = FlatHead()
    assert max(float(p.norm()) for n, p in small.named_parameters() if n.endswith("weight")) < REFERENCE_NORM
    plain = D3(**common)(small, retain, device="cpu", progress=False)
    sized = D3(layer_weighting="size", **common)(small, retain, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), sized.model.state_dict().values()))
    big = grown(20.0)
    assert float(big.hidden.weight.norm()) > 2 * REFERENCE_NORM
    plain_big = D3(**common)(big, retain, device="cpu", progress=False)
    sized_big = D3(layer_weighting="size", **common)(big, retain, device="cpu", progress=False)
    assert travelled(big, sized_big.model, "hidden.weight") > 1.5 * travelled(big, plain_big.model, "hidden.weight")
    assert torch.isclose(sized_big.model.hidden.weight.norm(), big.hidden.weight.norm(), rtol=1e-4)  # Eq. 2 holds
    assert sized_big.config["layer_weighting"] == "size"


def test_size_median_caps_every_weight_at_the_models_median_norm():
    norms = [torch.tensor(v) for v in (1.0, 8.0, 12.0, 30.0, 40.0)]
    assert median_norm(norms) == 12.0
    assert median_norm([torch.tensor(v) for v in (3.0, 9.0)]) == 3.0  # an even count: the lower middle one
    capped = size_scales(norms, cap=median_norm(norms))
    assert capped == pytest.approx([1.0, 8.0 / REFERENCE_NORM, 12.0 / REFERENCE_NORM, 12.0 / REFERENCE_NORM,
                                    12.0 / REFERENCE_NORM])
    assert capped[3] < size_scales(norms)[3]  # the largest weights are pushed less than under "size"


def test_size_median_leaves_a_model_of_small_weights_as_the_paper_and_runs_on_a_large_one():
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=2, batch_size=16, lr=0.01, blend=0.0, seed=0)
    small = FlatHead()
    plain = D3(**common)(small, retain, device="cpu", progress=False)
    capped = D3(layer_weighting="size-median", **common)(small, retain, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), capped.model.state_dict().values()))
    big = grown(20.0)
    sized = D3(layer_weighting="size", **common)(big, retain, device="cpu", progress=False)
    capped_big = D3(layer_weighting="size-median", **common)(big, retain, device="cpu", progress=False)
    assert capped_big.config["layer_weighting"] == "size-median"
    # the grown hidden weight is the largest of three: capped at the median it travels less than under "size"
    assert travelled(big, capped_big.model, "hidden.weight") < travelled(big, sized.model, "hidden.weight")
