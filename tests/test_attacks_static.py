"""Blended, SIG and LF: the defining property of each trigger, poisoning bookkeeping, resources."""
from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from distox.attacks import AttackError, PreparedContext, create
from distox.attacks import lf as lf_module
from distox.attacks._image_ops import gaussian_smooth, luminance
from distox.attacks.blended import Blended
from distox.attacks.lf import LF, targeted_deepfool
from distox.attacks.sig import SIG
from distox.models import create_model
from distox.runs import save_tensors

from .conftest import make_bundle


# ---------------------------------------------------------------------------- Blended
def test_blended_is_exact_alpha_blend_of_a_deterministic_pattern():
    atk = Blended(alpha=0.2, test_alpha=0.2)
    x = torch.rand(5, 3, 16, 16)
    out = atk.apply(x)
    p = atk.resources()["pattern"]
    assert p.shape == (3, 16, 16) and 0 <= float(p.min()) and float(p.max()) <= 1
    assert torch.equal(out, 0.8 * x + 0.2 * p)
    again = Blended().pattern_for((3, 16, 16))
    assert torch.equal(p, again)  # deterministic
    assert atk.params()["pattern"] == "skimage.data.chelsea"
    assert float(p.std()) > 0.05  # a natural image, not a constant


def test_blended_pattern_is_the_named_skimage_image_and_grey_is_luminance():
    import skimage.data

    cat = torch.from_numpy(skimage.data.chelsea().astype(np.float32) / 255).permute(2, 0, 1)
    atk = Blended(pattern="chelsea")
    assert atk.pattern == "skimage.data.chelsea"
    assert torch.allclose(atk.pattern_for(tuple(cat.shape)), cat, atol=1e-6)  # same size: no resampling
    rgb = Blended().pattern_for((3, 20, 24))
    grey = Blended().pattern_for((1, 20, 24))
    assert grey.shape == (1, 20, 24)
    assert torch.allclose(grey, luminance(rgb), atol=1e-6)
    other = Blended(pattern="skimage.data.astronaut").pattern_for((3, 20, 24))
    assert not torch.allclose(other, rgb, atol=0.05)


def test_blended_train_and_test_alpha_are_separate():
    data = make_bundle(channels=3)
    atk = Blended(alpha=0.3, test_alpha=0.1, poison_rate=0.25)
    atk.check_data(data)
    poisoned, idx = atk.poison_training_set(data.train)
    p = atk.resources()["pattern"]
    assert torch.equal(poisoned.x[idx], 0.7 * data.train.x[idx] + 0.3 * p)
    assert torch.equal(atk.apply(data.test.x), 0.9 * data.test.x + 0.1 * p)


