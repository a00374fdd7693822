"""The eighteenth round of the default study (BENCHMARKS.md): a convolutional network's fully
connected head (:func:`distox.models.selection.linear_head`) as D3's distance (``layers="linear-head"``) and
warm start (``init_layers="linear-head"``)."""
from __future__ import annotations

import torch
from torch import nn

from distox.defenses import D3
from distox.models import create_model
from distox.models.selection import linear_head, select_weights

from .conftest import make_bundle
from .test_d3_default import ConvHead
from .test_d3_options import tiny_model

EXAMPLE = torch.rand(2, 1, 28, 28)


class FlatHead(nn.Module):
    """LeNet-5 in small: a convolution without normalisation, its map flattened into two Linears."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.hidden = nn.Linear(3 * 4 * 4, 12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_max_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        return self.fc(torch.relu(self.hidden(x)))


def test_the_head_is_the_run_of_linears_on_flat_features_after_the_last_convolution():
    assert linear_head(create_model("lenet", num_classes=10, in_channels=1), EXAMPLE) == \
        ["net.hidden.0", "net.hidden.2", "net.fc"]
    assert linear_head(create_model("tutorial_cnn", num_classes=10, in_channels=1), EXAMPLE) == \
        ["net.hidden.0", "net.fc"]
    assert linear_head(tiny_model(), torch.rand(2, 1, 8, 8)) == ["5", "7"]  # with BatchNorm in the body too
    # one Linear after the convolutions, a network of Linears alone, a transformer: the classifier only
    assert linear_head(create_model("small_cnn", num_classes=10, in_channels=1, norm="none"), EXAMPLE) == ["net.fc"]
    assert linear_head(create_model("small_mlp", num_classes=10, in_channels=1), EXAMPLE) == ["net.fc"]
    assert linear_head(create_model("small_vit", num_classes=10, in_channels=1), EXAMPLE) == ["net.head"]
    assert linear_head(create_model("hybrid_vit", num_classes=10, in_channels=1), EXAMPLE) == ["net.head"]
    # without a batch to trace, the classifier only; without nn.Linear, nothing
    assert linear_head(create_model("lenet", num_classes=10, in_channels=1)) == ["net.fc"]
    assert linear_head(ConvHead(), torch.rand(2, 1, 8, 8)) == []


def test_the_head_selection_falls_back_to_the_classifier():
    lenet = create_model("lenet", num_classes=10, in_channels=1)
    assert list(select_weights(lenet, "linear-head", EXAMPLE)) == \
        ["net.hidden.0.weight", "net.hidden.2.weight", "net.fc.weight"]
    x = torch.rand(2, 1, 8, 8)
    assert list(select_weights(ConvHead(), "linear-head", x)) == list(select_weights(ConvHead(), "auto", x)) == ["head.weight"]


def turned(before: nn.Module, after: nn.Module, name: str) -> bool:
    """Whether ``name``'s weight moved more than half its norm (a restart, not a few steps)."""
    a, b = dict(before.named_parameters())[name].detach(), dict(after.named_parameters())[name].detach()
    return bool((b - a).norm() > 0.5 * a.norm())


def test_init_layers_head_restarts_every_head_linear_and_leaves_the_body():
    retain = make_bundle(n_train=32).train
    start = FlatHead()
    common = dict(layers="linear-head", epochs=1, batch_size=16, lr=0.01, blend=0.0)
    whole = D3(init_layers="linear-head", **common)(FlatHead(), retain, device="cpu", progress=False).model
    assert turned(start, whole, "hidden.weight") and turned(start, whole, "fc.weight")
    assert not turned(start, whole, "conv.weight")
    for name in ("hidden.weight", "fc.weight"):  # the norm constraint (Eq. 2) holds for each restarted weight
        assert torch.isclose(dict(whole.named_parameters())[name].norm(),
                             dict(start.named_parameters())[name].norm(), rtol=1e-4)
    only_fc = D3(init_layers="classifier", **common)(FlatHead(), retain, device="cpu", progress=False).model
    assert turned(start, only_fc, "fc.weight") and not turned(start, only_fc, "hidden.weight")


def test_input_pruning_takes_another_linear_by_name():
    """The flat-prune probe's call: the Linear over the flattened map, named, instead of the first
    weighted layer (which is a convolution here, so the default call sets nothing aside)."""
    from distox.defenses.input_prune import prune_inputs

    retain = make_bundle(n_train=48).train
    assert prune_inputs(FlatHead(), retain)["layer"] is None
    model = FlatHead()
    report = prune_inputs(model, retain, tolerance=100.0, layer_name="hidden")  # any accuracy goes: all inputs
    assert report["layer"] == "hidden" and report["features"] == 48 and report["pruned"] == 48
    assert torch.count_nonzero(model.hidden.weight) == 0 and torch.count_nonzero(model.conv.weight) > 0
