"""The shared training loop: determinism, resume, augmentation, divergence guard."""
from __future__ import annotations

import pytest
import torch

from distox.models import create_model
from distox.training import Batches, LoopConfig, TrainingDiverged, augment_batch, train, warm_up

from .conftest import make_bundle


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", 4, 1, width=4)


@pytest.mark.parametrize("warmup_steps", [0, 5])
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, warmup_steps):
    data = make_bundle(n_train=48).train
    # 3 steps an epoch: a warm-up of 5 steps is still ramping when the run is interrupted
    cfg = LoopConfig(epochs=3, batch_size=16, augment=True, seed=2, warmup_steps=warmup_steps)
    ref = _model()
    train(ref, data.x, data.y, cfg, device="cpu", progress=False)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, model):
        if epoch == 2:
            raise Stop
        return {}

    ckpt = tmp_path / "ckpt.pt"
    model = _model()
    # the checkpoint is written after the callback; interrupt at epoch 2 leaves epoch 1 saved
    with pytest.raises(Stop):
        train(model, data.x, data.y, cfg, device="cpu", progress=False, on_epoch_end=stop_after_two,
              checkpoint=ckpt)
    assert ckpt.exists()
    fresh = _model()
    state = train(fresh, data.x, data.y, cfg, device="cpu", progress=False, checkpoint=ckpt)
    assert state.resumed_from_epoch == 1 and len(state.history) == 3
    for k, v in ref.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_augmentation_is_seeded_and_identity_without_padding_or_flip():
    x = torch.rand(6, 2, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(1), padding=2)
    b = augment_batch(x, torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(1), padding=0, flip=False), x)


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=1, flip=False)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    windows = [padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
    assert any(torch.equal(out, w) for w in windows)


def test_batches_cover_every_sample_once_and_avoid_a_trailing_single():
    x, y = torch.arange(33.0).view(33, 1, 1, 1), torch.arange(33)
    batches = list(Batches(x, y, 8, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [8, 8, 8, 8]  # the 33rd sample waits for the next epoch
    assert len(set(torch.cat([b[1] for b in batches]).tolist())) == 32
    assert [len(b[1]) for b in Batches(x[:20], y[:20], 8)] == [8, 8, 4]


def test_non_finite_loss_raises_with_the_epoch():
    data = make_bundle(n_train=16).train
    x = data.x.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train(_model(), x, data.y, LoopConfig(epochs=2, batch_size=16), device="cpu", progress=False)


def test_cosine_schedule_and_bad_config():
    data = make_bundle(n_train=16).train
    st = train(_model(), data.x, data.y, LoopConfig(epochs=4, batch_size=16, lr=0.1), device="cpu", progress=False)
    assert [round(r["lr"], 6) for r in st.history] == [0.1, 0.085355, 0.05, 0.014645]
    for bad in ({"epochs": 0}, {"optimizer": "lion"}, {"scheduler": "step"}, {"sam_rho": -1.0}, {"warmup_steps": -1},
                {"warmup_steps": 0.5}):
        with pytest.raises(ValueError):
            LoopConfig(**bad)


def test_the_trained_model_carries_no_gradients():
    data = make_bundle(n_train=32).train
    model = _model()
    train(model, data.x, data.y, LoopConfig(epochs=1, batch_size=16), device="cpu", progress=False)
    assert all(p.grad is None for p in model.parameters())


def test_warm_up_scales_the_first_steps_rates_and_returns_the_schedules():
    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.4}], lr=0.2)
    assert warm_up(opt, 0, 4) == [0.2, 0.4]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1])
    opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = 0.2, 0.4
    warm_up(opt, 2, 4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.15, 0.3])
    opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = 0.2, 0.4
    assert warm_up(opt, 4, 4) == [0.2, 0.4] and [g["lr"] for g in opt.param_groups] == [0.2, 0.4]


def test_a_warm_up_step_moves_the_weights_by_its_fraction_and_the_schedule_stays():
    data = make_bundle(n_train=16).train
    moved = {}
    for steps in (0, 4):
        model = _model()
        start = [p.detach().clone() for p in model.parameters()]
        cfg = LoopConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.0, weight_decay=0.0, scheduler="constant",
                         warmup_steps=steps)
        state = train(model, data.x, data.y, cfg, device="cpu", progress=False)
        moved[steps] = [p.detach() - s for p, s in zip(model.parameters(), start)]
        assert state.history[0]["lr"] == 0.1
    for full, ramped in zip(moved[0], moved[4]):  # one step, a quarter of the rate
        assert torch.allclose(ramped, full / 4, atol=1e-7)
