"""The sixteenth round of the default study (BENCHMARKS.md): training recipes. D3's
``logit_scale`` option (the suspect's logits brought to their retain temperature before D3 and
back after it, :mod:`distox.defenses.logit_scale`), and the attack recipes the round's check
models were trained with (``AttackSpec.optimizer`` / ``label_smoothing``)."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from distox.attacks.base import AttackError
from distox.data.core import ImageSplit
from distox.defenses import DefenseError
from distox.defenses.d3 import D3
from distox.defenses.logit_scale import TEMPERATURE_LIMIT, fit_temperature, scales_logits
from distox.experiment import AttackSpec
from distox.training import LoopConfig, train

from .test_d3_options import same, tiny_model, tiny_retain


def predicted_retain(model: nn.Module, n: int = 48, flipped: int = 8) -> ImageSplit:
    """Retain images labelled by ``model``'s own predictions, ``flipped`` of them relabelled: a
    suspect that predicts its retain labels well, but not perfectly (a finite temperature)."""
    x = tiny_retain(n).x
    y = outputs(model, x).argmax(1)
    y[:flipped] = (y[:flipped] + 1) % 3
    return ImageSplit(x, y, dataset="toy")


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def scaled_head(model: nn.Module, c: float) -> nn.Module:
    """A copy of ``model`` whose final Linear's weight and bias are times ``c``."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[-1].weight.mul_(c)
        other[-1].bias.mul_(c)
    return other


def test_temperature_minimises_the_loss_and_follows_the_logits_scale():
    torch.manual_seed(0)
    z = torch.randn(600, 5) * 3
    y = (z + 2 * torch.randn(600, 5)).argmax(1)
    t = fit_temperature(z, y)
    loss = lambda s: float(F.cross_entropy(z / s, y))
    assert loss(t) < loss(t * 1.02) and loss(t) < loss(t / 1.02)
    assert fit_temperature(4 * z, y) == pytest.approx(4 * t, rel=1e-6)
    assert fit_temperature(0.25 * z, y) == pytest.approx(0.25 * t, rel=1e-6)
    assert fit_temperature(torch.zeros(10, 5), y[:10]) == 1.0
    with torch.no_grad():
        assert fit_temperature(z, y) == t


def test_logit_scale_makes_d3_blind_to_the_classifier_scale():
    """The same predictions at 4× the logits: with ``logit_scale`` D3 returns the same model up to
    that factor (its outputs 4× the other's); without it, D3 runs differently."""
    retain = predicted_retain(tiny_model())
    a, b = tiny_model(), scaled_head(tiny_model(), 4.0)
    on = [D3(epochs=2, batch_size=16, logit_scale=True)(m, retain, progress=False) for m in (a, b)]
    ta, tb = (r.config["logit_scale_resolved"]["temperature"] for r in on)
    assert tb == pytest.approx(4 * ta, rel=1e-3) and all(r.config["logit_scale_resolved"]["scaled"] for r in on)
    x = retain.x
    assert torch.allclose(outputs(on[1].model, x), 4 * outputs(on[0].model, x), rtol=1e-3, atol=1e-4)
    off = [D3(epochs=2, batch_size=16)(m, retain, progress=False).model for m in (a, b)]
    assert not torch.allclose(outputs(off[1], x), 4 * outputs(off[0], x), rtol=1e-2, atol=1e-3)


def test_the_returned_model_keeps_the_suspects_classifier_norm():
    retain = predicted_retain(tiny_model())
    model = tiny_model()
    result = D3(epochs=2, batch_size=16, logit_scale=True)(model, retain, progress=False)
    assert result.config["logit_scale_resolved"]["scaled"]
    assert float(result.model[-1].weight.detach().norm()) == pytest.approx(float(model[-1].weight.detach().norm()), rel=1e-5)


def test_outputs_that_predict_nothing_are_left_alone(caplog):
    """Random labels: no finite temperature fits (the loss falls towards uniform as T grows)."""
    retain = tiny_retain()
    assert fit_temperature(outputs(tiny_model(), retain.x), retain.y) == TEMPERATURE_LIMIT
    with caplog.at_level(logging.WARNING, logger="distox"):
        result = D3(epochs=2, batch_size=16, logit_scale=True)(tiny_model(), retain, progress=False)
    assert result.config["logit_scale_resolved"]["scaled"] is False and "uniform guessing" in caplog.text
    assert same(result.model, D3(epochs=2, batch_size=16)(tiny_model(), retain, progress=False).model)


