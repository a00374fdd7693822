"""Models in the forms users hand over (issue 13: "works on *their* model"): weights under
weight normalisation or spectral normalisation (parametrized or hook-based), TorchScript,
16- or 64-bit parameters, outputs that are not a logits tensor, log-probability outputs, pruning masks, tied
weights and a DataParallel wrapper."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, prune, spectral_norm, weight_norm

import distox
from distox.defenses import D3
from distox.defenses.base import DefenseError
from distox.defenses.input_prune import prune_inputs
from distox.models import SelectionError, create_model, select_weights

from .conftest import bare_cnn, make_bundle


def _parametrized(kind: str) -> nn.Sequential:
    model = bare_cnn()
    wrap = {"weight_norm": parametrizations.weight_norm, "spectral_norm": parametrizations.spectral_norm,
            "old_weight_norm": weight_norm, "old_spectral_norm": spectral_norm}[kind]
    model[0], model[5], model[7] = wrap(model[0]), wrap(model[5]), wrap(model[7])
    return model


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "old_weight_norm", "old_spectral_norm"])
def test_a_computed_weight_is_selected_by_the_parameter_behind_it(kind):
    """A distance on a stale copy of a computed weight did nothing (or failed in backward, weight
    norm on the classifier); the selection takes the parameter the optimiser trains."""
    model = _parametrized(kind)
    weights = select_weights(model, "all")
    assert list(weights) == ["0.weight", "5.weight", "7.weight"]
    params = {id(p) for p in model.parameters()}
    assert all(isinstance(w, nn.Parameter) and id(w) in params for w in weights.values())
    assert all(w.shape == model[int(n[0])].weight.shape for n, w in weights.items())
    if kind == "weight_norm":  # the direction v, not the magnitude g
        assert weights["7.weight"] is model[7].parametrizations.weight.original1


@pytest.mark.parametrize("kind", ["weight_norm", "old_spectral_norm"])
def test_d3_turns_weights_under_weight_or_spectral_norm(kind):
    bundle = make_bundle(n_train=48)
    model = _parametrized(kind)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = D3(preset="all-layers", epochs=2, batch_size=16, norm_rule=False)(model, bundle.train, device="cpu",
                                                                             progress=False)
    assert result.history[-1]["distance"] > 0.5
    moved = {k: w.detach() for k, w in select_weights(result.model, "all").items()}
    original = {k: w.detach() for k, w in select_weights(model, "all").items()}
    for name in moved:  # every turned weight kept the norm it started with (the projection acts on it)
        assert torch.linalg.vector_norm(moved[name]) == pytest.approx(float(torch.linalg.vector_norm(original[name])), rel=1e-4)
        assert not torch.equal(moved[name], original[name])
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_input_pruning_leaves_a_weight_normalised_first_linear_alone(caplog):
    bundle = make_bundle(n_train=48)
    model = nn.Sequential(nn.Flatten(), parametrizations.weight_norm(nn.Linear(256, 16)), nn.ReLU(), nn.Linear(16, 4))
    with caplog.at_level(logging.INFO, logger="distox.defenses.input_prune"):
        assert prune_inputs(model, bundle.train) == {"layer": None, "pruned": 0}
    assert "computed" in caplog.text


def test_no_single_parameter_behind_a_weight_is_a_clear_error():
    layer = nn.Linear(3, 2)
    del layer.weight
    layer.weight = torch.ones(2, 3)  # a plain tensor, nothing trains it
    with pytest.raises(SelectionError, match="weight is computed"):
        select_weights(nn.Sequential(layer), "all")


def test_torchscript_is_refused_with_a_way_out():
    bundle = make_bundle(n_train=24)
    scripted = torch.jit.script(bare_cnn())
    with pytest.raises(DefenseError, match="TorchScript.*nn.Module"):
        distox.purify(scripted, (bundle.train.x, bundle.train.y), epochs=1, verbose=False, label_check="off")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_16_or_64_bit_model_is_trained_in_float32_and_the_callers_model_kept(dtype, caplog):
    bundle = make_bundle(n_train=48, n_test=24)
    model = bare_cnn().to(dtype)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        result = distox.purify(model, (bundle.train.x, bundle.train.y), epochs=1, verbose=False,
                               eval_data=(bundle.test.x, bundle.test.y), label_check="warn", tolerance=None)
    assert f"parameters are {str(dtype).removeprefix('torch.')}" in caplog.text and "float32 copy" in caplog.text
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    assert "acc" in result.info["before"] and "acc" in result.info["after"]
    assert all(v.dtype == start[k].dtype and torch.equal(v, start[k]) for k, v in model.state_dict().items())


class _Pair(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.net, self.as_dict = bare_cnn(), as_dict

    def forward(self, x: torch.Tensor):
        logits = self.net(x)
        return {"logits": logits} if self.as_dict else (logits, x.mean())


@pytest.mark.parametrize("as_dict", [False, True])
def test_an_output_that_is_not_a_tensor_says_how_to_wrap_the_model(as_dict):
    """A defense called directly refuses it (``distox.purify`` takes the logits out itself:
    tests/test_outputs.py)."""
    bundle = make_bundle(n_train=24)
    with pytest.raises(DefenseError, match=r"got (tuple|dict): wrap it .*model\(x\)\[0\].*logits_view"):
        D3(epochs=1)(_Pair(as_dict), bundle.train, device="cpu", progress=False)


def test_tutorial_cnn_outputs_log_probabilities_and_d3_restarts_its_classifier():
    """``tutorial_cnn`` (PyTorch's MNIST example layout) ends in log_softmax: D3's cross-entropy
    is unchanged by it (log_softmax is idempotent), and the default's warm start finds ``fc``."""
    model = create_model("tutorial_cnn", 4, 1, (0.5,), (0.5,), image_size=16)
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(model(x).exp().sum(1), torch.ones(3), atol=1e-5)
    assert list(select_weights(model, "auto", x)) == ["net.fc.weight"]
    with pytest.raises(ValueError, match="tutorial_cnn takes 16x16"):
        model(torch.rand(1, 1, 28, 28))
    bundle = make_bundle(n_train=48)
    result = D3(epochs=1, batch_size=16)(model, bundle.train, device="cpu", progress=False)
    assert result.config["norm_rule_resolved"]["batchnorm"] is False
    assert not torch.equal(result.model.net.fc.weight, model.net.fc.weight)


def test_fp_refuses_a_parametrized_classifier_it_could_not_fold_into():
    bundle = make_bundle(n_train=24)
    model = _parametrized("weight_norm")
    with pytest.raises(DefenseError, match="computed weight .*remove_parametrizations"):
        distox.purify(model, (bundle.train.x, bundle.train.y), method="fp", epochs=1, verbose=False,
                      label_check="off")


def test_a_softmax_output_is_refused_and_log_probabilities_are_not():
    """Cross-entropy of probabilities taken for logits barely trains (a final nn.Softmax, common in
    ported models); log-probabilities are fine. A defense called directly refuses probabilities
    (``distox.purify`` trains on their log itself: tests/test_outputs.py)."""
    bundle = make_bundle(n_train=24)
    probs = nn.Sequential(bare_cnn(), nn.Softmax(dim=1))
    with pytest.raises(DefenseError, match=r"returns probabilities .*torch.log\(model\(x\)\)"):
        D3(epochs=1)(probs, bundle.train, device="cpu", progress=False)
    log_probs = nn.Sequential(bare_cnn(), nn.LogSoftmax(dim=1))
    distox.purify(log_probs, (bundle.train.x, bundle.train.y), epochs=1, verbose=False, label_check="off")


@pytest.mark.parametrize("method", ["d3", "ft"])
def test_frozen_layers_are_trained_and_get_their_flags_back(method, caplog):
    """A backdoor can sit in a frozen (pretrained) backbone under a fine-tuned head: a leftover
    ``requires_grad=False`` must not hide it from the defense. Before, the stem stayed where it was."""
    bundle = make_bundle(n_train=48)
    model = bare_cnn()
    model[0].requires_grad_(False)
    start = model[0].weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        result = distox.purify(model, (bundle.train.x, bundle.train.y), method=method, epochs=1, verbose=False,
                               label_check="off")
    assert "2 of the model's 8 parameter tensors had requires_grad=False" in caplog.text
    assert not torch.equal(result.model[0].weight, start)
    assert [p.requires_grad for p in result.model.parameters()] == [p.requires_grad for p in model.parameters()]
    assert torch.equal(model[0].weight, start) and not model[0].weight.requires_grad  # the caller's model as it was


def test_an_all_zero_selected_weight_is_named_in_a_warning(caplog):
    """The norm constraint pins a zero weight at zero (torchvision's ViT head before training)."""
    bundle = make_bundle(n_train=32)
    model = bare_cnn()
    with torch.no_grad():
        model[7].weight.zero_()
    with caplog.at_level(logging.WARNING):
        result = D3(epochs=1, batch_size=16)(model, bundle.train, device="cpu", progress=False)
    assert "D3: 7.weight is all zeros" in caplog.text
    assert not result.model[7].weight.any()


def test_a_pruned_model_keeps_its_mask_and_its_zeros():
    """``torch.nn.utils.prune`` computes ``weight`` from ``weight_orig`` and a mask before each forward: D3 moves
    the parameter behind it, and the pruned entries stay zero in the purified model (the caller's untouched)."""
    bundle = make_bundle(n_train=48)
    model = bare_cnn()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    mask, start = model[0].weight_mask.clone(), model[0].weight_orig.detach().clone()
    result = distox.purify(model, (bundle.train.x, bundle.train.y), epochs=1, verbose=False, label_check="off")
    purified = result.model[0]
    assert torch.equal(purified.weight_mask, mask)
    assert bool((purified.weight[mask == 0] == 0).all()) and not torch.equal(purified.weight_orig, start)
    assert torch.equal(model[0].weight_orig, start)


class _Tied(nn.Module):
    """Two convolutions sharing one weight, as a model that reuses a block."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.first, self.second = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.second.weight = self.first.weight
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        return self.head(torch.relu(self.second(torch.relu(self.first(x)))).mean((2, 3)))


def test_tied_weights_stay_tied_and_a_data_parallel_wrapper_comes_back_as_one():
    bundle = make_bundle(n_train=48)
    retain = (bundle.train.x, bundle.train.y)
    tied = _Tied()
    start = tied.first.weight.detach().clone()
    result = distox.purify(tied, retain, epochs=1, verbose=False, label_check="off")
    assert result.model.second.weight is result.model.first.weight
    assert not torch.equal(result.model.first.weight, start) and torch.equal(tied.first.weight, start)
    wrapped = nn.DataParallel(bare_cnn())
    head = wrapped.module[-1].weight.detach().clone()
    result = distox.purify(wrapped, retain, epochs=1, verbose=False, label_check="off")
    assert isinstance(result.model, nn.DataParallel)
    assert not torch.equal(result.model.module[-1].weight, head)
