"""The overlay augmentation ``blend`` (:func:`distox.training.blend_batch`): what it computes,
that it reaches every defense's loop, and that a run without it keeps its record."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distox.data.core import ImageSplit
from distox.defenses import DefenseError, create
from distox.training import LoopConfig, blend_batch


def test_blend_is_a_seeded_faint_overlay_of_another_image_of_the_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 5, 5, generator=g)
    out = blend_batch(x, torch.Generator().manual_seed(3), 0.3)
    assert torch.equal(out, blend_batch(x, torch.Generator().manual_seed(3), 0.3))  # seeded
    # replay the draws: weight a_i ~ U(0, 0.3), partner π(i) a permutation of the batch
    replay = torch.Generator().manual_seed(3)
    weight = torch.rand(16, generator=replay) * 0.3
    perm = torch.randperm(16, generator=replay)
    assert sorted(perm.tolist()) == list(range(16))
    expected = (1 - weight)[:, None, None, None] * x + weight[:, None, None, None] * x[perm]
    assert torch.allclose(out, expected, atol=1e-7)
    assert float(weight.max()) < 0.3 and not torch.equal(out, x)
    # every image stays nearer its own content than its partner's
    own = (out - x).flatten(1).norm(dim=1)
    partner = (out - x[perm]).flatten(1).norm(dim=1)
    assert bool((own <= partner + 1e-6).all())


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def tiny_retain() -> ImageSplit:
    g = torch.Generator().manual_seed(1)
    return ImageSplit(torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 3, (48,), generator=g), dataset="toy")


def weights_after(method: str, **kw) -> list[torch.Tensor]:
    defense = create(method, epochs=2, batch_size=16, augment=False, **kw)
    return list(defense(tiny_model(), tiny_retain(), progress=False).model.state_dict().values())


@pytest.mark.parametrize("method", ["ft", "d3"])
def test_blend_reaches_the_loop_and_is_seeded(method):
    on, again, off = weights_after(method, blend=0.3), weights_after(method, blend=0.3), weights_after(method, blend=0.0)
    assert all(torch.equal(a, b) for a, b in zip(on, again))
    assert not all(torch.equal(a, b) for a, b in zip(on, off))


def test_blend_is_recorded_only_when_on():
    assert "blend" not in create("ft").get_params() and "blend" not in create("d3", blend=0).get_params()
    assert "blend" not in create("d3", preset="paper").get_params()
    assert create("ft", blend=0.2).get_params()["blend"] == 0.2
    assert create("d3", preset="paper", blend=0.2).loop_config(tiny_retain()).blend == 0.2


@pytest.mark.parametrize("bad", [-0.1, 0.5, 0.9, math.nan])
def test_bad_blend_is_refused(bad):
    with pytest.raises(DefenseError, match="blend"):
        create("ft", blend=bad)
    with pytest.raises(ValueError, match="blend"):
        LoopConfig(blend=bad)


def test_distillation_scores_overlaid_batches_instead_of_cached_clean_outputs(monkeypatch):
    """With the overlay on, the images the loop trains on are not the retain images, so the
    suspect's soft targets must be scored per batch, not read from the per-image cache."""
    import distox.defenses.d3 as d3mod

    caches = []
    real = d3mod.SuspectTargets
    monkeypatch.setattr(d3mod, "SuspectTargets",
                        lambda *a, cache: caches.append(cache) or real(*a, cache=cache))
    weights_after("d3", distill=0.5, distill_source="batch", blend=0.3)
    weights_after("d3", distill=0.5, distill_source="batch", blend=0.0)
    assert caches == [False, True]
