"""The thirty-third round of the default study (BENCHMARKS.md): the copies crafted once against the suspect, each
crafted again at a larger radius while it does not fool the suspect (``shared_escalate``,
:class:`distox.defenses.universal.CraftedOnceCopies`)."""
from __future__ import annotations

import pytest
import torch

from distox.defenses import D3, DefenseError
from distox.defenses.universal import CraftedOnceCopies, escalation_radii, suspect_adversarial_images

from .test_d3_universal import _toy_conv_and_retain


def test_the_ladder_climbs_by_thirds_of_the_first_radius_up_to_the_multiple():
    assert escalation_radii(0.03, 1.0) == [0.03]
    assert escalation_radii(0.03, 2.0) == pytest.approx([0.03, 0.04, 0.05, 0.06])
    assert escalation_radii(0.06, 1.5) == pytest.approx([0.06, 0.08])
    with pytest.raises(ValueError, match="escalate"):
        escalation_radii(0.03, 0.5)


def _suspect_and_images() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 6, 6), torch.arange(64) % 4
    suspect = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    with torch.no_grad():  # confident on the clean images: a small radius fools few of them
        suspect[1].weight.mul_(0.2)
    return suspect, x, y


def test_one_radius_crafts_exactly_the_copies_it_crafted_before():
    suspect, x, y = _suspect_and_images()
    copies = CraftedOnceCopies(suspect, x, y, radius=0.05, steps=3, seed=3)
    bound = 0.05 * float(x.max() - x.min())
    images, wrong = suspect_adversarial_images(suspect, x, y, bound, 3, float(x.min()), float(x.max()),
                                               torch.Generator().manual_seed(3))
    assert torch.equal(copies.images, images) and copies.shared_rate == float(wrong.float().mean())
    assert list(copies.fooled_by_radius) == [0.05]


def test_a_copy_that_does_not_fool_is_crafted_again_at_the_next_radius_and_one_that_fools_is_kept():
    suspect, x, y = _suspect_and_images()
    once = CraftedOnceCopies(suspect, x, y, radius=0.05, steps=3, seed=3)
    climbed = CraftedOnceCopies(suspect, x, y, radius=0.05, steps=3, seed=3, escalate=2.0)
    shares = list(climbed.fooled_by_radius.values())
    assert list(climbed.fooled_by_radius) == pytest.approx([0.05, 0.2 / 3, 0.25 / 3, 0.1], abs=1e-6)  # rounded
    assert shares[0] == once.shared_rate and shares == sorted(shares) and shares[-1] > shares[0]
    assert climbed.shared_rate == shares[-1]
    with torch.no_grad():
        fooled_first = suspect(once.images).argmax(1) != y
    assert torch.equal(climbed.images[fooled_first], once.images[fooled_first])  # kept at the first radius
    moved = climbed.images[~fooled_first] - x[~fooled_first]
    assert float(moved.abs().max()) <= 0.1 * float(x.max() - x.min()) + 1e-6  # within the largest radius
    assert float(moved.abs().max()) > 0.05 * float(x.max() - x.min())  # some went past the first
    assert float(climbed.images.min()) >= float(x.min()) - 1e-7 and float(climbed.images.max()) <= float(x.max()) + 1e-7


def test_d3_records_the_ladder_only_when_it_climbs_and_refuses_what_it_cannot_do():
    model, retain = _toy_conv_and_retain()
    common = dict(preset="copies", epochs=1, batch_size=16, min_steps=0, seed=0)
    plain = D3(**common)(model, retain, device="cpu", progress=False)
    same = D3(shared_escalate=1, **common)(model, retain, device="cpu", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), same.model.state_dict().values()))
    assert "shared_escalate" not in plain.config and "shared_resolved" not in plain.config
    climbed = D3(shared_escalate=2, **common)(model, retain, device="cpu", progress=False)
    assert climbed.config["shared_escalate"] == 2.0
    fooled = climbed.config["shared_resolved"]["fooled_by_radius"]
    assert len(fooled) > 1 and list(fooled) == pytest.approx([0.03, 0.04, 0.05, 0.06][:len(fooled)], abs=1e-6)
    assert climbed.history[0]["shared_rate"] == list(fooled.values())[-1]
    for bad in (0.5, True, "2"):
        with pytest.raises(DefenseError, match="shared_escalate"):
            D3(shared_escalate=bad)
    with pytest.raises(DefenseError, match="shared_schedule='once'"):
        D3(shared_radius=0.03, shared_schedule="batch", shared_escalate=2)
