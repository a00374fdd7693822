"""The fifteenth round of the default study (BENCHMARKS.md): D3's options ``sam_rho``
(sharpness-aware steps, the ascent on the clean loss alone) and ``layer_weighting="fisher"`` (the
distance weighed down where the suspect's clean-data Fisher information is high,
:mod:`distox.defenses.fisher_metric`), both off by default; the default's re-estimation of stale
BatchNorm statistics (``bn_recalibrate="auto"``); and what its MnasNet needed (states without
version metadata, snapshots restored in place)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distox.defenses import DefenseError
from distox.defenses.d3 import D3, d3_loss
from distox.defenses.fisher_metric import clean_fisher, fisher_metric
from distox.training import LoopConfig, train

from .test_d3_options import run, same, tiny_model, tiny_retain


def test_distance_without_gradient_keeps_the_value_and_leaves_the_clean_gradient():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    w0 = w.detach() + 0.3 * torch.randn(3, 4)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    full, _ = d3_loss(x @ w.T, y, [w], [w0], 10.0, 0.1)
    ascent, _ = d3_loss(x @ w.T, y, [w], [w0], 10.0, 0.1, distance_grad=False)
    clean, _ = d3_loss(x @ w.T, y, [w], [w.detach()], 10.0, 0.1)  # distance 0: the clean part alone
    assert torch.equal(full, ascent)
    g_ascent, = torch.autograd.grad(ascent, w)
    g_clean, = torch.autograd.grad(clean, w)
    g_full, = torch.autograd.grad(d3_loss(x @ w.T, y, [w], [w0], 10.0, 0.1)[0], w)
    assert torch.allclose(g_ascent, g_clean) and not torch.allclose(g_ascent, g_full)


def test_sam_first_pass_is_the_perturb_objective_and_the_step_the_objective():
    """The loop's SAM: the history records the first pass's stats (``perturb_objective``) and the
    optimiser applies the objective's gradient; without SAM, ``perturb_objective`` is never called."""
    calls = []

    def objective(m, x, y):
        calls.append("objective")
        loss = nn.functional.cross_entropy(m(x), y)
        return loss, {"which": 1.0}

    def ascent(m, x, y):
        calls.append("ascent")
        loss = nn.functional.cross_entropy(m(x), y)
        return loss, {"which": 2.0}

    x, y = torch.rand(8, 4), torch.tensor([0, 1] * 4)
    for rho, rows, expected in ((0.5, 2.0, ["ascent", "objective"]), (None, 1.0, ["objective"])):
        calls.clear()
        torch.manual_seed(0)
        state = train(nn.Linear(4, 2), x, y, LoopConfig(epochs=1, batch_size=8, sam_rho=rho), objective=objective,
                      perturb_objective=ascent, device="cpu", progress=False)
        assert calls == expected and state.history[-1]["which"] == rows


def test_sam_rho_reaches_the_loop_and_is_recorded_only_when_set(monkeypatch):
    import distox.defenses.d3 as d3mod

    seen = []
    real = d3mod.train
    monkeypatch.setattr(d3mod, "train", lambda *a, **k: (seen.append(a[3]), real(*a, **k))[1])
    a = run(sam_rho=0.5)
    assert (seen[-1].sam_rho, seen[-1].sam_adaptive, seen[-1].sam_eta) == (0.5, True, 0.0)
    b = run()
    assert seen[-1].sam_rho is None
    assert not same(a, b)
    assert "sam_rho" not in D3().get_params() and D3(sam_rho=0.5).get_params()["sam_rho"] == 0.5
    for bad in (0, -1.0, "big", True):
        with pytest.raises(DefenseError, match="sam_rho must be a number > 0"):
            D3(sam_rho=bad)


def test_clean_fisher_is_the_mean_squared_batch_gradient_and_changes_nothing():
    model, retain = tiny_model(), tiny_retain(n=32)
    weights = [model[0].weight, model[7].weight]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    fisher = clean_fisher(model, weights, retain, 16, "cpu")
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(w.grad is None for w in weights)
    expected = [torch.zeros_like(w) for w in weights]
    model.eval()
    for i in (0, 16):
        loss = nn.functional.cross_entropy(model(retain.x[i:i + 16]), retain.y[i:i + 16])
        for e, g in zip(expected, torch.autograd.grad(loss, weights)):
            e += g.pow(2) / 2
    assert all(torch.allclose(f, e) for f, e in zip(fisher, expected))


def test_fisher_metric_pushes_low_information_coordinates_and_keeps_restarted_weights_plain():
    f = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    first, plain, zero = fisher_metric([f, f, torch.zeros(2)], [False, True])
    s = first.pow(2)
    assert torch.isclose(s.mean(), torch.tensor(1.0))
    assert s[0, 0] > s[0, 1] > s[1, 0] and torch.equal(s[0, 0], s[1, 1])
    assert plain is None and zero is None
    # an all-ones metric is the plain distance
    torch.manual_seed(0)
    w, w0 = torch.randn(3, 4), torch.randn(3, 4)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    assert torch.allclose(d3_loss(x @ w.T, y, [w], [w0], 10.0, 0.1, metric=[torch.ones(3, 4)])[0],
                          d3_loss(x @ w.T, y, [w], [w0], 10.0, 0.1)[0])


