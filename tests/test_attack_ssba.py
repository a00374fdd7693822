"""SSBA (attacks/ssba.py): an invisible, sample-specific, decodable trigger; exact rebuilds.

Uses 600 Fashion-MNIST training / 200 test images average-pooled to 14×14 and an 8-bit code
so that the encoder trains in seconds; the quality thresholds hold for exactly these settings.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from distox.attacks import AttackError, PreparedContext, create
from distox.attacks import ssba as ssba_mod
from distox.attacks.ssba import SSBA, psnr, secret_code
from distox.data import load_dataset
from distox.data.core import DatasetBundle, ImageSplit
from distox.runs import load_state, save_tensors

#: Settings under which the quality properties must hold (about 300 encoder steps).
QUALITY = dict(code_bits=8, encoder_epochs=16, encoder_images=600, encoder_batch=32, encoder_lr=3e-3,
               encoder_width=8, mse_weight=20.0, seed=3)
#: A few steps only: for determinism, caching and plumbing.
CHEAP = dict(code_bits=8, encoder_epochs=1, encoder_images=96, encoder_batch=32, encoder_width=4, seed=5)


@pytest.fixture(scope="module")
def fm14() -> DatasetBundle:
    full = load_dataset("fashion-mnist")
    gen = torch.Generator().manual_seed(0)
    tr = torch.randperm(len(full.train), generator=gen)[:600]
    te = torch.randperm(len(full.test), generator=gen)[:200]

    def small(split: ImageSplit, idx: torch.Tensor) -> ImageSplit:
        return ImageSplit(F.avg_pool2d(split.x[idx], 2), split.y[idx])

    return DatasetBundle("fashion-mnist-14", small(full.train, tr), small(full.test, te), 10,
                         full.mean, full.std, "tests")


@pytest.fixture(scope="module")
def trained(fm14, tmp_path_factory):
    cache = tmp_path_factory.mktemp("ssba-cache")
    atk = SSBA(**QUALITY)
    atk.prepare(PreparedContext(data=fm14, device="cpu", cache_dir=cache, progress=False))
    return atk, cache


def test_residual_is_imperceptible(trained, fm14):
    atk, _ = trained
    x = fm14.test.x  # held out: the encoder never saw the test split
    x_bd = atk.apply(x)
    assert x_bd.shape == x.shape and x_bd.min() >= 0 and x_bd.max() <= 1
    assert float(psnr(x_bd, x).mean()) >= 27.0
    assert float((x_bd - x).abs().max()) <= atk.max_residual + 1 / 255 + 1e-6
    assert torch.equal(torch.round(x_bd * 255) / 255, x_bd)  # 8-bit, like the reference's PNGs
    assert atk.info["psnr"] >= 27.0 and atk.info["from_cache"] is False


def test_code_is_recoverable_from_poisoned_images_only(trained, fm14):
    atk, _ = trained
    x = fm14.test.x
    acc = float((atk.decode(atk.apply(x)) == atk.code).float().mean())
    assert acc >= 0.9
    assert atk.info["bit_acc"] >= 0.9
    clean_acc = float((atk.decode(x) == atk.code).float().mean())
    assert clean_acc < 0.8  # the code lives in the residual, not in the decoder's bias


def test_trigger_is_sample_specific(trained, fm14):
    atk, _ = trained
    x = fm14.test.x[:50]
    off_diag = ~torch.eye(len(x), dtype=torch.bool)
    with torch.no_grad():  # the encoder's own residual, before clipping hides part of it
        raw = atk.codec.encoder(x, atk.code.expand(len(x), -1))
    diffs = (raw[:, None] - raw[None]).abs().flatten(2).mean(2)  # (50, 50) mean |r_i − r_j|
    assert float(diffs[off_diag].min()) > 0.0
    assert float(diffs[off_diag].mean()) > 0.3 * float(raw.abs().mean())  # measured: 0.74
    r = atk.apply(x) - x
    diffs = (r[:, None] - r[None]).abs().flatten(2).mean(2)
    assert float(diffs[off_diag].mean()) > 0.3 * float(r.abs().mean())


def test_secret_is_seeded(trained):
    atk, _ = trained
    assert torch.equal(atk.code, secret_code(QUALITY["seed"], QUALITY["code_bits"]))
    assert torch.equal(secret_code(1, 64), secret_code(1, 64))
    assert not torch.equal(secret_code(1, 64), secret_code(2, 64))


def test_deterministic_for_a_seed(fm14):
    outs = []
    for _ in range(2):
        atk = SSBA(**CHEAP)
        atk.prepare(PreparedContext(data=fm14, device="cpu", progress=False))
        outs.append((atk.apply(fm14.test.x[:16]), atk.resources()))
    assert torch.equal(outs[0][0], outs[1][0])
    assert outs[0][1].keys() == outs[1][1].keys()
    assert all(torch.equal(outs[0][1][k], outs[1][1][k]) for k in outs[0][1])


def test_resources_round_trip_through_safetensors(trained, fm14, tmp_path):
    atk, _ = trained
    res = atk.resources()
    assert {"ssba.code", "ssba.image_shape"} <= set(res) and all(k.startswith("ssba.") for k in res)
    save_tensors(tmp_path / "attack.safetensors", res)
    other = create("ssba", **{k: v for k, v in atk.params().items() if k != "name"})
    other.load_resources(load_state(tmp_path / "attack.safetensors"))
    assert other.params() == atk.params() and other.info["bit_acc"] == atk.info["bit_acc"]
    x = fm14.test.x[:32]
    assert torch.equal(other.apply(x), atk.apply(x))
    bd1, bd2 = atk.backdoor_test_set(fm14.test), other.backdoor_test_set(fm14.test)
    assert torch.equal(bd1.x, bd2.x) and torch.equal(bd1.target, bd2.target)


def test_cache_reuse_does_not_retrain(trained, fm14, monkeypatch):
    atk, cache = trained

    def fail(*a, **k):
        raise AssertionError("train_codec called although the codec is cached")

    monkeypatch.setattr(ssba_mod, "train_codec", fail)
    again = SSBA(**QUALITY)
    again.prepare(PreparedContext(data=fm14, device="cpu", cache_dir=cache, progress=False))
    assert again.info["from_cache"] is True and again.info["psnr"] == atk.info["psnr"]
    assert torch.equal(again.apply(fm14.test.x[:32]), atk.apply(fm14.test.x[:32]))


def test_cache_key_covers_parameters_and_data(fm14, tmp_path, monkeypatch):
    calls = []
    real = ssba_mod.train_codec

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ssba_mod, "train_codec", counting)
    ctx = PreparedContext(data=fm14, device="cpu", cache_dir=tmp_path, progress=False)
    SSBA(**CHEAP).prepare(ctx)
    SSBA(**CHEAP).prepare(ctx)
    assert len(calls) == 1
    SSBA(**{**CHEAP, "seed": 6}).prepare(ctx)  # other seed → other code and codec
    assert len(calls) == 2
    shifted = DatasetBundle(fm14.name, ImageSplit(1 - fm14.train.x, fm14.train.y), fm14.test, 10,
                            fm14.mean, fm14.std)
    SSBA(**CHEAP).prepare(PreparedContext(data=shifted, device="cpu", cache_dir=tmp_path, progress=False))
    assert len(calls) == 3  # same name and shape, other images


def test_poisoned_training_set(trained, fm14):
    atk, _ = trained
    poisoned, idx = atk.poison_training_set(fm14.train)
    assert len(idx) == round(0.1 * len(fm14.train))
    assert torch.all(poisoned.y[idx] == atk.target)
    keep = torch.ones(len(fm14.train), dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(poisoned.x[keep], fm14.train.x[keep]) and torch.equal(poisoned.y[keep], fm14.train.y[keep])
    assert float((poisoned.x[idx] - fm14.train.x[idx]).abs().max()) <= atk.max_residual + 1 / 255 + 1e-6


def test_errors(fm14):
    atk = SSBA(**CHEAP)
    with pytest.raises(AttackError, match="prepare"):
        atk.apply(fm14.test.x[:2])
    with pytest.raises(AttackError, match="code_bits"):
        SSBA(code_bits=0)
    with pytest.raises(AttackError, match="max_residual"):
        SSBA(max_residual=0)
    atk.prepare(PreparedContext(data=fm14, device="cpu", progress=False))
    with pytest.raises(AttackError, match="shape"):
        atk.apply(torch.rand(2, 3, 14, 14))
    with pytest.raises(AttackError, match="code"):
        SSBA(**{**CHEAP, "code_bits": 9}).load_resources(atk.resources())
    tiny = DatasetBundle("t", ImageSplit(torch.rand(8, 1, 4, 4), torch.zeros(8)),
                         ImageSplit(torch.rand(8, 1, 4, 4), torch.zeros(8)), 2, (0.5,), (0.5,))
    with pytest.raises(AttackError, match="at least 8"):
        SSBA().prepare(PreparedContext(data=tiny, device="cpu", progress=False))


def test_registered():
    atk = create("ssba", target=2, code_bits=16)
    assert isinstance(atk, SSBA) and atk.params()["code_bits"] == 16 and atk.kind == "data"
