"""D3's options from the third round of the default study (BENCHMARKS.md): ``distill`` (the
suspect model's own clean outputs as a soft target) and ``head_bias`` (zero the classifier's
bias at the warm start)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distox.data.core import ImageSplit
from distox.defenses import DefenseError
from distox.defenses.d3 import D3, PRESETS, warm_start
from distox.defenses.self_distill import SuspectTargets, distillation_loss
from distox.metrics import logits


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_retain(n: int = 48, seed: int = 0) -> ImageSplit:
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g), dataset="toy")


def test_distillation_loss_matches_its_definition():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [0.5, 0.5, 0.0]])
    t = 2.0
    p = torch.softmax(teacher / t, 1)
    q = torch.softmax(student / t, 1)
    expected = (p * (p.log() - q.log())).sum(1) * t * t
    got = distillation_loss(student, teacher, t)
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[1].abs() < 1e-6  # equal outputs: no loss
    assert got[0] > 0


def test_suspect_targets_cached_equal_scored():
    model, retain = tiny_model(), tiny_retain()
    cached = SuspectTargets(model, retain.x, retain.y, torch.device("cpu"), cache=True)
    scored = SuspectTargets(model, retain.x, retain.y, torch.device("cpu"), cache=False)
    assert torch.equal(cached.loop_y, torch.arange(len(retain.y))) and torch.equal(scored.loop_y, retain.y)
    idx = torch.tensor([3, 0, 7])
    (y_c, soft_c), (y_s, soft_s) = cached(retain.x[idx], idx), scored(retain.x[idx], retain.y[idx])
    assert torch.equal(y_c, retain.y[idx]) and torch.equal(y_s, retain.y[idx])
    assert torch.allclose(soft_c, soft_s, atol=1e-6)
    assert torch.allclose(cached.table, logits(model, retain.x), atol=0)
    with torch.no_grad():  # the frozen copy does not follow the original
        next(model.parameters()).add_(1.0)
    assert torch.allclose(scored(retain.x[idx], retain.y[idx])[1], cached(retain.x[idx], idx)[1], atol=1e-6)


def run(**kw) -> nn.Module:
    kw.setdefault("retain", tiny_retain())
    retain = kw.pop("retain")
    return D3(epochs=2, batch_size=16, **kw)(tiny_model(), retain, progress=False).model


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pure_distillation_ignores_the_labels():
    """distill=1: the hinge sees only the suspect's outputs, so relabelling changes nothing —
    and the option reaches the loop (a run without it does depend on the labels)."""
    retain = tiny_retain()
    relabelled = ImageSplit(retain.x, (retain.y + 1) % 3, dataset="toy")
    assert same(run(retain=retain, distill=1.0), run(retain=relabelled, distill=1.0))
    assert not same(run(retain=retain), run(retain=relabelled))
    assert not same(run(retain=retain, distill=0.5), run(retain=relabelled, distill=0.5))


def test_distillation_with_augmentation_scores_each_batch():
    a = run(distill=0.5, augment=True)
    b = run(distill=0.5, augment=True)
    assert same(a, b)  # seeded
    assert not same(a, run(distill=0.0, augment=True))


@pytest.mark.parametrize("preset", ["reference", "paper"])
def test_faithful_presets_do_not_distill_and_keep_their_record(preset):
    d3 = D3(preset=preset)
    assert d3.distill == 0.0
    params = d3.get_params()
    assert "distill" not in params and "distill_temperature" not in params
    assert "distill" not in PRESETS[preset]


def test_distill_recorded_when_on():
    params = D3(distill=0.5, distill_temperature=2).get_params()
    assert params["distill"] == 0.5 and params["distill_temperature"] == 2.0


@pytest.mark.parametrize("bad", [dict(distill=-0.1), dict(distill=1.5), dict(distill_temperature=0),
                                 dict(distill_temperature=-1), dict(distill=math.nan)])
def test_bad_distill_settings_are_refused(bad):
    with pytest.raises(DefenseError):
        D3(**bad)


# ---------------------------------------------------------------- head_bias (same study round)
def test_zero_classifier_bias_zeroes_only_the_final_classifier():
    from distox.defenses.d3 import zero_classifier_bias
    from distox.models import select_weights

    model = tiny_model()
    first_bias = model[5].bias.detach().clone()
    zero_classifier_bias(model, select_weights(model, "auto", torch.rand(1, 1, 8, 8)))
    assert torch.equal(model[7].bias, torch.zeros(3))
    assert torch.equal(model[5].bias, first_bias)


def test_head_bias_reaches_the_run(monkeypatch):
    import distox.defenses.d3 as d3mod

    calls = []
    real = d3mod.zero_classifier_bias
    monkeypatch.setattr(d3mod, "zero_classifier_bias", lambda m, head: (calls.append(sorted(head)), real(m, head)))
    a = run(head_bias="zero")
    assert calls == [["7.weight"]]
    assert not same(a, run())
    assert "head_bias" not in D3().get_params() and D3(head_bias="zero").get_params()["head_bias"] == "zero"
    with pytest.raises(DefenseError, match="head_bias"):
        D3(head_bias="mean")


def test_classifier_lr_puts_the_classifier_in_its_own_optimiser_group():
    """``classifier_lr``: the final classifier's weight and bias at that rate, every other
    parameter at ``lr``; at the same rate as ``lr`` the run is bit-identical to one without it;
    unset, nothing about it is recorded (records and cell keys as before)."""
    retain = tiny_retain()
    model = tiny_model()
    d3 = D3(classifier_lr=0.05, lr=0.01, epochs=2, batch_size=16)
    opt = d3.classifier_optimizer(model, d3.loop_config(retain), retain.x[:1])
    rest, head = opt.param_groups
    assert head["lr"] == 0.05 and rest["lr"] == 0.01
    assert [id(p) for p in head["params"]] == [id(model[7].weight), id(model[7].bias)]
    assert len(rest["params"]) == len(list(model.parameters())) - 2
    assert D3().classifier_optimizer(model, d3.loop_config(retain), retain.x[:1]) is None
    assert "classifier_lr" not in D3().get_params() and D3(classifier_lr=0.05).get_params()["classifier_lr"] == 0.05

    def weights(**kw):
        out = D3(epochs=2, batch_size=16, lr=0.02, **kw)(tiny_model(), retain, device="cpu", progress=False).model
        return [p.detach().clone() for p in out.parameters()]

    plain, same, faster = weights(), weights(classifier_lr=0.02), weights(classifier_lr=0.2)
    assert all(torch.equal(a, b) for a, b in zip(plain, same))
    assert not torch.equal(plain[-2], faster[-2])
    for bad in (0, -1.0, "fast", True):
        with pytest.raises(DefenseError, match="classifier_lr must be a number > 0"):
            D3(classifier_lr=bad)


def test_bn_recalibrate_replaces_running_statistics_by_the_plain_images():
    """``reestimate_batchnorm``: each BatchNorm's running mean/variance become those of what it
    receives on the images (one batch: the batch's mean and unbiased variance), with dropout off,
    no weight changed, and each module's mode and each layer's momentum restored; D3's
    ``bn_recalibrate`` runs it after training and is recorded only when on."""
    from distox.defenses.bn_stats import reestimate_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(144, 3))
    model.train()
    model[3].eval()
    x = torch.rand(20, 1, 8, 8)
    weights = [p.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    assert reestimate_batchnorm(model, x, batch_size=64) == 1
    seen = model[0](x)
    assert torch.allclose(model[1].running_mean, seen.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, seen.transpose(0, 1).flatten(1).var(1, unbiased=True), atol=1e-5)
    assert model[1].momentum == 0.3 and [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert reestimate_batchnorm(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x) == 0
    # a last batch of one image is left out (BatchNorm1d cannot take its statistics)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    assert reestimate_batchnorm(mlp, x[:9], batch_size=4) == 1

    retain = tiny_retain()
    plain = D3(epochs=1, batch_size=16, bn_recalibrate=False)(tiny_model(), retain, device="cpu", progress=False)
    recal = D3(epochs=1, batch_size=16, bn_recalibrate=True)(tiny_model(), retain, device="cpu", progress=False)
    assert "bn_recalibrate" not in plain.config and recal.config["bn_recalibrate"] is True
    assert D3().get_params()["bn_recalibrate"] == "auto"  # the default preset's rule (test_d3_fifteenth)
    assert all(torch.equal(a, b) for a, b in zip(plain.model.parameters(), recal.model.parameters()))
    assert not torch.equal(plain.model[1].running_var, recal.model[1].running_var)
    with pytest.raises(DefenseError, match="bn_recalibrate must be true, false or 'auto'"):
        D3(bn_recalibrate="yes")


def hand_centred_class_means(model: nn.Module, retain: ImageSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's starting weight and the retain set's centred per-class means of its input
    (the tiny model's hidden features), float64, computed without distox."""
    w0 = model[-1].weight.detach().clone().double()
    with torch.no_grad():
        model.eval()
        feats = model[:-1](retain.x)
        model.train()
    means = torch.stack([feats[retain.y == c].mean(0) for c in range(3)]).double()
    return w0, means - means.mean(0)


def test_class_means_warm_start_is_the_centred_retain_class_means_of_the_classifier_input():
    """``init="means"``: the warm-started classifier weight is the retain set's per-class mean of
    the classifier's input, centred over the classes, at ‖W_init‖ — computed here by hand from the
    hidden features; a hidden Linear (not the classifier) given the same start falls back to a
    random direction at its own norm."""
    from distox.defenses.d3 import start_from_class_means

    model, retain = tiny_model(), tiny_retain()
    w0, centred = hand_centred_class_means(model, retain)
    expected = centred * w0.norm() / centred.norm()
    hidden0 = model[5].weight.detach().clone()
    start_from_class_means(model, {"5.weight": model[5].weight, "7.weight": model[7].weight}, retain, 2.0,
                           torch.device("cpu"), batch_size=20)
    assert torch.allclose(model[-1].weight.double(), expected, atol=1e-5)
    random_start = hidden0.clone()
    warm_start([random_start], "random", 2.0, torch.Generator().manual_seed(0))
    assert torch.allclose(model[5].weight.detach(), random_start)  # not a class output: the random start


def test_class_means_warm_start_in_d3_reads_only_the_retain_data():
    """D3 with ``init="means"`` trains, and its start depends on the retain images (not on a seed)."""
    retain = tiny_retain()
    a = D3(preset="default", init="means", epochs=1, batch_size=16, lr=1e-9, blend=0.0)(
        tiny_model(), retain, device="cpu", progress=False).model
    shuffled = ImageSplit(retain.x.flip(0), retain.y.flip(0), dataset="toy")
    b = D3(preset="default", init="means", epochs=1, batch_size=16, lr=1e-9, blend=0.0, seed=7)(
        tiny_model(), shuffled, device="cpu", progress=False).model
    assert torch.allclose(a[-1].weight, b[-1].weight, atol=1e-4)  # same images, any order or seed: same start
    other = D3(preset="default", init="means", epochs=1, batch_size=16, lr=1e-9, blend=0.0)(
        tiny_model(), tiny_retain(seed=1), device="cpu", progress=False).model
    assert not torch.allclose(a[-1].weight, other[-1].weight, atol=1e-3)


def test_orthogonal_class_means_start_is_the_means_part_at_right_angles_to_the_suspect_classifier():
    """``init="means-orthogonal"``: the centred class means minus their projection on W_init, at
    ‖W_init‖ — orthogonal to the poisoned classifier (as the random start nearly is), computed here
    by hand."""
    from distox.defenses.d3 import start_from_class_means

    model, retain = tiny_model(), tiny_retain()
    w0, centred = hand_centred_class_means(model, retain)
    orth = centred - (centred * w0).sum() / (w0 * w0).sum() * w0
    start_from_class_means(model, {"7.weight": model[7].weight}, retain, 2.0, torch.device("cpu"), orthogonal=True)
    got = model[-1].weight.detach().double()
    assert torch.allclose(got, orth * w0.norm() / orth.norm(), atol=1e-5)
    assert abs(float((got * w0).sum())) < 1e-5 * float(w0.norm() ** 2)


def test_head_warmup_trains_only_the_classifier_and_leaves_batchnorm_statistics():
    """``head_warmup``: the classifier alone learns (its retain loss falls); every other weight and
    BatchNorm's running statistics stay as they were. Unset, it leaves the record (cell key) as before."""
    model, retain = tiny_model(), tiny_retain()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d3 = D3(preset="default", head_warmup=3, lr=0.05)
    with torch.no_grad():
        model.eval()
        loss0 = float(nn.functional.cross_entropy(model(retain.x), retain.y))
    d3.warm_up_classifier(model, retain, retain.x[:1], torch.device("cpu"))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"7.weight", "7.bias"}  # nothing else, BatchNorm's running statistics included
    with torch.no_grad():
        model.eval()
        assert float(nn.functional.cross_entropy(model(retain.x), retain.y)) < loss0
    assert "head_warmup" not in D3(preset="default").get_params() and D3(head_warmup=2).get_params()["head_warmup"] == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(DefenseError, match="head_warmup"):
            D3(head_warmup=bad)


