"""D3 exactly per SPEC §1: loss, projection, warm starts, selection, presets, determinism."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import distox.defenses.d3 as d3mod
from distox.data.core import ImageSplit
from distox.defenses import D3, DefenseError
from distox.defenses.d3 import d3_loss, lp_norm, project_to_norms, total_distance, warm_start
from distox.models import create_model

from .conftest import make_bundle


def tiny_model(classes: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return create_model("small_cnn", classes, 1, (0.5,), (0.5,), width=4)


def retain_split(n: int = 40) -> ImageSplit:
    b = make_bundle(n_train=n)
    return b.train


# ---------------------------------------------------------------- loss
def test_clean_term_is_mean_of_per_sample_hinge_not_hinge_of_mean():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.5], [0.2, 0.0]])
    y = torch.tensor([0, 0, 0])
    eps = 0.5
    w = [torch.zeros(2, 2)]
    w0 = [torch.zeros(2, 2)]
    _, stats = d3_loss(logits, y, w, w0, lmd=1.0, eps=eps)
    ce = F.cross_entropy(logits, y, reduction="none")
    expected = F.relu(ce - eps).mean().item()
    wrong = F.relu(ce.mean() - eps).item()
    assert stats["clean_loss"] == pytest.approx(expected, rel=1e-6)
    assert abs(expected - wrong) > 1e-3  # the example distinguishes the two readings


def test_loss_combines_terms_and_rescales_only_when_lambda_above_one():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    w, w0 = [torch.randn(3, 4), torch.randn(5)], [torch.randn(3, 4), torch.randn(5)]
    clean = F.relu(F.cross_entropy(logits, y, reduction="none") - 0.1).mean()
    dist = torch.linalg.norm(w[0] - w0[0]) + torch.linalg.norm(w[1] - w0[1])  # Frobenius, summed
    for lmd in (0.5, 1.0):
        loss, _ = d3_loss(logits, y, w, w0, lmd=lmd, eps=0.1)
        assert loss.item() == pytest.approx((lmd * clean - dist).item(), rel=1e-5)
    loss, _ = d3_loss(logits, y, w, w0, lmd=10.0, eps=0.1)
    assert loss.item() == pytest.approx(((10 * clean - dist) / 11).item(), rel=1e-5)


def test_biases_and_batchnorm_get_no_gradient_from_the_distance_term():
    model = tiny_model()
    d3 = D3(preset="reference", eps=1e6)  # hinge inactive: only the distance term has a gradient
    named = d3.selected(model)
    weights = list(named.values())
    init = [w.detach().clone() + 0.1 for w in weights]
    x = torch.rand(4, 1, 16, 16)
    loss, _ = d3_loss(model(x), torch.zeros(4, dtype=torch.long), weights, init, 0.5, 1e6)
    loss.backward()
    assert all(n.endswith(".weight") for n in named)
    for name, p in model.named_parameters():
        if name in named:
            assert p.grad is not None and p.grad.abs().sum() > 0
        else:
            assert p.grad is None or p.grad.abs().sum() == 0, name


# ---------------------------------------------------------------- projection and warm starts
def test_projection_restores_initial_norm():
    w = [torch.randn(5, 6) * 3, torch.randn(4, 2, 3, 3)]
    norms = [torch.tensor(2.0), torch.tensor(0.7)]
    project_to_norms(w, norms, 2.0)
    assert lp_norm(w[0], 2.0).item() == pytest.approx(2.0, rel=1e-6)
    assert lp_norm(w[1], 2.0).item() == pytest.approx(0.7, rel=1e-6)


@pytest.mark.parametrize("method", ["random", "far", "middle", "noise", "near"])
def test_warm_starts(method):
    torch.manual_seed(0)
    w0 = torch.randn(6, 5)
    w = w0.clone()
    warm_start([w], method, 2.0, torch.Generator().manual_seed(3))
    if method == "random":
        assert lp_norm(w, 2).item() == pytest.approx(lp_norm(w0, 2).item(), rel=1e-5)
        assert not torch.allclose(w, w0)
        r = torch.rand(w0.shape, generator=torch.Generator().manual_seed(3)) - 0.5
        assert torch.allclose(w, r * lp_norm(w0, 2) / lp_norm(r, 2), atol=1e-6)  # U(-0.5, 0.5) rescaled
    elif method == "far":
        assert torch.equal(w, -w0)
    elif method == "middle":
        assert torch.count_nonzero(w) == 0
    elif method == "noise":
        noise = torch.randn(w0.shape, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(w, w0 + noise * w0.std())
    else:
        assert torch.equal(w, w0)


def test_every_step_keeps_each_selected_weight_at_its_initial_norm(monkeypatch):
    model = tiny_model()
    init_norms = {n: lp_norm(p.detach(), 2.0).item() for n, p in model.named_parameters()}
    seen: list[float] = []
    real_train = d3mod.train

    def checking_train(m, *args, after_step, **kwargs):
        def wrapped(mod):
            after_step(mod)
            for name, p in D3(preset="reference", layers="all-linear").selected(mod).items():
                rel = abs(lp_norm(p.detach(), 2.0).item() - init_norms[name]) / init_norms[name]
                seen.append(rel)

        return real_train(m, *args, after_step=wrapped, **kwargs)

    monkeypatch.setattr(d3mod, "train", checking_train)
    D3(preset="reference", epochs=3, batch_size=8, layers="all-linear", lr=0.1)(model, retain_split(40), progress=False, device="cpu")
    assert len(seen) == 3 * 5  # 40 images / batch 8 = 5 steps per epoch
    assert max(seen) < 1e-5


# ---------------------------------------------------------------- defaults and presets
def test_reference_defaults_and_paper_preset():
    d = D3(preset="reference")
    assert (d.select, d.lmd_control) == ("last", "constant")
    assert (d.lmd, d.eps, d.p, d.init, d.layers, d.freeze_bn) == (0.5, 0.1, 2.0, "random", "auto", False)
    assert (d.epochs, d.batch_size, d.lr, d.momentum) == (100, 256, 0.01, 0.9)
    paper = D3(preset="paper")
    assert (paper.lmd, paper.eps) == (10.0, 0.1)
    assert D3(preset="paper", lmd=3.0).lmd == 3.0
    cfg = d.loop_config(retain_split(8), momentum=d.momentum, weight_decay=0.0)
    assert cfg.scheduler == "cosine" and cfg.optimizer == "sgd"


@pytest.mark.parametrize("kwargs", [{"lmd": -1}, {"eps": -0.1}, {"p": 0.5}, {"init": "sideways"},
                                    {"preset": "nope"}, {"epochs": 0}, {"batch_size": 0}, {"lr": 0}])
def test_bad_hyper_parameters_are_rejected(kwargs):
    with pytest.raises(DefenseError):
        D3(**kwargs)


# ---------------------------------------------------------------- behaviour
def test_same_seed_gives_identical_weights_and_input_is_untouched():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retain = retain_split(32)
    a = D3(preset="reference", epochs=2, batch_size=16, seed=5)(model, retain, progress=False, device="cpu").model
    b = D3(preset="reference", epochs=2, batch_size=16, seed=5)(model, retain, progress=False, device="cpu").model
    c = D3(preset="reference", epochs=2, batch_size=16, seed=6)(model, retain, progress=False, device="cpu").model
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"input model changed: {k}"


def test_history_records_loss_distance_and_lr_per_epoch():
    model = tiny_model()
    res = D3(preset="reference", epochs=3, batch_size=16)(model, retain_split(32), progress=False, device="cpu")
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    for row in res.history:
        assert {"clean_loss", "ce", "distance", "lr", "loss"} <= set(row)
        assert row["distance"] > 0
    lrs = [r["lr"] for r in res.history]
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.005 * (1 + math.cos(math.pi / 3)))
    assert res.config["lmd"] == 0.5 and res.method == "d3"


def test_distance_is_measured_only_over_the_selected_layer():
    model = tiny_model()
    res = D3(preset="reference", epochs=1, batch_size=16)(model, retain_split(32), progress=False, device="cpu")
    w_before = model.net.fc.weight.detach()
    w_after = res.model.net.fc.weight.detach()
    assert res.history[-1]["distance"] == pytest.approx(lp_norm(w_after - w_before, 2).item(), rel=1e-5)
    assert total_distance([w_after], [w_before], 2.0) == pytest.approx(res.history[-1]["distance"], rel=1e-5)


def test_freeze_bn_keeps_running_statistics():
    model = tiny_model()
    bn_before = model.net.features[1].running_mean.clone()
    frozen = D3(preset="reference", epochs=1, batch_size=16, freeze_bn=True)(model, retain_split(32), progress=False, device="cpu")
    trained = D3(preset="reference", epochs=1, batch_size=16)(model, retain_split(32), progress=False, device="cpu")
    assert torch.equal(frozen.model.net.features[1].running_mean, bn_before)
    assert not torch.equal(trained.model.net.features[1].running_mean, bn_before)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("n", [0, 1])
def test_too_small_retain_set(n):
    x = torch.rand(n, 1, 16, 16)
    with pytest.raises(DefenseError, match="at least 2"):
        D3(preset="reference", epochs=1)(tiny_model(), ImageSplit(x, torch.zeros(n, dtype=torch.long)), progress=False)


def test_labels_outside_the_models_classes():
    retain = ImageSplit(torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 7, 2]))
    with pytest.raises(DefenseError, match=r"0\.\.3.*\[7\]"):
        D3(preset="reference", epochs=1)(tiny_model(4), retain, progress=False)


def test_image_shape_the_model_rejects():
    retain = ImageSplit(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(DefenseError, match=r"rejects retain images of shape \(3, 16, 16\)"):
        D3(preset="reference", epochs=1)(tiny_model(4), retain, progress=False)


def test_nan_loss_stops_and_reports_the_epoch():
    model = tiny_model()
    with torch.no_grad():
        model.net.fc.bias.fill_(float("nan"))
    with pytest.raises(DefenseError, match="epoch 1"):
        D3(preset="reference", epochs=3, batch_size=16)(model, retain_split(32), progress=False, device="cpu")


def test_selection_without_linear_or_conv_is_a_clear_error():
    class NoLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten())
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return self.body(x)[:, :4] * self.scale

    retain = ImageSplit(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(DefenseError, match="needs a classifier"):
        D3(preset="reference", epochs=1)(NoLinear(), retain, progress=False)
    with pytest.raises(DefenseError, match="contains no nn.Linear or nn.Conv2d"):
        D3(preset="reference", epochs=1, layers="body")(NoLinear(), retain, progress=False)
    with pytest.raises(DefenseError, match="matches no module"):
        D3(preset="reference", epochs=1, layers="head")(NoLinear(), retain, progress=False)
