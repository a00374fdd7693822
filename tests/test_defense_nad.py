"""NAD (Neural Attention Distillation): the attention map equals its definition, stages are the
last spatial stage outputs on any CNN (the reference's live terms on PreAct-ResNet18), the
student's loss is CE + Σ β·AT against a frozen fine-tuned teacher, bad input gives
DefenseError; input untouched, same seed => same weights."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import distox
import distox.defenses.nad as nadmod
from distox.defenses import NAD, DefenseError, create
from distox.defenses.nad import attention_loss, attention_map, find_stages
from distox.models import create_model
from distox.training import TrainState

from .conftest import make_bundle, tiny_model


def test_attention_map_equals_its_definition_on_a_hand_made_tensor():
    f = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]],
                       [[1.0, 2.0], [2.0, -1.0]]]])  # (N=1, C=2, H=2, W=2)
    # p = 2: channel-wise mean of |f|^2 = [[1, 4], [2, 5]], flattened, / its L2 norm sqrt(46)
    expected = torch.tensor([[1.0, 4.0, 2.0, 5.0]]) / (math.sqrt(46) + 1e-6)
    assert torch.allclose(attention_map(f, 2.0), expected, atol=1e-7)
    # p = 1: mean of |f| = [[1, 2], [1, 2]], / sqrt(10)
    assert torch.allclose(attention_map(f, 1.0), torch.tensor([[1.0, 2.0, 1.0, 2.0]]) / (math.sqrt(10) + 1e-6))
    # one map per sample, the sign of the activation is irrelevant, and the scale too
    two = torch.cat([f, -3 * f])
    assert attention_map(two).shape == (2, 4) and torch.allclose(attention_map(two)[1], expected[0], atol=1e-6)
    # a 1x1 map normalises to ~1 for any input: why NAD skips such stages (the reference's dead term)
    assert torch.allclose(attention_map(torch.rand(3, 8, 1, 1) + 0.1), torch.ones(3, 1), atol=1e-5)
    g = torch.rand(1, 2, 2, 2)
    assert attention_loss(f, g).item() == pytest.approx(F.mse_loss(attention_map(f), attention_map(g)).item())


def test_stages_are_the_last_spatial_stage_outputs():
    x3 = torch.rand(2, 3, 32, 32)
    preact = create_model("preactresnet18", 4, 3, width=0.125)
    assert find_stages(preact, x3)[-2:] == ["net.layer3", "net.layer4"]  # the reference's live terms
    assert NAD().resolve_stages(preact, x3) == {"net.layer3": 500.0, "net.layer4": 1000.0}
    cnn = tiny_model()  # 16x16 -> 8x8 -> pooled 2x2
    assert find_stages(cnn, torch.rand(2, 1, 16, 16)) == ["net.features.5", "net.features.9", "net.features"]
    # a map enlarged again (adaptive pooling of a 1x1 map to 3x3, as VGG's 7x7) is a copy: skipped
    replicate = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(8),
                              nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(36, 4))
    assert find_stages(replicate, torch.rand(2, 1, 16, 16)) == ["1"]


def test_student_loss_is_ce_plus_beta_weighted_attention_transfer(monkeypatch):
    retain = make_bundle(n_train=40).train
    x, y = retain.x[:8], retain.y[:8]
    captured, teachers = {}, []

    def call_objective(model, x_, y_, config, **kw):
        model.eval()  # BatchNorm on running statistics, so the hand computation below sees the same model
        captured.update(config=config, model=model, loss=kw["objective"](model, x, y))
        return TrainState()

    real_teacher = NAD.teacher

    def keep_teacher(self, *a, **kw):
        teachers.append(real_teacher(self, *a, **kw))
        return teachers[-1]

    monkeypatch.setattr(nadmod, "train", call_objective)
    monkeypatch.setattr(NAD, "teacher", keep_teacher)
    nad = NAD(teacher_epochs=2, batch_size=16, betas=(3.0, 7.0))
    nad(tiny_model(), retain, device="cpu", progress=False)
    c, teacher, student = captured["config"], teachers[0], captured["model"]
    assert (c.epochs, c.lr, c.momentum, c.weight_decay, c.scheduler, c.batch_size) == (10, 0.01, 0.9, 5e-4,
                                                                                       "constant", 16)
    assert nad.stages_resolved == {"net.features.9": 3.0, "net.features": 7.0}
    # the teacher: the suspect fine-tuned (it moved), frozen in eval mode
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))
    maps = {}
    hooks = [student.net.features[9].register_forward_hook(lambda m, a, o: maps.__setitem__("s9", o)),
             student.net.features.register_forward_hook(lambda m, a, o: maps.__setitem__("s", o)),
             teacher.net.features[9].register_forward_hook(lambda m, a, o: maps.__setitem__("t9", o)),
             teacher.net.features.register_forward_hook(lambda m, a, o: maps.__setitem__("t", o))]
    with torch.no_grad():
        ce = F.cross_entropy(student(x), y)
        teacher(x)
    for h in hooks:
        h.remove()
    expected = ce + 3.0 * attention_loss(maps["s9"], maps["t9"]) + 7.0 * attention_loss(maps["s"], maps["t"])
    assert expected.item() > ce.item() + 1e-4  # the attention terms are live
    loss, stats = captured["loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["ce"] == pytest.approx(ce.item(), rel=1e-5)
    loss.backward()  # gradients reach the student only
    assert all(p.grad is None for p in teacher.parameters())
    assert student.net.features[0].weight.grad is not None


def test_model_without_spatial_feature_maps_gives_defense_error():
    retain = make_bundle(n_train=40).train
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(DefenseError, match="no 4-D"):
        NAD(teacher_epochs=1, epochs=1)(mlp, retain, device="cpu", progress=False)
    with pytest.raises(DefenseError, match="not a module"):
        NAD(stages=["net.nope", "net.fc"], teacher_epochs=1, epochs=1)(tiny_model(), retain, device="cpu",
                                                                       progress=False)
    with pytest.raises(DefenseError, match="larger than 1x1"):
        NAD(stages=["net.fc"], betas=[1.0], teacher_epochs=1, epochs=1)(tiny_model(), retain, device="cpu",
                                                                        progress=False)


@pytest.mark.parametrize("kwargs", [{"teacher_epochs": 0}, {"betas": (-1.0, 2.0)}, {"betas": ()}, {"p": 0},
                                    {"stages": ["a"], "betas": (1.0, 2.0)}, {"scheduler": "step"},
                                    {"epochs": 0}, {"lr": 0}])
def test_bad_hyper_parameters_raise_defense_error(kwargs):
    with pytest.raises(DefenseError):
        NAD(**kwargs)


def test_defaults_are_the_reference_ones():
    nad = NAD()
    assert (nad.teacher_epochs, nad.epochs, nad.batch_size, nad.lr) == (10, 10, 256, 0.01)
    assert (nad.betas, nad.p, nad.momentum, nad.weight_decay) == ([500.0, 1000.0], 2.0, 0.9, 5e-4)
    assert (nad.scheduler, nad.augment, nad.stages) == ("constant", True, None)


def test_input_untouched_and_same_seed_same_weights():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retain = make_bundle(n_train=40).train
    runs = [create("nad", teacher_epochs=1, epochs=1, batch_size=16)(model, retain, device="cpu", progress=False)
            for _ in range(2)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())
    assert not any(m._forward_hooks for m in runs[0].model.modules())  # the taps are removed
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(before[k], a[k]) for k in a if a[k].is_floating_point())


def test_purify_runs_nad_by_name():
    bundle = make_bundle(n_train=40, n_test=20)
    assert "nad" in distox.defenses.list()
    res = distox.purify(tiny_model(), (bundle.train.x, bundle.train.y), method="nad", epochs=1, teacher_epochs=1,
                        batch_size=16, device="cpu", eval_data=(bundle.test.x, bundle.test.y), verbose=False)
    assert res.method == "nad" and "acc" in res.info["after"] and len(res.history) == 1


def test_resume_after_interruption_is_bit_identical(tmp_path, monkeypatch):
    from .test_defense_fp import resumes_bit_identical

    resumes_bit_identical(lambda: NAD(teacher_epochs=2, epochs=3, batch_size=16), tiny_model(),
                          make_bundle(n_train=40).train, tmp_path, monkeypatch)
