"""The twenty-second and twenty-third rounds of the default study (BENCHMARKS.md): D3's clean-loss
bound also on the retain images under one shared perturbation (``universal_radius``) or under per-image
perturbations shared with the suspect (``shared_radius``), and the twenty-fourth round's copies crafted
once against the suspect (``shared_schedule="once"``), options measured with the all-layer distance
(``all-layers``, the default then: every ``D3`` here runs it unless a test says otherwise). The default since
the twenty-fifth round has the crafted-once copies on."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distox.data.core import ImageSplit
from distox.defenses import D3 as D3Defense
from distox.defenses import DefenseError
from distox.defenses.universal import (STEP_FRACTION, CraftedOnceCopies, SharedAdversarialCopies,
                                      UniversalPerturbation)

from .conftest import make_bundle
from .test_d3_eighteenth import FlatHead


def D3(**options) -> D3Defense:  # noqa: N802 (the defense's own name, with the preset these options ran with)
    return D3Defense(**{"preset": "all-layers", **options})


def test_the_perturbation_is_one_image_kept_in_the_datas_range_and_climbs_the_loss():
    x = torch.rand(8, 1, 6, 6) * 2 - 1  # pixels in [-1, 1): the range is read from the data
    y = torch.arange(8) % 4
    shared = UniversalPerturbation(x, radius=0.1)
    assert shared.delta.shape == (1, 1, 6, 6) and shared.bound == pytest.approx(0.1 * float(x.max() - x.min()))
    assert not shared.ascend()  # no backward pass yet: nothing moves
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))

    def loss() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(model((x + shared.delta).clamp(shared.low, shared.high)), y))
    before = loss()
    for _ in range(30):
        xb, yb = shared.batch_with_perturbed(x, y)
        assert torch.equal(xb[:8], x) and torch.equal(yb, torch.cat([y, y]))
        assert float(xb.detach().min()) >= float(x.min()) and float(xb.detach().max()) <= float(x.max())
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        assert shared.ascend()
        assert float(shared.delta.abs().max()) <= shared.bound + 1e-7
    assert loss() > before  # δ moved up the perturbed images' loss
    assert shared.size() == pytest.approx(0.1, rel=1e-5)  # 30 steps of a tenth of the bound reach it
    assert STEP_FRACTION == 0.1
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    assert UniversalPerturbation.error_rate(logits, torch.tensor([0, 1, 0, 1])) == 0.5  # the second half only


@pytest.mark.parametrize("option, recorded", [("universal_radius", "universal"), ("shared_radius", "shared_rate")])
def test_radius_zero_is_the_default_bit_for_bit_and_leaves_the_record_as_it_was(option, recorded):
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=2, batch_size=16, lr=0.01, blend=0.0, seed=0)
    plain = D3(**common)(FlatHead(), retain, device="cpu", progress=False)
    off = D3(**{option: 0.0}, **common)(FlatHead(), retain, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), off.model.state_dict().values()))
    assert option not in off.config and recorded not in off.history[-1]


def test_every_preset_leaves_the_perturbation_off():
    from distox.defenses.d3 import PRESETS
    assert all("universal_radius" not in preset for preset in PRESETS.values())
    assert D3().universal_radius == 0.0


def plain_and_with(epochs: int, **option: float):
    """D3 on a tiny model without and with ``option``; the two results."""
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=epochs, batch_size=16, lr=0.01, blend=0.0, seed=0)
    return tuple(D3(**extra, **common)(FlatHead(), retain, device="cpu", progress=False) for extra in ({}, option))


def test_a_radius_trains_on_each_batch_and_its_perturbed_copy_within_the_bound():
    plain, shared = plain_and_with(3, universal_radius=0.05)
    assert shared.config["universal_radius"] == 0.05
    sizes = [row["universal"] for row in shared.history]
    assert 0 < sizes[0] <= sizes[-1] <= 0.05 + 1e-6  # δ grows from zero and stays in its box
    assert all(0.0 <= row["universal_error"] <= 1.0 for row in shared.history)
    moved = [not torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), shared.model.state_dict().values())]
    assert any(moved)  # the perturbed copies changed what was trained


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.1"])
def test_a_radius_outside_zero_to_one_is_refused(bad):
    with pytest.raises(DefenseError, match="universal_radius"):
        D3(universal_radius=bad)


def test_the_perturbation_and_self_distillation_are_not_combined():
    with pytest.raises(DefenseError, match="distill"):
        D3(universal_radius=0.1, distill=0.5)


def test_shared_copies_stay_in_the_ball_and_the_datas_range_and_need_the_model():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 6, 6) * 2 - 1
    y = torch.arange(16) % 4
    suspect = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    copies = SharedAdversarialCopies(suspect, x, radius=0.1)
    assert copies.bound == pytest.approx(0.1 * float(x.max() - x.min()))
    with torch.no_grad():
        suspect[1].weight.add_(1.0)  # the copy is frozen where the suspect was
    assert not torch.equal(copies.suspect[1].weight, suspect[1].weight)
    assert not any(p.requires_grad for p in copies.suspect.parameters())
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4)).train()
    xb, yb = copies.batch_with_perturbed(x, y, model)
    assert torch.equal(xb[:16], x) and torch.equal(yb, torch.cat([y, y])) and model.training
    delta = xb[16:] - x
    assert float(delta.abs().max()) <= copies.bound + 1e-6 and float(delta.abs().max()) > 0
    assert float(xb.min()) >= float(x.min()) - 1e-7 and float(xb.max()) <= float(x.max()) + 1e-7
    assert 0.0 <= copies.size() <= 1.0
    with pytest.raises(ValueError, match="model being purified"):
        copies.batch_with_perturbed(x, y)


def test_a_shared_radius_trains_on_the_copies_and_no_preset_sets_it():
    plain, on = plain_and_with(2, shared_radius=0.1)
    assert on.config["shared_radius"] == 0.1
    assert all(0.0 <= row["shared_rate"] <= 1.0 and 0.0 <= row["shared_error"] <= 1.0 for row in on.history)
    assert any(not torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), on.model.state_dict().values()))
    from distox.defenses.d3 import PRESETS
    assert all("shared_radius" not in PRESETS[name] for name in ("reference", "paper", "all-layers"))
    assert D3().shared_radius == 0.0 and D3Defense().shared_radius == PRESETS["default"]["shared_radius"] == 0.03
    # the default's copies step aside for a caller's own distill or universal perturbation (one copy per image)
    assert D3Defense(universal_radius=0.1).shared_radius == 0.0 and D3Defense(distill=0.5).shared_radius == 0.0
    assert D3Defense(shared_radius=0.03, distill=0.5).shared_radius == 0.03  # asked for both: both
    with pytest.raises(DefenseError, match="cannot be combined"):
        D3Defense(shared_radius=0.03, universal_radius=0.1)


@pytest.mark.parametrize("bad", [-0.1, 1.0, True, "0.1"])
def test_a_shared_radius_outside_zero_to_one_is_refused(bad):
    with pytest.raises(DefenseError, match="shared_radius"):
        D3(shared_radius=bad)


def test_shared_copies_are_not_combined_with_the_universal_perturbation():
    with pytest.raises(DefenseError, match="shared_radius cannot be combined"):
        D3(shared_radius=0.1, universal_radius=0.1)


@pytest.mark.parametrize("schedule", ["once", "batch"])
def test_with_distillation_each_copy_keeps_the_soft_target_of_the_image_it_was_made_from(monkeypatch, schedule):
    """``distill`` with ``shared_radius``: the copies (of a batch's first images) get the suspect's
    outputs on their originals, so the soft targets line up with the labels the loss sees."""
    seen = _spy_on_d3_loss(monkeypatch, lambda args: (len(args[0]), len(args[1]), args[8].detach().clone()))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    retain = ImageSplit(torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g), dataset="toy")
    D3(epochs=1, batch_size=16, blend=0.0, augment=False, distill=0.5, shared_radius=0.1, shared_fraction=0.5,
       shared_schedule=schedule)(model, retain, device="cpu", progress=False)
    assert seen and all(n == m == len(soft) == 24 for n, m, soft in seen)  # 16 images and copies of the first 8
    assert all(torch.equal(soft[16:], soft[:8]) for _, _, soft in seen)


@pytest.mark.parametrize("on", ["both", "images", "copies"])
def test_distill_on_gives_the_soft_targets_to_the_images_the_copies_or_both(monkeypatch, on):
    """``distill_on`` (thirty-fourth round): the part of the batch it names keeps the (1 − α)·CE + α·T²·KL mix,
    the other gets α 0, whose per-sample loss is the plain cross-entropy; ``"both"`` (the fallback) gives every
    image α and stays out of the record, the others are recorded."""
    from distox.defenses.d3 import d3_loss

    seen = _spy_on_d3_loss(monkeypatch, lambda args: (args[0].detach().clone(), args[1].clone(),
                                                      args[8].detach().clone(), args[9]))
    model, retain = _toy_conv_and_retain()
    d3 = D3Defense(epochs=1, batch_size=16, distill=0.5, distill_source="retain", shared_radius=0.1,
                   shared_fraction=0.5, distill_on=on)
    d3(model, retain, device="cpu", progress=False)
    assert seen
    for logits, y, soft, alpha in seen:
        assert len(logits) == len(soft) == 24  # 16 images, copies of the first 8
        if on == "both":
            assert alpha == pytest.approx(0.5)
            continue
        images, copies = (0.5, 0.0) if on == "images" else (0.0, 0.5)
        assert torch.equal(alpha, torch.tensor([images] * 16 + [copies] * 8))
        labels_alone = slice(16, None) if on == "images" else slice(0, 16)  # the same loss as without soft targets
        zero = [torch.zeros(1)]
        part_logits, part_y = logits[labels_alone], y[labels_alone]
        mixed = d3_loss(part_logits, part_y, zero, zero, 1.0, 0.0, soft=soft[labels_alone], alpha=alpha[labels_alone])
        plain_ce = d3_loss(part_logits, part_y, zero, zero, 1.0, 0.0)
        assert mixed[1]["clean_loss"] == pytest.approx(plain_ce[1]["clean_loss"])
    assert ("distill_on" in d3.get_params()) == (on != "both")
    with pytest.raises(DefenseError, match="distill_on"):
        D3Defense(distill=0.5, distill_on="labels")


def test_a_fraction_of_the_batch_gets_copies_and_the_error_rate_counts_only_them():
    torch.manual_seed(0)
    x, y = torch.rand(10, 1, 6, 6), torch.arange(10) % 4
    suspect = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    copies = SharedAdversarialCopies(suspect, x, radius=0.1, steps=1, fraction=0.25)
    xb, yb = copies.batch_with_perturbed(x, y, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4)))
    assert len(xb) == 13 and torch.equal(yb, torch.cat([y, y[:3]]))  # ⌈0.25 × 10⌉ = 3 copies, of the first three
    assert float((xb[10:] - x[:3]).abs().max()) <= copies.bound + 1e-6
    logits = torch.zeros(13, 4)
    logits[10:, 0] = 1.0  # the copies all predicted class 0: right for image 0 only (labels 0, 1, 2)
    assert copies.error_rate(logits, yb) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="fraction"):
        SharedAdversarialCopies(suspect, x, radius=0.1, fraction=0.0)


def test_shared_steps_and_fraction_are_recorded_only_when_set_and_checked():
    assert "shared_steps" not in D3(shared_radius=0.05).get_params() and "shared_fraction" not in D3().get_params()
    params = D3(shared_radius=0.05, shared_steps=1, shared_fraction=0.5).get_params()
    assert params["shared_steps"] == 1 and params["shared_fraction"] == 0.5
    for bad in ({"shared_steps": 0}, {"shared_steps": 1.5}, {"shared_fraction": 0.0}, {"shared_fraction": 1.5}):
        with pytest.raises(DefenseError, match=next(iter(bad))):
            D3(shared_radius=0.05, **bad)


def test_copies_crafted_once_fool_the_suspect_stay_in_the_ball_and_join_by_image_index():
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 6, 6) * 2 - 1, torch.arange(40) % 4
    suspect = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4)).train()
    before = [p.detach().clone() for p in suspect.parameters()]
    copies = CraftedOnceCopies(suspect, x, y, radius=0.2, steps=3, fraction=0.5, seed=3)
    assert suspect.training and all(torch.equal(a, b) for a, b in zip(before, suspect.parameters()))
    bound = 0.2 * float(x.max() - x.min())
    delta = copies.images - x
    assert 0 < float(delta.abs().max()) <= bound + 1e-6
    assert float(copies.images.min()) >= float(x.min()) - 1e-7 and float(copies.images.max()) <= float(x.max()) + 1e-7
    with torch.no_grad():  # the steps climbed the suspect's loss: its errors on the copies outnumber those on x
        wrong_clean = float((suspect(x).argmax(1) != y).float().mean())
        loss_clean = float(torch.nn.functional.cross_entropy(suspect(x), y))
        loss_copies = float(torch.nn.functional.cross_entropy(suspect(copies.images), y))
    assert loss_copies > loss_clean and copies.size() >= wrong_clean
    assert torch.equal(copies.loop_y, torch.arange(40))
    index = torch.tensor([7, 2, 9, 30])  # the loop batches indices; the labels and copies are looked up
    xb, yb = copies.batch_with_perturbed(x[index], index)
    assert torch.equal(xb[:4], x[index]) and torch.equal(xb[4:], copies.images[[7, 2]])  # ⌈0.5 × 4⌉ = 2
    assert torch.equal(yb, torch.cat([y[index], y[[7, 2]]]))
    again = CraftedOnceCopies(suspect, x, y, radius=0.2, steps=3, fraction=0.5, seed=3)
    assert torch.equal(again.images, copies.images)  # seeded: the same copies on a resume
    assert not torch.equal(CraftedOnceCopies(suspect, x, y, radius=0.2, steps=3, seed=4).images, copies.images)


def test_the_once_schedule_trains_on_copies_other_than_the_per_batch_ones_and_is_recorded_only_when_set():
    _, per_batch = plain_and_with(2, shared_radius=0.1)
    plain, once = plain_and_with(2, shared_radius=0.1, shared_schedule="once")
    assert once.config["shared_schedule"] == "once" and "shared_schedule" not in per_batch.config
    rates = {row["shared_rate"] for row in once.history}
    assert len(rates) == 1 and 0.0 <= rates.pop() <= 1.0  # crafted once: the same share every epoch
    assert all(0.0 <= row["shared_error"] <= 1.0 for row in once.history)
    for other in (plain, per_batch):
        assert any(not torch.equal(a, b) for a, b in zip(other.model.state_dict().values(),
                                                          once.model.state_dict().values()))
    assert "shared_schedule" not in D3(shared_schedule="once").get_params()  # without a radius it does nothing
    with pytest.raises(DefenseError, match="shared_schedule"):
        D3(shared_radius=0.05, shared_schedule="epoch")


def _spy_on_d3_loss(monkeypatch, pick) -> list:
    """What ``pick`` takes from the positional arguments (logits, y, weights, ...) of every D3 batch loss."""
    import distox.defenses.d3 as d3mod

    seen, real = [], d3mod.d3_loss

    def spy(logits, y, *args, **kw):
        seen.append(pick((logits, y) + args))
        return real(logits, y, *args, **kw)

    monkeypatch.setattr(d3mod, "d3_loss", spy)
    return seen


def _toy_conv_and_retain() -> tuple[nn.Module, ImageSplit]:
    """A convolution first (no MLP's input pruning changes the suspect before it scores the retain images), 32 images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(0)
    retain = ImageSplit(torch.rand(32, 1, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g), dataset="toy")
    return model, retain


@pytest.mark.parametrize("source", ["batch", "retain"])
def test_distill_source_retain_takes_the_suspects_outputs_on_the_plain_retain_images(monkeypatch, source):
    """``distill_source="retain"``: under the overlay (and with the copies looked up by index) every
    soft target is the suspect's output on a plain retain image; ``"batch"`` scores the overlaid batch."""
    from distox.metrics import logits as model_logits

    seen = _spy_on_d3_loss(monkeypatch, lambda args: args[8].detach().clone())
    model, retain = _toy_conv_and_retain()
    table = model_logits(model, retain.x, device="cpu")
    d3 = D3Defense(epochs=1, batch_size=16, distill=0.5, shared_radius=0.1, distill_source=source)
    assert d3.blend > 0 and d3.shared_schedule == "once"  # the default's overlay and copies looked up by index
    d3(model, retain, device="cpu", progress=False)
    rows = torch.cat(seen)
    on_plain = [bool(torch.isclose(row, table, atol=1e-5).all(1).any()) for row in rows]
    assert all(on_plain) if source == "retain" else not all(on_plain)  # (an overlay may be faint)
    assert ("distill_source" in d3.get_params()) == (source == "retain")
    with pytest.raises(DefenseError, match="distill_source"):
        D3Defense(distill=0.5, distill_source="teacher")


def test_the_decay_schedule_lowers_the_soft_targets_weight_each_epoch_to_zero_and_is_recorded_only_when_set(
        monkeypatch):
    """``distill_schedule="decay"``: epoch k + 1 of E trains with α · (1 − k/E) (so the last epochs come
    near the labels alone), recorded per epoch; ``"constant"`` keeps α and stays out of the record."""
    weights = _spy_on_d3_loss(monkeypatch, lambda args: args[9])  # α, as each batch's loss gets it
    model, retain = _toy_conv_and_retain()
    d3 = D3Defense(epochs=4, batch_size=16, min_steps=0, distill=0.8, distill_source="retain",
                   distill_schedule="decay")
    result = d3(model, retain, device="cpu", progress=False)
    assert weights == pytest.approx([0.8, 0.8, 0.6, 0.6, 0.4, 0.4, 0.2, 0.2])  # two batches an epoch
    assert [row["distill_alpha"] for row in result.history] == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert d3.get_params()["distill_schedule"] == "decay"
    weights.clear()
    constant = D3Defense(epochs=2, batch_size=16, min_steps=0, distill=0.8, distill_source="retain")
    result = constant(model, retain, device="cpu", progress=False)
    assert weights == pytest.approx([0.8] * 4) and "distill_alpha" not in result.history[-1]
    assert "distill_schedule" not in constant.get_params()
    assert "distill_schedule" not in D3Defense(distill_schedule="decay").get_params()  # without distill: nothing
    with pytest.raises(DefenseError, match="distill_schedule"):
        D3Defense(distill=0.5, distill_schedule="cosine")


def test_distill_scaled_lowers_the_weight_by_the_epochs_over_the_presets_and_only_then():
    """``distill_scaled``: where the run makes E epochs, more than the preset's E₀ (the steps floor's or
    the caller's), the soft targets weigh α · E₀ / E (recorded, and scaled once: the copy that runs does
    not scale again); where E ≤ E₀, α; off, or without ``distill``, the record is as before."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    g = torch.Generator().manual_seed(0)

    def retain(n):
        return ImageSplit(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g), dataset="toy")

    few, many = retain(500), retain(3000)
    scaled = D3Defense(distill=0.5, shared_radius=0.03, distill_source="retain", distill_scaled=True)
    ran = scaled.adapted_to(model, few)
    assert scaled.epochs == 12 and ran.epochs == 71  # 1,128 steps over 16 batches of 32
    assert ran.distill == pytest.approx(0.5 * 12 / 71)
    assert scaled.distill_resolved == {"distill": ran.distill, "epochs": 71, "of": 12}
    assert ran.adapted_to(model, few).distill == ran.distill  # not scaled twice
    ran = scaled.adapted_to(model, many)
    assert ran.epochs == 12 and ran.distill == 0.5 and not hasattr(scaled, "distill_resolved")
    # epochs the caller set count as the floor's: 60 epochs of the preset's 12
    longer = D3Defense(distill=0.5, shared_radius=0.03, distill_source="retain", distill_scaled=True, epochs=60)
    assert longer.adapted_to(model, many).distill == pytest.approx(0.1) and longer.distill_resolved["epochs"] == 60
    shorter = D3Defense(distill=0.5, shared_radius=0.03, distill_source="retain", distill_scaled=True, epochs=5)
    assert shorter.adapted_to(model, few).distill == 0.5
    plain = D3Defense(distill=0.5, shared_radius=0.03, distill_source="retain", distill_scaled=False)
    assert plain.adapted_to(model, few).distill == 0.5 and "distill_scaled" not in plain.get_params()
    # the default's BatchNorm rule (no BatchNorm here) scales its soft targets so; `copies`, the default before, has none
    assert D3Defense().adapted_to(model, few).distill == pytest.approx(0.5 * 12 / 71)
    assert D3Defense(preset="copies").adapted_to(model, few).distill == 0.0
    assert scaled.get_params()["distill_scaled"] is True
    assert "distill_scaled" not in D3Defense(distill_scaled=True).get_params()
    with pytest.raises(DefenseError, match="distill_scaled"):
        D3Defense(distill=0.5, distill_scaled="yes")