def test_warmup_ramps_that_fraction_of_the_runs_steps_and_is_unrecorded_when_off(monkeypatch):
    """``warmup``: the loop's rate ramps up linearly over that fraction of the optimiser steps the run
    makes (``LoopConfig.warmup_steps``); 0 leaves the run and its record as before the option existed."""
    import distox.defenses.d3 as d3mod

    retain = tiny_retain(n=48)  # 3 batches of 16 an epoch
    assert D3(warmup=0.25, epochs=4, batch_size=16).warmup_steps(retain) == 3
    assert D3(warmup=0.01, epochs=4, batch_size=16).warmup_steps(retain) == 1
    assert D3().warmup_steps(retain) == 0
    assert "warmup" not in D3().get_params() and D3(warmup=0.1).get_params()["warmup"] == 0.1
    seen = []
    real = d3mod.train
    monkeypatch.setattr(d3mod, "train", lambda *a, **kw: (seen.append(a[3].warmup_steps), real(*a, **kw))[1])

    def weights(**kw):
        out = D3(epochs=2, batch_size=16, lr=0.02, **kw)(tiny_model(), retain, device="cpu", progress=False).model
        return [p.detach().clone() for p in out.parameters()]

    plain, ramped = weights(), weights(warmup=0.5)
    assert seen == [0, 3]
    assert not all(torch.equal(a, b) for a, b in zip(plain, ramped))
    for bad in (-0.1, 1.0, "slow", True):
        with pytest.raises(DefenseError, match="warmup must be a fraction"):
            D3(warmup=bad)


