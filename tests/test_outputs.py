"""Models whose forward returns more than a logits tensor (Hugging Face ``ModelOutput``/dicts,
``(logits, features)`` tuples, torchvision GoogLeNet's training-mode named tuple, a final softmax):
``distox.purify`` trains on their logits and hands back the caller's own module
(:mod:`distox.models.outputs`)."""
from __future__ import annotations

import types
from collections import namedtuple

import pytest
import torch
from torch import nn

import distox
from distox.defenses.base import DefenseError
from distox.models.outputs import LogitsOnly, logits_tensor, logits_view, unwrap

from .conftest import bare_cnn, make_bundle

AuxOutputs = namedtuple("AuxOutputs", ["logits", "aux_logits"])


class Structured(nn.Module):
    """The same network with its logits inside ``form``; ``"aux"`` as GoogLeNet: a named tuple
    with an auxiliary head's output in training mode only, a tensor in evaluation mode."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.net, self.form = bare_cnn(), form
        self.aux = nn.Linear(256, 4) if form == "aux" else None

    def forward(self, x: torch.Tensor):
        logits = self.net(x)
        if self.form == "dict":
            return {"logits": logits, "hidden": x.mean()}
        if self.form == "namespace":
            return types.SimpleNamespace(loss=None, logits=logits)
        if self.form == "tuple":
            return logits, x.flatten(1)
        if self.form == "softmax":
            return logits.softmax(1)
        if self.training:
            return AuxOutputs(logits, self.aux(x.flatten(1)))
        return logits


def test_logits_tensor_finds_the_logits_or_says_none():
    t = torch.zeros(2, 3)
    assert logits_tensor(t) is t
    assert logits_tensor({"logits": t, "x": 1}) is t
    assert logits_tensor(types.SimpleNamespace(logits=t)) is t
    assert logits_tensor((t, torch.ones(1))) is t and logits_tensor([t]) is t
    assert logits_tensor(AuxOutputs(t, None)) is t
    assert logits_tensor({"scores": t}) is None and logits_tensor((None, t)) is None and logits_tensor(3) is None


def test_a_model_returning_logits_is_not_wrapped():
    model = bare_cnn()
    assert logits_view(model, torch.rand(2, 1, 16, 16)) is model


@pytest.mark.parametrize("form", ["dict", "namespace", "tuple", "aux", "softmax"])
def test_the_view_returns_logits_in_both_modes_and_probing_leaves_no_trace(form):
    model = Structured(form).train()
    x = torch.rand(2, 1, 16, 16)
    stats = [b.clone() for b in model.buffers()]
    torch.manual_seed(7)
    view = logits_view(model, x)
    after_probe = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_probe, torch.rand(3))  # the global random state is where it was
    assert model.training and all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert isinstance(view, LogitsOnly) and view.model is model and unwrap(view) is model
    for mode in (True, False):
        view.train(mode)
        out = view(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
    expected = model.eval().net(x)
    assert torch.allclose(view.eval()(x), expected.log_softmax(1) if form == "softmax" else expected, atol=1e-5)


def test_a_structure_without_logits_is_left_for_the_usual_refusal():
    class Scores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = bare_cnn()

        def forward(self, x):
            return {"scores": self.net(x)}

    model = Scores()
    assert logits_view(model, torch.rand(2, 1, 16, 16)) is model
    bundle = make_bundle(n_train=24)
    with pytest.raises(DefenseError, match="got dict: wrap it"):
        distox.purify(model, (bundle.train.x, bundle.train.y), epochs=1, verbose=False)


@pytest.mark.parametrize("form", ["dict", "tuple", "aux"])
def test_purify_trains_the_same_weights_as_on_the_bare_network_and_returns_the_callers_module(form):
    """Taking the logits out changes nothing the defense computes: the purified weights equal, to
    the bit, those purified from the bare network (same draws, same order), and the returned model
    is the caller's class, still returning its structure."""
    bundle = make_bundle(n_train=48)
    data, held = (bundle.train.x, bundle.train.y), (bundle.test.x, bundle.test.y)
    model = Structured(form)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = distox.purify(model, data, epochs=2, verbose=False, eval_data=held, tolerance=None,
                            label_check="off")
    bare = distox.purify(bare_cnn(), data, epochs=2, verbose=False, eval_data=held, tolerance=None,
                         label_check="off")
    assert type(wrapped.model) is Structured
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())  # the caller's model untouched
    for name, tensor in bare.model.state_dict().items():
        assert torch.equal(wrapped.model.net.state_dict()[name], tensor), name
    assert wrapped.info["after"] == bare.info["after"] and wrapped.history == bare.history
    out = wrapped.model.eval()(bundle.test.x[:2])
    assert isinstance(out, dict if form == "dict" else tuple if form == "tuple" else torch.Tensor)


def test_purify_trains_a_softmax_model_on_its_log_probabilities():
    """Before, a model ending in softmax was refused by purify; its log-probabilities train as a
    log_softmax model does (same draws; equal up to float rounding of log(softmax))."""
    bundle = make_bundle(n_train=48)
    data = (bundle.train.x, bundle.train.y)
    soft = distox.purify(Structured("softmax"), data, epochs=2, verbose=False, label_check="off")
    logsoft = distox.purify(nn.Sequential(bare_cnn(), nn.LogSoftmax(1)), data, epochs=2, verbose=False, label_check="off")
    assert type(soft.model) is Structured
    assert torch.allclose(soft.model.eval()(bundle.test.x).sum(1), torch.ones(len(bundle.test.x)), atol=1e-5)
    for (name, a), b in zip(soft.model.net.state_dict().items(), logsoft.model[0].state_dict().values()):
        assert torch.allclose(a, b, atol=1e-4), name


@pytest.mark.parametrize("method", distox.defenses.list())
def test_every_defense_runs_on_a_model_returning_an_object_with_logits(method):
    """Hugging Face models return an object with ``.logits``: every defense trains on them through
    ``distox.purify`` and returns the caller's class."""
    bundle = make_bundle(n_train=32)
    result = distox.purify(Structured("namespace"), (bundle.train.x, bundle.train.y), method=method, epochs=1,
                           verbose=False, label_check="off")
    assert type(result.model) is Structured
    assert logits_tensor(result.model.eval()(bundle.test.x[:2])).shape == (2, 4)


def test_probing_a_model_with_dropout_leaves_the_global_random_state_alone():
    """The training-mode probe runs dropout, which draws from torch's generator: forked and
    restored (``purify`` leaves the caller's random state as it found it)."""
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(256, 4), nn.Softmax(1))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert isinstance(logits_view(model, torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))),
                      LogitsOnly)
    assert torch.equal(torch.rand(4), expected)
