"""Baseline defenses FT-SAM and SAU (SPEC §4), the (adaptive) SAM step they rely on, and the
properties every defense shares (input untouched, a new model, SPEC defaults, clear errors)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import distox
import distox.defenses.ft as ftmod
import distox.defenses.sau as saumod
from distox.data.core import ImageSplit
from distox.defenses import D3, FT, FTSAM, SAU, DefenseError, create
from distox.defenses.ft_sam import smoothed_cross_entropy
from distox.defenses.sau import (eval_mode, js_divergence, shared_adversarial_risk, shared_pgd)
from distox.sam import apply_perturbation, frozen_bn_stats, sam_perturbation
from distox.training import LoopConfig, TrainState, train

from .conftest import make_bundle, retain_split, tiny_model


@pytest.fixture(scope="module")
def trained_pair() -> tuple[nn.Module, nn.Module, ImageSplit]:
    """f₀: a small CNN trained on the synthetic bands; f: f₀ with slightly perturbed weights."""
    bundle = make_bundle(n_train=120, n_test=60)
    ref = tiny_model()
    train(ref, bundle.train.x, bundle.train.y, LoopConfig(epochs=8, batch_size=32, lr=0.05),
          device="cpu", progress=False)
    ref.eval()
    model = copy.deepcopy(ref)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return model, ref, bundle.test


def _params_with_grads(seed: int = 0) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(5, 3, generator=gen)), nn.Parameter(torch.randn(7, generator=gen)),
              nn.Parameter(torch.zeros(4))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


# ---------------------------------------------------------------- (adaptive) SAM
def test_sam_perturbation_is_rho_times_the_normalised_gradient():
    params = _params_with_grads()
    eps = sam_perturbation(params, rho=2.0, adaptive=False)
    norm = torch.sqrt(sum((e ** 2).sum() for e in eps))
    assert norm.item() == pytest.approx(2.0, rel=1e-5)
    gnorm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    for p, e in zip(params, eps):
        assert torch.allclose(e, 2.0 * p.grad / gnorm, atol=1e-6)


@pytest.mark.parametrize("eta", [0.01, 0.0])
def test_asam_perturbation_matches_kwon_et_al_and_has_normalised_radius(eta):
    params = _params_with_grads(1)
    rho = 2.0
    eps = sam_perturbation(params, rho=rho, adaptive=True, eta=eta)
    t = [p.detach().abs() + eta for p in params]
    # ASAM (Kwon et al. 2021, Eq. 9): e = ρ T² g / ‖T g‖ with T = diag(|w| + η)
    tg_norm = torch.sqrt(sum(((ti * p.grad) ** 2).sum() for ti, p in zip(t, params)))
    for ti, p, e in zip(t, params, eps):
        assert torch.allclose(e, rho * ti ** 2 * p.grad / tg_norm, atol=1e-6)
    # ‖T⁻¹ e‖ = ρ (where T > 0), and e maximises the linearised loss gᵀe on that ellipsoid
    inv = torch.sqrt(sum(((e / ti)[ti > 0] ** 2).sum() for ti, e in zip(t, eps)))
    assert inv.item() == pytest.approx(rho, rel=1e-5)
    best = sum((p.grad * e).sum() for p, e in zip(params, eps))
    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        d = [torch.randn(p.shape, generator=gen) * ti for p, ti in zip(params, t)]
        scale = rho / torch.sqrt(sum(((di / ti)[ti > 0] ** 2).sum() for di, ti in zip(d, t)))
        assert sum((p.grad * di * scale).sum() for p, di in zip(params, d)) <= best + 1e-5
    if eta == 0.0:  # T = |w|: an all-zero parameter is not perturbed at all
        assert torch.count_nonzero(eps[2]) == 0


def test_apply_perturbation_round_trip_and_missing_grads():
    params = _params_with_grads(2)
    params.append(nn.Parameter(torch.ones(2)))  # no grad
    before = [p.detach().clone() for p in params]
    eps = sam_perturbation(params, rho=1.0, adaptive=True)
    assert eps[-1] is None
    apply_perturbation(params, eps, +1.0)
    assert not torch.equal(params[0].detach(), before[0])
    apply_perturbation(params, eps, -1.0)
    for p, b in zip(params, before):
        assert torch.allclose(p.detach(), b, atol=1e-6)


def test_frozen_bn_stats_keeps_running_statistics_but_uses_batch_statistics():
    model = tiny_model().train()
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 16, 16)
    with frozen_bn_stats(model):
        out_frozen = model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(m.momentum == 0.1 for m in bn)  # restored
    out = model(x)  # ordinary train-mode pass: same output, statistics move
    assert torch.allclose(out, out_frozen, atol=1e-6)
    assert not torch.equal(bn[0].running_mean, state[[k for k in state if k.endswith("running_mean")][0]])


def _record_second_pass(monkeypatch, defense: FTSAM) -> list[list[torch.Tensor]]:
    """Run ``defense`` for one step and return the parameters seen by each objective call."""
    seen: list[list[torch.Tensor]] = []
    inner = defense.objective()

    def recording(model, x, y):
        seen.append([p.detach().clone() for p in model.parameters()])
        return inner(model, x, y)

    monkeypatch.setattr(defense, "objective", lambda: recording)
    retain = retain_split(16)
    defense(tiny_model(), retain, device="cpu", progress=False)
    return seen


def test_ft_sam_second_pass_is_at_normalised_radius_two(monkeypatch):
    seen = _record_second_pass(monkeypatch, FTSAM(epochs=1, batch_size=16))
    assert len(seen) == 2  # first pass at w, second pass at w + e
    w, w_e = seen
    # reference FT-SAM: adaptive, T = |w| (η = 0), ρ = 2.0  ⇒  ‖(w_e − w)/|w|‖ = 2
    sq = sum((((b - a) / a.abs())[a != 0] ** 2).sum() for a, b in zip(w, w_e))
    assert math.sqrt(float(sq)) == pytest.approx(2.0, rel=1e-4)


def test_plain_sam_option_has_euclidean_radius(monkeypatch):
    seen = _record_second_pass(monkeypatch, FTSAM(epochs=1, batch_size=16, adaptive=False, rho=0.5))
    w, w_e = seen
    assert math.sqrt(float(sum(((b - a) ** 2).sum() for a, b in zip(w, w_e)))) == pytest.approx(0.5, rel=1e-4)


def test_ft_sam_loop_config_and_objective_are_the_reference_ones(monkeypatch):
    captured = {}

    def fake_train(model, x, y, config, **kw):
        captured["config"], captured["objective"] = config, kw["objective"]
        return TrainState()

    monkeypatch.setattr(ftmod, "train", fake_train)
    FTSAM()(tiny_model(), retain_split(), device="cpu", progress=False)
    c = captured["config"]
    assert (c.sam_rho, c.sam_adaptive, c.sam_eta) == (2.0, True, 0.0)
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert (c.epochs, c.batch_size, c.scheduler, c.augment) == (100, 256, "cosine", True)
    # label smoothing 0.1, reference convention: 0.9 on the true class, 0.1/(K−1) elsewhere
    model = tiny_model()
    x, y = retain_split(8).x, retain_split(8).y
    loss, _ = captured["objective"](model, x, y)
    logp = F.log_softmax(model(x), 1)
    target = torch.full_like(logp, 0.1 / 3)
    target[torch.arange(8), y] = 0.9
    assert loss.item() == pytest.approx(-(target * logp).sum(1).mean().item(), rel=1e-5)
    assert loss.item() != pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-3)
    # and plain FT keeps plain CE without SAM
    FT()(tiny_model(), retain_split(), device="cpu", progress=False)
    assert captured["config"].sam_rho is None


def test_smoothed_cross_entropy_equals_torch_label_smoothing_rescaled():
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    k, s = 5, 0.1
    ours = smoothed_cross_entropy(logits, y, s)
    # torch puts s'/K on every class: s' = s·K/(K−1) gives the same targets
    assert ours.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=s * k / (k - 1)).item(), rel=1e-5)
    assert smoothed_cross_entropy(logits, y, 0.0).item() == pytest.approx(F.cross_entropy(logits, y).item())


# ---------------------------------------------------------------- SAU: shared PGD
def test_shared_pgd_examples_fool_both_models_into_the_same_label(trained_pair):
    model, ref, test = trained_pair
    x, y = test.x, test.y
    atk = shared_pgd(model, ref, x, y, radius=0.2, step_size=0.2, steps=5, beta1=0.01, beta2=1.0)
    assert atk.shared.sum() >= 5  # the PGD succeeds on a good share of the batch
    with torch.no_grad():
        clean, clean_ref = model(x).argmax(1), ref(x).argmax(1)
        adv, adv_ref = model(x + atk.delta).argmax(1), ref(x + atk.delta).argmax(1)
    s = atk.shared
    assert torch.equal(adv[s], adv_ref[s])  # the same label for both models
    assert (adv[s] != clean[s]).all() and (adv_ref[s] != clean_ref[s]).all()  # both fooled
    correct = s & (clean == y) & (clean_ref == y)
    assert correct.any() and (adv[correct] != y[correct]).all()  # misclassified
    # the returned flags describe the returned δ
    assert torch.equal(atk.label, adv) and torch.equal(atk.label_ref, adv_ref)
    assert torch.equal(atk.shared, (adv != clean) & (adv_ref != clean_ref) & (adv == adv_ref))


def test_shared_pgd_stays_in_linf_ball_and_image_range(trained_pair):
    model, ref, test = trained_pair
    for init in ("max", "sign", "uniform"):
        atk = shared_pgd(model, ref, test.x, test.y, radius=0.2, init=init)
        assert atk.delta.abs().max().item() <= 0.2 + 1e-6
        xa = test.x + atk.delta
        assert xa.min().item() >= 0.0 and xa.max().item() <= 1.0
    bright = torch.ones(4, 1, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    unclipped = shared_pgd(model, ref, bright, y, radius=0.2, steps=0, clip=False)
    assert unclipped.delta.min().item() == pytest.approx(0.2)  # reference behaviour: no clipping
    clipped = shared_pgd(model, ref, bright, y, radius=0.2, steps=0, clip=True)
    assert clipped.delta.abs().max().item() == 0.0


def test_shared_pgd_init_max_starts_on_the_boundary(trained_pair):
    model, ref, test = trained_pair
    x = torch.full((4, 1, 16, 16), 0.5)
    atk = shared_pgd(model, ref, x, torch.zeros(4, dtype=torch.long), steps=1, init="max")
    # one signed step of 0.2 from +0.2, projected: every coordinate is 0 or ±0.2
    vals = atk.delta.unique()
    assert all(any(abs(v - t) < 1e-6 for t in (-0.2, 0.0, 0.2)) for v in vals.tolist())


def test_crafting_leaves_parameter_grads_and_training_flags_alone(trained_pair):
    model, ref, test = trained_pair
    model, ref = copy.deepcopy(model).train(), copy.deepcopy(ref)
    for p in ref.parameters():
        p.grad = None
    marks = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, m in zip(model.parameters(), marks):
        p.grad = m.clone()
    shared_pgd(model, ref, test.x[:16], test.y[:16])
    assert all(torch.equal(p.grad, m) for p, m in zip(model.parameters(), marks))
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in ref.parameters())
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())


def test_js_divergence_properties():
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(js_divergence(a, a), torch.zeros(5), atol=1e-6)
    assert torch.allclose(js_divergence(a, b), js_divergence(b, a), atol=1e-6)
    far = js_divergence(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]]))
    assert far.item() == pytest.approx(math.log(2), rel=1e-4)  # the maximum for disjoint supports
    p, q = F.softmax(a, 1), F.softmax(b, 1)
    m = (p + q) / 2
    hand = 0.5 * (p * (p / m).log()).sum(1) + 0.5 * (q * (q / m).log()).sum(1)
    assert torch.allclose(js_divergence(a, b), hand, atol=1e-6)


# ---------------------------------------------------------------- SAU: shared adversarial risk
def test_shared_adversarial_risk_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0],     # f on x0+δ
                           [0.0, 1.0, 0.0],     # f on x1+δ
                           [0.0, 0.0, 12.0],    # f on x2+δ: p ≈ 0.99998 > 0.999 → clamped
                           [1.0, 1.0, 1.0]])
    y = torch.tensor([1, 1, 0, 2])
    ref_adv = torch.tensor([0, 1, 2, 0])      # f₀ on x+δ
    ref_clean = torch.tensor([1, 1, 0, 0])    # f₀ on x
    # P: i=0 (0≠1, 0≠1) yes; i=1 (ŷ₀ = y) no; i=2 (2≠0, 2≠0) yes; i=3 (ŷ₀ = f₀(x)) no
    loss, potential = shared_adversarial_risk(logits, y, ref_adv, ref_clean)
    assert potential.tolist() == [True, False, True, False]
    p0 = math.exp(2) / (math.exp(2) + 2)
    expected = (-math.log(1 - p0) - math.log(1 - 0.999)) / 4  # summed over P, divided by N
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    none, _ = shared_adversarial_risk(logits, y, y, ref_clean)
    assert none.item() == 0.0


def test_sau_update_loss_is_clean_ce_plus_shared_risk(trained_pair, monkeypatch):
    model, ref, test = trained_pair
    x, y = test.x[:20], test.y[:20]
    sau = SAU()
    atk = sau.craft(model, ref, x, y)
    monkeypatch.setattr(sau, "craft", lambda *a: atk)
    total, stats = sau.loss(model.eval(), ref, x, y)
    with torch.no_grad():
        ce = F.cross_entropy(model(x), y)
        sar, _ = shared_adversarial_risk(model(x + atk.delta), y, ref(x + atk.delta).argmax(1), ref(x).argmax(1))
    assert sar.item() > 0
    assert total.item() == pytest.approx(ce.item() + sar.item(), rel=1e-5)  # AT weight 0
    sau_at = SAU(at_weight=1.0)
    monkeypatch.setattr(sau_at, "craft", lambda *a: atk)
    total_at, _ = sau_at.loss(model, ref, x, y)
    at = F.cross_entropy(model(x + atk.delta), y)
    assert total_at.item() == pytest.approx(total.item() + at.item(), rel=1e-5)


def test_sau_trains_with_adam_amsgrad_and_frozen_batchnorm(monkeypatch):
    captured = {}

    def fake_train(model, x, y, config, **kw):
        captured.update(config=config, **kw)
        return TrainState()

    monkeypatch.setattr(saumod, "train", fake_train)
    SAU()(tiny_model(), retain_split(), device="cpu", progress=False)
    c, opt = captured["config"], captured["optimizer"]
    assert isinstance(opt, torch.optim.Adam)
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"], g["amsgrad"]) == (1e-4, (0.9, 0.999), 0.0, True)
    assert (c.epochs, c.batch_size, c.bn_eval, c.augment, c.sam_rho) == (100, 256, True, False, None)


# ---------------------------------------------------------------- all defenses
ALL = [("ft", {}), ("ft-sam", {}), ("sau", {"lr": 0.01}), ("d3", {})]


@pytest.mark.parametrize("name,extra", ALL)
def test_defense_leaves_input_untouched_and_returns_a_new_model(name, extra):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retain = retain_split(32)
    result = create(name, epochs=1, batch_size=16, **extra)(model, retain, device="cpu", progress=False)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), name
    assert result.model is not model
    purified = result.model.state_dict()
    assert any(not torch.equal(before[k], purified[k]) for k in before if before[k].is_floating_point())
    assert not result.model.training and result.method == name


def test_purify_runs_the_baselines_by_name():
    bundle = make_bundle(n_train=32, n_test=20)
    for method in ("ft-sam", "sau"):
        res = distox.purify(tiny_model(), (bundle.train.x, bundle.train.y), method=method, epochs=1,
                            batch_size=16, device="cpu", eval_data=(bundle.test.x, bundle.test.y), verbose=False)
        assert res.method == method and "acc" in res.info["after"] and len(res.history) == 1
    with pytest.raises(DefenseError, match="rho"):
        distox.purify(tiny_model(), (bundle.train.x, bundle.train.y), method="ft-sam", rho=-1.0, verbose=False)
    with pytest.raises(DefenseError):
        distox.purify(tiny_model(), (bundle.train.x, bundle.train.y), method="sau", no_such_option=1, verbose=False)


def test_defaults_are_the_spec_values():
    ft = FT()
    assert (ft.epochs, ft.batch_size, ft.lr, ft.momentum, ft.weight_decay) == (100, 256, 0.01, 0.9, 5e-4)
    s = FTSAM()
    assert (s.epochs, s.batch_size, s.lr, s.momentum, s.weight_decay) == (100, 256, 0.01, 0.9, 5e-4)
    assert (s.rho, s.adaptive, s.eta, s.label_smoothing) == (2.0, True, 0.0, 0.1)
    u = SAU()
    assert (u.epochs, u.batch_size, u.lr, u.betas, u.weight_decay) == (100, 256, 1e-4, (0.9, 0.999), 0.0)
    assert (u.radius, u.step_size, u.pgd_steps, u.pgd_init) == (0.2, 0.2, 5, "max")
    assert (u.beta1, u.beta2) == (0.01, 1.0)
    assert (u.clean_weight, u.at_weight, u.shared_weight) == (1.0, 0.0, 1.0)
    assert (u.p_min, u.p_max, u.clip, u.train_mode, u.scheduler) == (0.001, 0.999, True, False, "cosine")
    d = D3(preset="reference")
    assert (d.epochs, d.batch_size, d.lr, d.lmd, d.eps) == (100, 256, 0.01, 0.5, 0.1)


@pytest.mark.parametrize("name,kwargs", [
    ("ft-sam", {"rho": 0}), ("ft-sam", {"rho": -2.0}), ("ft-sam", {"eta": -0.1}),
    ("ft-sam", {"label_smoothing": 1.0}), ("ft-sam", {"epochs": 0}),
    ("sau", {"radius": 0}), ("sau", {"step_size": -0.1}), ("sau", {"pgd_steps": 0}),
    ("sau", {"pgd_init": "corner"}), ("sau", {"beta1": -1}), ("sau", {"shared_weight": -1}),
    ("sau", {"p_min": 0.5, "p_max": 0.4}), ("sau", {"betas": (0.9, 1.0)}), ("sau", {"scheduler": "step"}),
    ("sau", {"lr": 0}), ("ft", {"batch_size": 0}), ("d3", {"lmd": -1}),
])
def test_bad_hyper_parameters_raise_defense_error(name, kwargs):
    with pytest.raises(DefenseError):
        create(name, **kwargs)