def test_anchor_penalty_is_the_relative_squared_drift_of_the_weights_outside_the_distance():
    """``Anchor`` (L2-SP): α · Σ ‖W − W⁰‖² / ‖W⁰‖² over tensors of two or more dimensions that are
    not left out and not all zeros; biases and left-out weights are never pulled."""
    from distox.defenses.anchor import Anchor

    model = tiny_model()
    with torch.no_grad():
        model[5].weight.zero_()  # an all-zero matrix: no size to be relative to
    pull = Anchor(model, leave_out=[model[7].weight], strength=0.5)
    assert [w is model[0].weight for w in pull.weights] == [True]
    assert float(pull.penalty()) == 0.0 and pull.drift() == 0.0
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(1.2)  # 20 % drift
        model[0].bias.add_(5.0)
        model[7].weight.add_(5.0)
    assert math.isclose(float(pull.penalty()), 0.5 * 0.2 ** 2, rel_tol=1e-5)
    assert math.isclose(pull.drift(), 0.2, rel_tol=1e-5)
    assert torch.equal(pull.start[0], w0)
    with pytest.raises(ValueError, match="strength"):
        Anchor(model, [], 0.0)


def test_anchor_keeps_the_weights_outside_the_distance_nearer_the_suspect_and_is_unrecorded_when_off():
    """D3's ``anchor``: with the distance on the classifier alone, the other weights end nearer
    their start than without it (the classifier still moves); 0 leaves the run and its record as before."""
    retain = tiny_retain(n=48)
    suspect = tiny_model()
    assert "anchor" not in D3().get_params() and D3(anchor=2.0).get_params()["anchor"] == 2.0

    def drift(**kw):
        res = D3(epochs=3, batch_size=16, lr=0.05, layers="auto", freeze_bn=True, **kw)(
            suspect, retain, device="cpu", progress=False)
        conv = float((res.model[0].weight - suspect[0].weight).norm() / suspect[0].weight.norm())
        return conv, res

    free, plain = drift()
    pulled, anchored = drift(anchor=1.0)
    assert 0 < pulled < free
    assert "anchor_drift" in anchored.history[-1] and "anchor_drift" not in plain.history[-1]
    assert math.isclose(anchored.history[-1]["anchor_drift"], max(
        float((anchored.model[i].weight - suspect[i].weight).norm() / suspect[i].weight.norm()) for i in (0, 5)),
        rel_tol=1e-4)
    assert not torch.equal(anchored.model[7].weight, suspect[7].weight)
    for bad in (-1.0, float("inf"), "strong", True):
        with pytest.raises(DefenseError, match="anchor must be"):
            D3(anchor=bad)
