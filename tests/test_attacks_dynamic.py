"""Training-controlled attacks: WaNet (warping field + noise mode) and Input-aware (G/M nets)."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from distox.attacks import create
from distox.attacks.base import AttackError
from distox.attacks.inputaware import InputAware, JointOptimizer, TriggerNet, diversity, sharpen_mask
from distox.attacks.perbatch import split_batch, stochastic_round
from distox.attacks.wanet import WaNet, control_points, identity_grid
from distox.models import create_model
from distox.training import LoopConfig

from .conftest import make_bundle


# ---------------------------------------------------------------------------- shared helpers
def test_stochastic_round_has_the_right_expectation():
    gen = torch.Generator().manual_seed(0)
    vals = [stochastic_round(2.3, gen) for _ in range(4000)]
    assert set(vals) == {2, 3}
    assert abs(sum(vals) / len(vals) - 2.3) < 0.03
    assert stochastic_round(4.0, gen) == 4


def test_split_batch_groups_are_disjoint_and_clipped():
    gen = torch.Generator().manual_seed(1)
    a, b = split_batch(10, [0.5, 0.9], gen)
    assert len(a) == 5 and len(b) == 5  # the second group is clipped to the rest of the batch
    assert not set(a.tolist()) & set(b.tolist())


# ---------------------------------------------------------------------------- WaNet
def test_wanet_registered_and_validates():
    assert isinstance(create("wanet"), WaNet)
    with pytest.raises(AttackError):
        WaNet(k=1)
    with pytest.raises(AttackError):
        WaNet(s=-0.1)


def test_wanet_grid_deterministic_from_seed():
    g0 = WaNet(seed=0).grid(16, 16)
    assert torch.equal(g0, WaNet(seed=0).grid(16, 16))
    assert not torch.allclose(g0, WaNet(seed=1).grid(16, 16))
    assert g0.shape == (1, 16, 16, 2) and g0.abs().max() <= 1


def test_wanet_field_follows_the_recipe():
    ins = control_points(4, seed=3)
    assert ins.shape == (1, 2, 4, 4)
    assert torch.isclose(ins.abs().mean(), torch.tensor(1.0))
    atk = WaNet(seed=3, s=0.5)
    noise = atk.noise_grid(16, 16)
    # align_corners=True bicubic: the corners of the field are the corner control points
    assert torch.allclose(noise[0, 0, 0], ins[0, :, 0, 0], atol=1e-6)
    assert torch.allclose(noise[0, -1, -1], ins[0, :, -1, -1], atol=1e-6)
    expected = (identity_grid(16, 16) + 0.5 * noise / 16).clamp(-1, 1)
    assert torch.allclose(atk.grid(16, 16), expected)
    # identity grid convention: [..., 0] runs along columns, [..., 1] along rows
    ident = identity_grid(4, 4)
    assert ident[0, 0, -1, 0] == 1 and ident[0, -1, 0, 1] == 1


def test_wanet_identity_at_zero_strength():
    x = torch.rand(3, 3, 16, 16)
    err = (WaNet(s=0.0).apply(x) - x).abs()
    assert err.mean() < 1e-6 and err.max() < 1e-5  # float32 grid_sample rounding only


def test_wanet_any_channels_and_non_square():
    for shape in ((2, 1, 28, 28), (2, 3, 12, 20)):
        x = torch.rand(*shape)
        out = WaNet().apply(x)
        assert out.shape == x.shape and (out - x).abs().mean() > 1e-4


def test_wanet_warp_is_small_but_real():
    data = make_bundle(n_test=40, channels=3, side=16)
    x = data.test.x
    x_bd = WaNet(s=0.5).apply(x)
    diff = (x_bd - x).abs().mean()
    assert 1e-3 < diff < 0.08
    # a stronger warp moves pixels further
    assert (WaNet(s=2.0).apply(x) - x).abs().mean() > diff


def test_wanet_batch_transform_fractions_and_labels():
    atk = WaNet(target=0, poison_rate=0.13, cross_ratio=2.0, seed=0)
    transform = atk.batch_transform()
    gen = torch.Generator().manual_seed(0)
    n, trials = 10, 600
    x = torch.rand(n, 1, 8, 8)
    y = torch.full((n,), 2)
    x_warp = atk.apply(x)
    counts_bd, counts_noise = [], []
    bd_positions = torch.zeros(n)
    for _ in range(trials):
        xt, yt = transform(x, y, gen)
        relabelled = yt != y
        assert (yt[relabelled] == 0).all()
        # backdoor rows are exactly the fixed warp
        assert torch.allclose(xt[relabelled], x_warp[relabelled], atol=1e-6)
        changed = (xt - x).flatten(1).abs().amax(1) > 1e-6
        noise = changed & ~relabelled
        # noise rows keep their labels and are not the fixed warp
        assert (yt[noise] == y[noise]).all()
        assert ((xt[noise] - x_warp[noise]).flatten(1).abs().amax(1) > 1e-6).all()
        counts_bd.append(int(relabelled.sum()))
        counts_noise.append(int(noise.sum()))
        bd_positions += relabelled.float()
    assert abs(sum(counts_bd) / (trials * n) - 0.13) < 0.015
    assert abs(sum(counts_noise) / (trials * n) - 0.26) < 0.02
    assert (bd_positions > 0).all()  # random positions, not always the first rows
    assert set(counts_bd) == {1, 2}  # stochastic rounding of 1.3


def test_wanet_resources_round_trip_and_training_runs():
    data = make_bundle(n_train=40, n_test=20, channels=1, side=16)
    atk = WaNet(seed=5)
    model = create_model("small_cnn", data.num_classes, 1, data.mean, data.std, width=4)
    state = atk.train_model(model, data, LoopConfig(epochs=1, batch_size=20, augment=True),
                            device="cpu", progress=False)
    assert len(state.history) == 1
    res = atk.resources()
    assert set(res) == {"control_points", "noise_grid"} and res["noise_grid"].shape == (1, 16, 16, 2)
    other = WaNet(seed=99)
    other.load_resources(res)
    assert torch.equal(other.apply(data.test.x), atk.apply(data.test.x))
    with pytest.raises(AttackError):
        other.load_resources({})


# ---------------------------------------------------------------------------- Input-aware
def _ia(**kw) -> InputAware:
    kw.setdefault("width", 4)
    return InputAware(**kw)


def test_triggernet_any_side_and_range():
    for side in (16, 28, 13):
        net = TriggerNet(3, 1, width=4, depth=2)
        out = net(torch.rand(2, 3, side, side))
        assert out.shape == (2, 1, side, side)
        assert out.min() > 0 and out.max() < 1


def test_inputaware_registered_and_needs_networks():
    assert isinstance(create("inputaware"), InputAware)
    with pytest.raises(AttackError):
        InputAware().apply(torch.rand(1, 1, 16, 16))


IA_DATA = dict(n_train=40, n_test=20, channels=1, side=16)
IA_CFG = LoopConfig(epochs=2, batch_size=8)


def _train_ia(cfg: LoopConfig, ckpt=None, on_epoch_end=None):
    data = make_bundle(**IA_DATA)
    atk = _ia(mask_epochs=1, poison_rate=0.2)
    torch.manual_seed(0)  # the classifier's initialisation
    model = create_model("small_cnn", data.num_classes, 1, data.mean, data.std, width=4)
    atk.train_model(model, data, cfg, device="cpu", progress=False, checkpoint=ckpt, on_epoch_end=on_epoch_end)
    return atk, model


@pytest.fixture(scope="module")
def trained_ia():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_ia(IA_CFG)
    finally:
        torch.set_num_threads(before)


def test_inputaware_patterns_differ_between_images(trained_ia):
    atk, _ = trained_ia
    x = make_bundle(**IA_DATA).test.x[:4]
    gnet, _ = atk._networks()
    with torch.no_grad():
        p = gnet.eval()(x)
        x_bd = atk.apply(x)
    for i in range(1, 4):
        assert (p[0] - p[i]).abs().mean() > 1e-3  # one pattern per image, not a fixed trigger
    trig = x_bd - x
    assert (trig[0] - trig[1]).abs().mean() > 1e-4
    # x_bd = x + (G(x) - x)·m, a per-pixel convex blend
    assert x_bd.min() >= 0 and x_bd.max() <= 1


def test_inputaware_mask_density_after_stage1():
    data = make_bundle(n_train=120, channels=1, side=16)
    atk = _ia(mask_epochs=6, width=8)
    atk.build_networks(data.image_shape)
    with torch.no_grad():
        before = float(atk.mask(data.test.x).mean())
    atk.fit_mask(data, LoopConfig(batch_size=20), device="cpu", progress=False)
    with torch.no_grad():
        after = float(atk.mask(data.test.x).mean())
    assert before > 0.3
    assert 0.005 < after < 0.08  # target 0.032
    assert len(atk.mask_history) == 6
    assert not any(p.requires_grad for p in atk.mask_net.parameters())  # frozen after stage 1


def test_inputaware_diversity_uses_normalised_images():
    """The reference measures d(x1, x2) on dataset-normalised tensors (masks unnormalised), so
    with std 0.5 the mask-stage diversity is twice the one in [0, 1] pixel units."""
    data = make_bundle(n_train=16, channels=1, side=16)
    atk = _ia(mask_epochs=1)
    atk.build_networks(data.image_shape)
    atk.mask_net.eval()
    x = data.train.x[:8]
    with torch.no_grad():
        m = sharpen_mask(atk.mask_net(x))
        pixel = diversity(x, x.roll(1, 0), m, m.roll(1, 0))
        atk.set_normalization((0.5,))
        _, stats = atk._mask_objective(atk.mask_net, x, None)
        assert stats["div"] == pytest.approx(2 * float(pixel), rel=1e-5)
        atk.set_normalization(None)
        _, stats = atk._mask_objective(atk.mask_net, x, None)
        assert stats["div"] == pytest.approx(float(pixel), rel=1e-5)
    # train_model/fit_mask take the std from the dataset
    atk.fit_mask(data, LoopConfig(batch_size=8), device="cpu", progress=False)
    assert torch.equal(atk._std.flatten(), torch.tensor(data.std, dtype=torch.float32))


def test_inputaware_cross_samples_keep_labels():
    data = make_bundle(n_train=40, channels=1, side=16)
    atk = _ia(target=0, poison_rate=0.2)
    atk.build_networks(data.image_shape)
    for net in atk._networks():
        net.eval()  # batch statistics would make a row's trigger depend on its batch
    x = data.train.x[:20]
    y = torch.full((20,), 3)
    gen = torch.Generator().manual_seed(0)
    bd, cross = split_batch(20, [0.2, 0.2], torch.Generator().manual_seed(0))
    with torch.no_grad():
        xs, ys, div = atk.poison_batch(x, y, gen)
        own, _, _ = atk.trigger(x)
        partner = x.roll(1, 0)
        crossed, _, _ = atk.trigger(x, partner)
    assert len(bd) == 4 and len(cross) == 4
    assert (ys[bd] == 0).all() and (ys[cross] == 3).all()
    assert int((ys != y).sum()) == 4
    assert torch.allclose(xs[bd], own[bd], atol=1e-6)
    assert torch.allclose(xs[cross], crossed[cross], atol=1e-6)
    clean = torch.ones(20, dtype=torch.bool)
    clean[bd] = clean[cross] = False
    assert torch.equal(xs[clean], x[clean])
    assert div > 0


def _generator_grads(**kw):
    """Train a tiny Input-aware run (1 mask epoch, 2 classifier epochs of 2 batches) and return
    its state, the gradient each step computed for one G weight, and that weight's ``.grad``
    after each accumulation."""
    data = make_bundle(n_train=40, channels=1, side=16)
    atk = _ia(mask_epochs=1, poison_rate=0.25, **kw)
    model = create_model("small_cnn", data.num_classes, 1, data.mean, data.std, width=4)
    fresh, accumulated = [], []
    orig_build = atk.build_networks

    def build_with_hooks(shape):
        orig_build(shape)
        p = atk.generator.down[0][0][0].weight
        p.register_hook(lambda g: fresh.append(g.detach().clone()))
        p.register_post_accumulate_grad_hook(lambda t: accumulated.append(t.grad.detach().clone()))

    atk.build_networks = build_with_hooks
    state = atk.train_model(model, data, LoopConfig(epochs=2, batch_size=20), device="cpu", progress=False)
    return atk, state, fresh, accumulated


def test_inputaware_generator_grads_do_not_accumulate():
    atk, state, fresh, accumulated = _generator_grads()
    assert len(state.history) == 2 and len(atk.mask_history) == 1  # classifier: full epochs
    assert len(fresh) == len(accumulated) == 4
    for g, acc in zip(fresh, accumulated):
        assert g.abs().sum() > 0
        assert torch.allclose(g, acc)  # .grad holds this step's gradient only


def test_inputaware_reference_grad_accumulation_option():
    # the reference never zeroes G's gradients: each step's .grad is the sum of all so far
    atk, _, fresh, accumulated = _generator_grads(accumulate_generator_grads=True)
    assert atk.params()["accumulate_generator_grads"] is True
    assert len(fresh) == len(accumulated) == 4
    for i in range(4):
        assert torch.allclose(accumulated[i], torch.stack(fresh[: i + 1]).sum(0), atol=1e-6)
    assert not torch.allclose(accumulated[-1], fresh[-1])


def test_joint_optimizer_zeroes_steps_and_round_trips():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    opt = JointOptimizer(torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    (a(torch.ones(1, 2)) + b(torch.ones(1, 2))).sum().backward()
    wa, wb = a.weight.clone(), b.weight.clone()
    opt.step()
    assert not torch.equal(a.weight, wa) and not torch.equal(b.weight, wb)
    opt.zero_grad(set_to_none=True)
    assert a.weight.grad is None and b.weight.grad is None
    state = opt.state_dict()
    opt2 = JointOptimizer(torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.1))
    opt2.load_state_dict(state)
    assert opt2.others[0].state_dict()["state"][0]["step"] == 1
    sched.step()  # the loop's scheduler anneals the classifier's optimiser only
    assert opt.main.param_groups[0]["lr"] < 0.1 and opt.others[0].param_groups[0]["lr"] == 0.1


def test_joint_optimizer_anneal_others_puts_one_schedule_on_every_optimiser():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    opt = JointOptimizer(torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.Adam(b.parameters(), lr=0.01),
                         anneal_others=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    (a(torch.ones(1, 2)) + b(torch.ones(1, 2))).sum().backward()
    for _ in range(2):
        opt.step()
        sched.step()
    # half-way through a cosine: each optimiser at half its own starting lr
    assert opt.main.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.others[0].param_groups[0]["lr"] == pytest.approx(0.005)


def test_inputaware_anneal_generator_option_decays_g_with_the_classifier(monkeypatch):
    import distox.attacks.inputaware as ia

    made: list[JointOptimizer] = []

    class Recording(JointOptimizer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(ia, "JointOptimizer", Recording)
    g_lrs = {}
    for anneal in (False, True):
        atk = _ia(mask_epochs=0, poison_rate=0.25, anneal_generator=anneal)
        assert atk.params()["anneal_generator"] is anneal
        data = make_bundle(n_train=40, channels=1, side=16)
        model = create_model("small_cnn", data.num_classes, 1, data.mean, data.std, width=4)
        seen: list[float] = []
        atk.train_model(model, data, LoopConfig(epochs=2, batch_size=20), device="cpu", progress=False,
                        on_epoch_end=lambda e, m, seen=seen: seen.append(made[-1].others[0].param_groups[0]["lr"])
                        or {})
        g_lrs[anneal] = seen
    assert g_lrs[False] == [pytest.approx(0.01)] * 2  # the reference: G's lr never decays
    assert g_lrs[True] == [pytest.approx(0.005), pytest.approx(0.0, abs=1e-12)]  # cosine, T_max = 2


def test_inputaware_resume_matches_uninterrupted_run(trained_ia, tmp_path):
    full, full_model = trained_ia
    ckpt = tmp_path / "ckpt.pt"

    def interrupt(epoch, model):
        if epoch == 2:
            raise KeyboardInterrupt  # killed during epoch 2: the checkpoint holds epoch 1
        return {}

    with pytest.raises(KeyboardInterrupt):
        _train_ia(IA_CFG, ckpt, on_epoch_end=interrupt)
    assert (tmp_path / "ckpt-mask.pt").exists()
    resumed, resumed_model = _train_ia(IA_CFG, ckpt)
    x = make_bundle(**IA_DATA).test.x
    assert torch.allclose(resumed.apply(x), full.apply(x), atol=1e-5)
    for p, q in zip(resumed_model.parameters(), full_model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_inputaware_resources_round_trip(trained_ia):
    full, _ = trained_ia
    x = make_bundle(**IA_DATA).test.x
    res = full.resources()
    assert any(k.startswith("generator.") for k in res) and any(k.startswith("mask.") for k in res)
    loaded = InputAware()
    loaded.load_resources(res)
    assert (loaded.width, loaded.depth) == (4, 2)
    assert torch.equal(loaded.apply(x), full.apply(x))
    with pytest.raises(AttackError):
        InputAware().load_resources({k: v for k, v in res.items() if k.startswith("mask.")})


def test_inputaware_trigger_is_the_masked_blend():
    atk = _ia()
    atk.build_networks((1, 16, 16))
    x = torch.rand(4, 1, 16, 16)
    gnet, mnet = atk._networks()
    gnet.eval()
    mnet.eval()
    with torch.no_grad():
        g = gnet(x)
        m = torch.tanh(20 * mnet(x) - 10) / (2 + 1e-7) + 0.5
        expected = x * (1 - m) + g * m
        assert torch.allclose(atk.apply(x), expected, atol=1e-6)
    assert F.mse_loss(atk.apply(x), x) > 0