def test_fisher_weighting_changes_the_run_and_not_the_default():
    a, b = run(layers="all", layer_weighting="fisher"), run(layers="all")
    assert not same(a, b)
    assert D3().layer_weighting == "sum"
    with pytest.raises(DefenseError, match="layer_weighting"):
        D3(layer_weighting="hessian")


def test_stale_share_is_what_a_run_leaves_of_the_running_statistics():
    from distox.defenses.bn_stats import stale_share

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2, momentum=None),
                          nn.BatchNorm2d(2, track_running_stats=False))
    model[3].num_batches_tracked.fill_(300)
    assert stale_share(model, 100) == pytest.approx(300 / 400)  # the cumulative average dominates
    model[3].num_batches_tracked.fill_(0)
    assert stale_share(model, 100) == pytest.approx(0.9 ** 100)
    assert stale_share(nn.Linear(2, 2), 10) == 0.0


def _slow(momentum: float | None) -> nn.Module:
    model = tiny_model()
    model[1].momentum = momentum
    if momentum is None:  # a cumulative average over the suspect's own training
        model[1].num_batches_tracked.fill_(1000)
    return model


def test_the_default_reestimates_batchnorm_only_where_its_momentum_leaves_the_suspects_statistics():
    """``bn_recalibrate="auto"`` (the default preset): at PyTorch's momentum 0.1 the run is bit-identical
    to one without the rule; at a Keras-like 0.001 (or a cumulative average) the running statistics are
    re-estimated on the retain images after training; with ``freeze_bn`` never."""
    from distox.defenses.bn_stats import reestimate_batchnorm

    retain = tiny_retain()

    def fit(model, **kw):  # 2 epochs of 24 steps: 48 steps leave 0.9^48 < 1 % at momentum 0.1
        return D3(epochs=2, batch_size=2, **kw)(model, retain, device="cpu", progress=False)

    auto, off = fit(tiny_model()), fit(tiny_model(), bn_recalibrate=False)
    assert same(auto.model, off.model) and auto.config["bn_recalibrate_resolved"]["recalibrated"] is False
    # a run of 3 steps leaves 0.9^3 of the statistics at momentum 0.1: re-estimated too
    short = D3(epochs=1, batch_size=16)(tiny_model(), retain, device="cpu", progress=False)
    assert short.config["bn_recalibrate_resolved"] == {"stale_share": round(0.9 ** 3, 6), "recalibrated": True}
    # counted as the loop batches: 33 images at batch 16 make 2 steps (the last image joins the second batch)
    odd = D3(epochs=1, batch_size=16)(tiny_model(), retain.subset(torch.arange(33)), device="cpu", progress=False)
    assert odd.config["bn_recalibrate_resolved"]["stale_share"] == round(0.9 ** 2, 6)
    for momentum in (0.001, None):
        slow, slow_off = fit(_slow(momentum)), fit(_slow(momentum), bn_recalibrate=False)
        assert slow.config["bn_recalibrate_resolved"]["recalibrated"] is True
        assert slow.config["bn_recalibrate_resolved"]["stale_share"] > 0.01
        assert all(torch.equal(a, b) for a, b in zip(slow.model.parameters(), slow_off.model.parameters()))
        reestimate_batchnorm(slow_off.model, retain.x)
        assert torch.allclose(slow.model[1].running_var, slow_off.model[1].running_var)
        assert not torch.allclose(slow.model[1].running_var, fit(_slow(momentum), bn_recalibrate=False).model[1].running_var)
    frozen = fit(_slow(0.001), freeze_bn=True)
    assert "bn_recalibrate_resolved" not in frozen.config
    assert D3(preset="paper").bn_recalibrate is False and D3(preset="reference").bn_recalibrate is False


def test_a_state_without_version_metadata_loads_into_a_model_that_reads_it(tmp_path):
    """safetensors keeps no per-module version: torchvision's MnasNet refused such a state (a saved
    MnasNet run could not be loaded back)."""
    from safetensors.torch import load_file, save_file

    from distox.models import create_model
    from distox.runs import load_into

    torch.manual_seed(0)
    saved = create_model("torchvision:mnasnet0_5", 10, 1)
    path = str(tmp_path / "m.safetensors")
    save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, path)
    fresh = load_into(create_model("torchvision:mnasnet0_5", 10, 1), load_file(path))
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), fresh.state_dict().values()))


def test_a_mnasnet_purifies_with_held_out_epoch_selection():
    """The held-out chooser restored its epoch with ``load_state_dict`` from a snapshot without
    version metadata, which torchvision's MnasNet refuses; the snapshot is copied in place now."""
    from distox.data.core import ImageSplit
    from distox.models import create_model

    torch.manual_seed(0)
    model = create_model("torchvision:mnasnet0_5", 3, 1)
    g = torch.Generator().manual_seed(0)
    retain = ImageSplit(torch.rand(40, 1, 32, 32, generator=g), torch.randint(0, 3, (40,), generator=g), dataset="toy")
    result = D3(epochs=2, batch_size=8, select="heldout", layers="auto")(model, retain, device="cpu", progress=False)
    assert "selection_resolved" in result.config
