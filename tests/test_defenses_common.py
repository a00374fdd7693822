"""What every registered defense promises, checked on all of them at once (issue 14): the input
model is never modified, the same seed gives identical weights, and no test label reaches a
defense — a run scored every epoch by an evaluator (test images with their labels) ends with
exactly the weights of a run without one."""
from __future__ import annotations


import pytest
import torch
from torch import nn

import distox
from distox.defenses import create, list as defense_names
from distox.metrics import Evaluator
from distox.models import create_model

from .conftest import make_bundle

#: The smallest budget of each defense that still runs every phase (search, pruning, unlearning...).
TINY: dict[str, dict] = {
    "d3": dict(epochs=2, batch_size=16),
    "ft": dict(epochs=2, batch_size=16, augment=False),
    "ft-sam": dict(epochs=2, batch_size=16, augment=False),
    "sau": dict(epochs=1, batch_size=16, augment=False),
    "fp": dict(epochs=1, batch_size=16, augment=False),
    "nad": dict(teacher_epochs=1, epochs=1, batch_size=16, augment=False),
    "nc": dict(nc_epochs=2, epochs=1, batch_size=16, augment=False),
    "anp": dict(epochs=2, batch_size=16, augment=False),
    "i-bau": dict(epochs=2, batch_size=16, augment=False),
}


def _model() -> nn.Module:
    torch.manual_seed(3)
    return create_model("small_cnn", 4, 1, (0.5,), (0.5,), width=4)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_registered_defense_is_covered():
    assert set(defense_names()) == set(TINY)


@pytest.mark.parametrize("method", sorted(TINY))
def test_input_untouched_seeded_and_blind_to_test_labels(method):
    bundle = make_bundle(n_train=48, n_test=24)
    model = _model()
    before = _state(model)
    run = lambda evaluator=None: create(method, seed=5, **TINY[method])(  # noqa: E731
        model, bundle.train, evaluator=evaluator, device="cpu", progress=False)
    plain = _state(run().model)
    assert _same(_state(model), before), "the input model was modified"
    assert _same(_state(run().model), plain), "the same seed gave other weights"
    scored = run(Evaluator(bundle.test.x, bundle.test.y, device="cpu"))
    assert _same(_state(scored.model), plain), "scoring on test data changed the weights"
    assert scored.history and "acc" in scored.history[-1] or method == "nc"  # the evaluator did run


@pytest.mark.parametrize("method", sorted(TINY))
def test_reachable_by_name_through_purify(method):
    bundle = make_bundle(n_train=40, n_test=20)
    result = distox.purify(_model(), (bundle.train.x, bundle.train.y), method=method, seed=5, **TINY[method],
                           eval_data=(bundle.test.x, bundle.test.y), verbose=False, label_check="off",
                           tolerance=None)
    assert result.method == method and "acc" in result.info["after"]


@pytest.mark.parametrize("method", sorted(TINY))
def test_caller_random_state_left_as_it_was(method):
    """Training seeds torch's global generator; a defense forks it, so what the caller draws
    afterwards (a new model's initial weights, say) does not depend on having run one."""
    bundle = make_bundle(n_train=40, n_test=20)
    model = _model()
    torch.manual_seed(11)
    expected = torch.rand(5)
    torch.manual_seed(11)
    create(method, seed=5, **TINY[method])(model, bundle.train, device="cpu", progress=False)
    assert torch.equal(torch.rand(5), expected)