def test_blended_noise_pattern_is_seeded():
    a = Blended(pattern="noise", seed=3).pattern_for((1, 8, 8))
    b = Blended(pattern="noise", seed=3).pattern_for((1, 8, 8))
    c = Blended(pattern="noise", seed=4).pattern_for((1, 8, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and float(a.std()) > 0.2


def test_blended_rejects_bad_arguments():
    with pytest.raises(AttackError, match="unknown blend pattern"):
        Blended(pattern="skimage.data.no_such_image")
    with pytest.raises(AttackError, match="alpha"):
        Blended(alpha=1.5)


# ---------------------------------------------------------------------------- SIG
def _sig_numpy(x: np.ndarray, delta: float, f: float) -> np.ndarray:
    m = x.shape[-1]
    j = np.arange(m)
    return np.clip(x + delta * np.sin(2 * np.pi * j * f / m)[None, None, None, :], 0, 1)


@pytest.mark.parametrize("channels,side", [(1, 28), (3, 32)])
def test_sig_equals_the_sinusoid_formula(channels, side):
    x = torch.rand(4, channels, side, side)
    out = SIG().apply(x)
    ref = _sig_numpy(x.double().numpy(), 40 / 255, 6)
    assert np.allclose(out.numpy(), ref, atol=1e-6)


def test_sig_matches_the_reference_column_values():
    # BackdoorBench's first 8 column values at width 32 (0-255 scale).
    expected = np.array([0, 36.96, 28.28, -15.31, -40, -15.31, 28.28, 36.96]) / 255
    out = SIG().apply(torch.full((1, 3, 32, 32), 0.5))
    got = (out[0, :, :, :8] - 0.5).numpy()
    assert np.allclose(got, np.broadcast_to(expected, got.shape), atol=0.01 / 255)


def test_sig_poisons_target_class_only_and_keeps_labels():
    data = make_bundle(n_train=120, classes=4)
    atk = SIG(target=1, poison_rate=0.2)
    atk.check_data(data)
    poisoned, idx = atk.poison_training_set(data.train)
    assert len(idx) == round(0.2 * 120) and len(set(idx.tolist())) == len(idx)
    assert torch.equal(poisoned.y, data.train.y)  # labels unchanged
    assert bool((data.train.y[idx] == 1).all())  # all target-class
    assert torch.equal(poisoned.x[idx], atk.apply(data.train.x[idx]))
    rest = torch.ones(120, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(poisoned.x[rest], data.train.x[rest])
    bd = atk.backdoor_test_set(data.test)
    assert bool((bd.true != 1).all()) and bool((bd.target == 1).all())


def test_sig_rate_above_target_share_is_a_clear_error():
    data = make_bundle(n_train=120, classes=4)  # target class holds 25 %
    with pytest.raises(AttackError, match=r"poison_rate <= 0\.25"):
        SIG(poison_rate=0.3).poison_training_set(data.train)


def test_sig_is_all2one_only():
    with pytest.raises(AttackError, match="clean-label"):
        SIG(mode="all2all")


# ---------------------------------------------------------------------------- poisoning bookkeeping
def test_poisoned_fraction_matches_rate_and_labels_go_to_target():
    data = make_bundle(n_train=200, channels=1)
    atk = Blended(poison_rate=0.15, target=2, seed=1)
    atk.check_data(data)
    poisoned, idx = atk.poison_training_set(data.train)
    assert len(idx) == round(0.15 * 200) and len(set(idx.tolist())) == len(idx)
    assert bool((poisoned.y[idx] == 2).all())
    changed = (poisoned.x != data.train.x).flatten(1).any(1) | (poisoned.y != data.train.y)
    assert set(torch.nonzero(changed).flatten().tolist()) <= set(idx.tolist())
    assert abs(int(changed.sum()) - len(idx)) <= int((data.train.y[idx] == 2).sum())


def test_all2all_labels_shift_by_one():
    data = make_bundle(classes=4)
    atk = Blended(mode="all2all", poison_rate=0.5)
    atk.check_data(data)
    poisoned, idx = atk.poison_training_set(data.train)
    assert torch.equal(poisoned.y[idx], (data.train.y[idx] + 1) % 4)
    bd = atk.backdoor_test_set(data.test)
    assert len(bd) == len(data.test) and torch.equal(bd.target, (data.test.y + 1) % 4)


@pytest.mark.parametrize("name", ["blended", "sig", "lf"])
def test_params_rebuild_the_attack(name):
    atk = create(name, target=1, seed=5)
    p = atk.params()
    again = create(p.pop("name"), **p)
    assert again.params() == atk.params()


# ---------------------------------------------------------------------------- LF
def _lf_kwargs(**kw):
    base = dict(surrogate_epochs=3, surrogate_subset=None, surrogate_lr=0.05, surrogate_batch_size=16,
                uap_images=8, max_passes=2, deepfool_iters=50)
    base.update(kw)
    return base


def _factory(data):
    return lambda: create_model("small_cnn", data.num_classes, data.in_channels, data.mean, data.std, width=4)


@contextlib.contextmanager
def _one_thread():
    """Tiny single-image steps: extra threads only add overhead (and change float sums)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prepare(atk, data, **ctx):
    with _one_thread():
        atk.prepare(PreparedContext(data, model_factory=_factory(data), device="cpu", progress=False, **ctx))


@pytest.fixture(scope="module")
def lf_prepared():
    data = make_bundle(n_train=120, n_test=60, channels=3, side=16)
    atk = LF(**_lf_kwargs())
    # The first optimizer a process builds imports torch._dynamo (seconds); not LF's cost.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    t0 = time.perf_counter()
    _prepare(atk, data)
    return atk, data, time.perf_counter() - t0


def _ac_low_band_fraction(plane: np.ndarray, radius: int) -> float:
    """Share of the (mean-removed) spectral energy within the central (2r+1)² FFT band."""
    spec = np.abs(np.fft.fftshift(np.fft.fft2(plane - plane.mean()))) ** 2
    cy, cx = plane.shape[0] // 2, plane.shape[1] // 2
    return float(spec[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1].sum() / spec.sum())


def test_lf_prepare_is_fast_and_records_its_info(lf_prepared):
    atk, data, seconds = lf_prepared
    assert seconds < 30  # a few seconds on an idle core; generous on a shared machine
    info = atk.params()["info"]
    assert set(info) >= {"fooling_rate", "fooling_rate_test", "linf", "passes", "surrogate_acc", "cache_key"}
    assert info["surrogate_acc"] > 50  # the surrogate learned the synthetic classes
    assert 1 <= info["passes"] <= 2 and info["updates"] >= 1


def test_lf_perturbation_within_linf_and_non_negative(lf_prepared):
    atk, data, _ = lf_prepared
    v = atk.perturbation
    assert v.shape == data.image_shape
    assert float(v.min()) >= 0.0
    assert float(v.max()) <= atk.linf + 1e-6
    assert math.isclose(float(v.max()), atk.linf, rel_tol=1e-5)  # min–max scaled to [0, linf]
    assert math.isclose(atk.info["linf"], float(v.abs().max()), rel_tol=1e-6)
    x = data.test.x[:5]
    assert torch.equal(atk.apply(x), (x + v).clamp(0, 1))


def test_lf_perturbation_is_low_frequency(lf_prepared):
    atk, _, _ = lf_prepared
    v = atk.perturbation.numpy()
    for plane in v:
        assert _ac_low_band_fraction(plane, radius=2) > 0.9
    noise = np.random.default_rng(0).random(v.shape[1:])
    assert _ac_low_band_fraction(noise, radius=2) < 0.3  # the measure does tell the difference


def test_lf_fooling_rate_is_what_the_surrogate_does(lf_prepared, monkeypatch):
    atk, data, _ = lf_prepared
    # Rebuilding from the same settings without the cache trains the same surrogate: the
    # recorded fooling rate must equal the rate recomputed on the same UAP images.
    captured = {}
    real_fit = LF._fit_uap

    def spy(self, model, data_, dev, progress):
        v, info = real_fit(self, model, data_, dev, progress)
        captured["model"] = model
        return v, info

    monkeypatch.setattr(LF, "_fit_uap", spy)
    again = LF(**_lf_kwargs())
    _prepare(again, data)
    assert torch.equal(again.perturbation, atk.perturbation)  # deterministic
    gen = torch.Generator().manual_seed(again.seed)
    pool = torch.nonzero(data.train.y != again.target).flatten()
    chosen = pool[torch.randperm(len(pool), generator=gen)[: again.uap_images]]
    with torch.no_grad():
        pred = captured["model"].eval()((data.train.x[chosen] + again.perturbation).clamp(0, 1)).argmax(1)
    assert math.isclose(again.info["fooling_rate"], float((pred == again.target).float().mean()))


def test_lf_cache_reuses_the_perturbation(tmp_path, monkeypatch):
    data = make_bundle(n_train=60, n_test=20, channels=1, side=12, classes=3)
    first = LF(**_lf_kwargs(uap_images=4, max_passes=1))
    _prepare(first, data, cache_dir=tmp_path)
    files = list(tmp_path.glob("lf-*.safetensors"))
    assert len(files) == 1 and files[0].name == f"lf-{first.info['cache_key']}.safetensors"

    def no_training(*a, **k):
        raise AssertionError("the cached perturbation should have been used")

    monkeypatch.setattr(lf_module, "train", no_training)
    second = LF(**_lf_kwargs(uap_images=4, max_passes=1))
    _prepare(second, data, cache_dir=tmp_path)
    assert torch.equal(second.perturbation, first.perturbation) and second.info == first.info
    with pytest.raises(AssertionError, match="cached"):  # other settings: another key, a rebuild
        _prepare(LF(**_lf_kwargs(uap_images=4, max_passes=1, linf=0.1)), data, cache_dir=tmp_path)


def test_lf_surrogate_does_not_start_from_the_victims_weights(monkeypatch):
    # Runs initialise the victim with torch.manual_seed(seed); the surrogate is the attacker's
    # own clean model, initialised from surrogate_seed (default seed + 1), so the UAP is not
    # tuned to the victim's own starting point. surrogate_seed=seed reproduces the shared start.
    data = make_bundle(n_train=40, n_test=20, channels=1, side=12, classes=3)
    starts = {}

    class Captured(Exception):
        pass

    def capture(self, model, data_, dev, progress):
        starts[self.surrogate_seed] = {k: v.clone() for k, v in model.state_dict().items()}
        raise Captured

    monkeypatch.setattr(LF, "_train_surrogate", capture)
    torch.manual_seed(7)
    victim = _factory(data)().state_dict()
    for kw in ({}, {"surrogate_seed": 7}):
        atk = LF(**_lf_kwargs(seed=7, **kw))
        with pytest.raises(Captured):
            _prepare(atk, data)
    assert LF(seed=7).params()["surrogate_seed"] == 8
    assert not all(torch.equal(victim[k], starts[8][k]) for k in victim)
    assert all(torch.equal(victim[k], starts[7][k]) for k in victim)
    assert LF(seed=7).cache_key(data, _factory(data)()) != LF(seed=7, surrogate_seed=7).cache_key(data, _factory(data)())


def test_targeted_deepfool_reaches_the_target_per_image():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 4)).eval()
    x = torch.rand(6, 2, 5, 5)
    start = model(x).argmax(1)
    target = int((start[0] + 1) % 4)
    steps, reached = targeted_deepfool(model, x, target, overshoot=0.02, max_iter=50)
    assert bool(reached.all()) and bool((model(x + steps).argmax(1) == target).all())
    at_target = start == target
    assert bool((steps[at_target] == 0).all()) and bool((steps[~at_target].flatten(1).norm(dim=1) > 0).all())
    # Batched = one image at a time (every image's gradient is its own).
    for i in range(len(x)):
        one, ok = targeted_deepfool(model, x[i:i + 1], target, overshoot=0.02, max_iter=50)
        assert bool(ok[0]) and torch.allclose(one[0], steps[i], atol=1e-6)


def test_lf_needs_a_surrogate_and_a_perturbation():
    data = make_bundle()
    with pytest.raises(AttackError, match="model factory"):
        LF().prepare(PreparedContext(data))
    with pytest.raises(AttackError, match="prepare"):
        LF().apply(data.test.x)


def test_gaussian_smooth_preserves_a_constant_interior_and_is_separable():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1.0
    y = gaussian_smooth(x, sigma=2.0)[0, 0]
    assert math.isclose(float(y.sum()), 1.0, rel_tol=1e-5)  # impulse fully inside: mass kept
    outer = torch.outer(y[:, 10], y[10, :]) / float(y[10, 10])
    assert torch.allclose(outer, y, atol=1e-7)


# ---------------------------------------------------------------------------- resources
def _roundtrip(atk, tmp_path):
    path = tmp_path / f"{atk.name}.safetensors"
    save_tensors(path, atk.resources())
    p = atk.params()
    fresh = create(p.pop("name"), **p)
    fresh.load_resources(load_file(str(path)))
    return fresh


@pytest.mark.parametrize("pattern", ["skimage.data.chelsea", "noise"])
def test_blended_resources_round_trip(tmp_path, pattern):
    data = make_bundle(channels=3)
    atk = Blended(pattern=pattern, seed=7)
    atk.check_data(data)
    fresh = _roundtrip(atk, tmp_path)
    assert torch.equal(fresh.apply(data.test.x), atk.apply(data.test.x))
    with pytest.raises(AttackError, match="shape"):
        fresh.apply(torch.rand(2, 3, 8, 8))


def test_lf_resources_round_trip(tmp_path, lf_prepared):
    atk, data, _ = lf_prepared
    fresh = _roundtrip(atk, tmp_path)
    assert torch.equal(fresh.apply(data.test.x), atk.apply(data.test.x))
    assert fresh.info == atk.info


def test_sig_needs_no_resources():
    assert SIG().resources() == {}
