"""The twenty-second round of the default study (BENCHMARKS.md): D3's clean-loss bound also on the
retain images under one shared perturbation (``universal_radius``, an option off in every preset)."""
from __future__ import annotations

import pytest
import torch

from distox.defenses import D3, DefenseError
from distox.defenses.universal import STEP_FRACTION, UniversalPerturbation

from .conftest import make_bundle
from .test_d3_eighteenth import FlatHead


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


def test_radius_zero_is_the_default_bit_for_bit_and_leaves_the_record_as_it_was():
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=2, batch_size=16, lr=0.01, blend=0.0, seed=0)
    plain = D3(**common)(FlatHead(), retain, device="cpu", progress=False)
    off = D3(universal_radius=0.0, **common)(FlatHead(), retain, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), off.model.state_dict().values()))
    assert "universal_radius" not in off.config and "universal" not in off.history[-1]


def test_every_preset_leaves_the_perturbation_off():
    from distox.defenses.d3 import PRESETS
    assert all("universal_radius" not in preset for preset in PRESETS.values())
    assert D3().universal_radius == 0.0


def test_a_radius_trains_on_each_batch_and_its_perturbed_copy_within_the_bound():
    retain = make_bundle(n_train=32).train
    common = dict(layers="all", init="near", epochs=3, batch_size=16, lr=0.01, blend=0.0, seed=0)
    plain = D3(**common)(FlatHead(), retain, device="cpu", progress=False)
    shared = D3(universal_radius=0.05, **common)(FlatHead(), retain, device="cpu", progress=False)
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
