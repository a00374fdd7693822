"""Input pruning (:mod:`distox.defenses.input_prune`, the ``default`` preset's ``input_prune``)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distox.data.core import ImageSplit
from distox.defenses import D3, DefenseError
from distox.defenses.input_prune import prune_inputs
from distox.metrics import logits
from distox.models import create_model


def _mlp_and_retain(n: int = 200, blank: int = 4, bias: bool = True) -> tuple[nn.Module, ImageSplit]:
    """An untrained MLP on 8×8 images whose bottom ``blank`` rows are always 0, with the model's own
    predictions as labels (retain accuracy 100 %)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32, bias=bias), nn.ReLU(), nn.Linear(32, 4))
    x = torch.rand(n, 1, 8, 8)
    x[:, :, 8 - blank:, :] = 0.0
    return model, ImageSplit(x, logits(model, x).argmax(1))


def test_constant_inputs_are_pruned_and_a_trigger_there_no_longer_acts():
    model, retain = _mlp_and_retain()
    before = logits(model, retain.x)
    report = prune_inputs(model, retain, tolerance="auto")
    first = model[1]
    blank_cols = torch.arange(32, 64)  # rows 4-7 of the flattened 8×8 image
    assert report["layer"] == "1" and report["features"] == 64 and report["pruned"] >= 32
    assert torch.all(first.weight[:, blank_cols] == 0)
    assert report["acc"] >= report["start_acc"] - report["tolerance"]
    if report["pruned"] == 32:  # exactly the constant inputs: every retain output is unchanged
        assert torch.allclose(logits(model, retain.x), before, atol=1e-5)
    triggered = retain.x.clone()
    triggered[:, :, 5:8, 5:8] = 1.0  # a white patch where clean images are always blank
    assert torch.equal(logits(model, triggered), logits(model, retain.x))


def test_pruning_stops_where_retain_accuracy_would_leave_the_tolerance():
    model, retain = _mlp_and_retain(blank=0)  # no constant input: every pruned column costs something
    report = prune_inputs(model, retain, tolerance=0.0)
    assert report["acc"] == pytest.approx(100.0) and report["pruned"] < 64
    model2, retain2 = _mlp_and_retain(blank=0)
    wide = prune_inputs(model2, retain2, tolerance=100.0)  # anything goes: every input
    assert wide["pruned"] == 64 and torch.all(model2[1].weight == 0)


def test_a_linear_without_bias_has_its_constant_columns_zeroed():
    model, retain = _mlp_and_retain(bias=False)
    report = prune_inputs(model, retain, tolerance="auto")
    assert report["pruned"] >= 32 and torch.all(model[1].weight[:, 32:] == 0) and model[1].bias is None


def test_a_model_that_starts_with_a_convolution_is_left_as_it_is():
    model = create_model("small_cnn", 4, 1, width=4)
    retain = ImageSplit(torch.rand(16, 1, 16, 16), torch.arange(16) % 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert prune_inputs(model, retain) == {"layer": None, "pruned": 0}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


class _TokenMLP(nn.Module):
    """Rows of the image as tokens, one Linear applied to every token (a Linear on a sequence)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.embed(x[:, 0])).mean(1))  # (B, 8 tokens, 8) → (B, 4)


def test_a_linear_on_tokens_is_pruned_per_feature():
    torch.manual_seed(0)
    model = _TokenMLP()
    x = torch.rand(64, 1, 8, 8)
    x[..., 6:] = 0.0  # the last two features of every token are blank
    retain = ImageSplit(x, logits(model, x).argmax(1))
    report = prune_inputs(model, retain)
    assert report["layer"] == "embed" and report["features"] == 8 and report["pruned"] >= 2
    assert torch.all(model.embed.weight[:, 6:] == 0)


def test_the_default_prunes_an_mlp_and_the_faithful_presets_do_not():
    retain = ImageSplit(torch.rand(48, 1, 28, 28), torch.arange(48) % 4)
    retain.x[:, :, 24:, :] = 0.0
    mlp = create_model("small_mlp", 4, 1, width=8)
    result = D3(epochs=1)(mlp, retain, device="cpu", progress=False)
    resolved = result.config["input_prune_resolved"]
    assert result.config["input_prune"] is True and resolved["layer"] == "net.hidden.0" and resolved["pruned"] >= 112
    for off in (D3(preset="reference", epochs=1), D3(preset="paper", epochs=1), D3(epochs=1, input_prune=False)):
        config = off(mlp, retain, device="cpu", progress=False).config
        assert "input_prune" not in config and "input_prune_resolved" not in config
    cnn = D3(epochs=1)(create_model("small_cnn", 4, 1, width=4), retain, device="cpu", progress=False)
    assert cnn.config["input_prune_resolved"] == {"layer": None, "pruned": 0}
    with pytest.raises(DefenseError, match="input_prune"):
        D3(input_prune="yes")


def test_input_moments_match_the_whole_matrix_without_keeping_it():
    from distox.defenses.input_prune import input_moments

    model, retain = _mlp_and_retain(n=100)
    mean, var = input_moments(model, model[1], retain.x, "cpu")
    rows = retain.x.flatten(1).double()
    assert torch.allclose(mean, rows.mean(0)) and torch.allclose(var, rows.var(0, unbiased=False))


class _SharedFirst(nn.Module):
    """One Linear that the image meets first and that runs again later (weights shared)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.mid, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.shared(x[:, 0].mean(1)))  # (B, 8) from the rows' means
        h = torch.relu(self.shared(torch.relu(self.mid(h))))  # by last call, `mid` would come first
        return self.head(h)


def test_the_first_layer_is_the_first_one_called_even_if_it_runs_again():
    from distox.defenses.input_prune import first_weighted_layer

    assert first_weighted_layer(_SharedFirst(), torch.rand(2, 1, 8, 8))[0] == "shared"