def test_outputs_that_do_not_scale_with_the_classifier_are_left_alone(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(*tiny_model(), nn.LayerNorm(3))
    retain = predicted_retain(model)
    assert not scales_logits(model, model[-2], retain.x, "cpu")
    plain = tiny_model()
    assert scales_logits(plain, plain[-1], retain.x, "cpu")
    log_probabilities = nn.Sequential(*tiny_model(), nn.LogSoftmax(1))  # a shift per image: the same softmax
    assert scales_logits(log_probabilities, log_probabilities[-2], retain.x, "cpu")
    with caplog.at_level(logging.WARNING, logger="distox"):
        result = D3(epochs=2, batch_size=16, logit_scale=True)(copy.deepcopy(model), retain, progress=False)
    assert result.config["logit_scale_resolved"]["scaled"] is False
    assert "do not scale with its classifier" in caplog.text
    assert same(result.model, D3(epochs=2, batch_size=16)(copy.deepcopy(model), retain, progress=False).model)


def test_logit_scale_is_off_in_every_preset_recorded_only_when_set_and_checked():
    for preset in ("reference", "paper", "default"):
        assert D3(preset=preset).logit_scale is False
        assert "logit_scale" not in D3(preset=preset).get_params()
    assert D3(logit_scale=True).get_params()["logit_scale"] is True
    for bad in ("yes", "auto", 1):
        with pytest.raises(DefenseError, match="logit_scale must be"):
            D3(logit_scale=bad)


# ---------------------------------------------------------------------------- attack recipes
def test_recipe_fields_are_in_the_spec_only_when_set_and_reach_the_loop():
    plain = AttackSpec("badnets")
    assert "optimizer" not in plain.to_dict() and "label_smoothing" not in plain.to_dict()
    spec = AttackSpec("badnets", optimizer="adam", label_smoothing=0.1, weight_decay=0.0)
    assert spec.to_dict()["optimizer"] == "adam" and spec.to_dict()["label_smoothing"] == 0.1
    assert AttackSpec.from_dict(spec.to_dict()) == spec
    config = spec.loop_config(28)
    assert (config.optimizer, config.label_smoothing, config.weight_decay) == ("adam", 0.1, 0.0)
    for bad, match in (({"optimizer": "lbfgs"}, "optimizer must be"), ({"label_smoothing": 1.0}, "label smoothing"),
                       ({"weight_decay": -1}, "weight decay")):
        with pytest.raises(AttackError, match=match):
            AttackSpec("badnets", **bad)


def test_the_loop_trains_against_smoothed_labels():
    torch.manual_seed(0)
    x, y = torch.rand(16, 4), torch.tensor([0, 1, 2, 3] * 4)
    model = nn.Linear(4, 4)
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y, label_smoothing=0.2))
        plain = float(F.cross_entropy(model(x), y))
    for smoothing, loss in ((0.2, expected), (0.0, plain)):
        state = train(copy.deepcopy(model), x, y, LoopConfig(epochs=1, batch_size=16, label_smoothing=smoothing),
                      device="cpu", progress=False)
        assert state.history[0]["loss"] == pytest.approx(loss, rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing applies to the default"):
        train(model, x, y, LoopConfig(epochs=1, label_smoothing=0.1), objective=lambda m, a, b: (m(a).sum(), {}),
              device="cpu", progress=False)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        LoopConfig(label_smoothing=1.0)


def test_bench_cells_carry_a_recipe_only_when_set():
    from distox.bench import expand, parse_config

    from .test_bench import BASE

    plain = expand(parse_config(BASE))
    adam = expand(parse_config({**BASE, "attack_settings": {**BASE["attack_settings"], "optimizer": "adam",
                                                            "label_smoothing": 0.1}}))
    assert all("optimizer" not in c.config and "label_smoothing" not in c.config for c in plain.attacks)
    assert all(c.config["optimizer"] == "adam" and c.config["label_smoothing"] == 0.1 for c in adam.attacks)
    assert {c.key for c in plain.attacks}.isdisjoint(c.key for c in adam.attacks)


def test_cli_attack_trains_with_the_recipe_it_is_given(tmp_path):
    import json

    from .test_cli_runs import ATTACK, assert_clean_error, invoke

    out = tmp_path / "run"
    result = invoke(*ATTACK, "--optimizer", "adam", "--lr", "0.001", "--label-smoothing", "0.1", "--weight-decay", "0",
                    "--out", out)
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "spec.json").read_text())
    assert (spec["optimizer"], spec["label_smoothing"], spec["weight_decay"], spec["lr"]) == ("adam", 0.1, 0.0, 0.001)
    training = json.loads((out / "attack.json").read_text())["training"]
    assert (training["optimizer"], training["label_smoothing"]) == ("adam", 0.1)
    assert_clean_error(invoke(*ATTACK, "--optimizer", "lbfgs", "--out", tmp_path / "bad"), "optimizer must be")


def test_an_attack_with_its_own_objective_refuses_label_smoothing_before_any_data():
    from distox.experiment import build_attack

    with pytest.raises(AttackError, match="inputaware trains with an objective of its own"):
        build_attack(AttackSpec("inputaware", label_smoothing=0.1))
    assert build_attack(AttackSpec("badnets", label_smoothing=0.1)).name == "badnets"
    assert build_attack(AttackSpec("inputaware")).name == "inputaware"
