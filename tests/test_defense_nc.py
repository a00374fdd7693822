"""NC — Neural Cleanse: reverse-engineering, the MAD outlier rule, unlearning, and the properties
every defense shares (input untouched, same seed ⇒ same weights, clear errors). The backdoored
model is a small CNN trained with a BadNets patch (target 3) on the embedded digits data."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import distox
from distox.attacks import create as create_attack
from distox.cli import app
from distox.data import load_dataset
from distox.data.core import ImageSplit
from distox.defenses import NC, DefenseError, create
from distox.defenses.nc import (CostSchedule, Trigger, TriggerModel, anomaly_indices, flag_classes, mask_penalty,
                                unlearning_set)
from distox.metrics import evaluate
from distox.models import create_model
from distox.training import LoopConfig, train

from .conftest import make_bundle

TARGET = 3
#: Small enough for seconds, long enough for the target's mask to shrink onto the 1-pixel patch.
FAST = dict(nc_epochs=40, epochs=3, batch_size=64, augment=False, seed=0)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def planted():
    """A BadNets digits model (target 3), a clean one, a 200-image retain set, and NC run once on each."""
    torch.set_num_threads(1)
    data = load_dataset("digits")
    attack = create_attack("badnets", target=TARGET, poison_rate=0.1, seed=0)
    attack.check_data(data)

    def model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create_model("small_cnn", 10, 1, data.mean, data.std, width=8)

    bd = model(0)
    attack.train_model(bd, data, LoopConfig(epochs=10, batch_size=64, lr=0.05, seed=0), device="cpu", progress=False)
    clean = model(0)
    train(clean, data.train.x, data.train.y, LoopConfig(epochs=6, batch_size=64, lr=0.05, seed=0), device="cpu",
          progress=False)
    bd.eval(), clean.eval()
    retain = data.train.subset(torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:200])
    before = {"bd": _state(bd), "clean": _state(clean)}
    return {"data": data, "attack": attack, "bd": bd, "clean": clean, "retain": retain, "before": before,
            "bd_result": NC(**FAST)(bd, retain, device="cpu", progress=False),
            "clean_result": NC(**FAST)(clean, retain, device="cpu", progress=False)}


# ---------------------------------------------------------------- mechanism on planted models
def test_nc_flags_the_planted_target_and_unlearns_it(planted):
    data, attack, result = planted["data"], planted["attack"], planted["bd_result"]
    info = result.info
    assert info["flagged"] == [TARGET]
    assert info["anomaly_index"][TARGET] > 2
    assert min(info["mask_norms"]) == info["mask_norms"][TARGET]
    assert info["unlearned"] and info["unlearning_size"] == 160 + 40  # 80 % clean + 20 % stamped, one flag
    assert len(result.history) == FAST["epochs"]  # the fine-tuning ran, and its model is the one returned
    backdoor = attack.backdoor_test_set(data.test)
    before = evaluate(planted["bd"], data.test.x, data.test.y, backdoor, device="cpu")
    after = evaluate(result.model, data.test.x, data.test.y, backdoor, device="cpu")
    assert before["asr"] > 80 and after["asr"] < 20 and after["acc"] > 80
    assert json.loads(json.dumps(result.summary()))["flagged"] == [TARGET]


def test_nc_flags_no_class_of_a_clean_model_and_returns_it_untouched(planted):
    result = planted["clean_result"]
    assert result.info["flagged"] == [] and result.info["unlearned"] is False
    assert len(result.info["mask_norms"]) == len(result.info["anomaly_index"]) == 10
    assert result.history == []
    assert result.model is not planted["clean"]
    assert _same(_state(result.model), planted["before"]["clean"])


def test_reversed_trigger_of_the_target_is_the_patch(planted):
    defense = NC(**FAST)
    trigger = defense.reverse_engineer(planted["bd"], planted["retain"], TARGET, torch.device("cpu"))
    h, w = trigger.mask.shape[-2:]
    assert divmod(int(trigger.mask.flatten().argmax()), w) == (h - 1, w - 1)  # BadNets' corner pixel
    assert trigger.pattern[0, 0, h - 1, w - 1] > 0.9  # white, like the patch
    assert trigger.norm < 2.0 and trigger.attack_success >= defense.success_threshold
    assert _same(_state(planted["bd"]), planted["before"]["bd"])


def test_the_classifier_behind_the_trigger_stays_in_eval_mode():
    net = TriggerModel(create_model("small_cnn", 4, 1, (0.5,), (0.5,), width=4), (1, 8, 8)).train()
    assert net.training and not any(m.training for m in net.classifier.modules())
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["mask_tanh", "pattern_tanh"]


def test_input_model_is_never_modified(planted):
    assert _same(_state(planted["bd"]), planted["before"]["bd"])
    assert _same(_state(planted["clean"]), planted["before"]["clean"])
    assert planted["bd_result"].model is not planted["bd"]


def test_same_seed_gives_identical_weights(planted):
    kw = dict(FAST, nc_epochs=3, epochs=2, anomaly_threshold=0.1)  # a low threshold: something is unlearned
    a = NC(**kw)(planted["bd"], planted["retain"], device="cpu", progress=False)
    b = NC(**kw)(planted["bd"], planted["retain"], device="cpu", progress=False)
    assert a.info["flagged"] and a.info == b.info
    assert _same(_state(a.model), _state(b.model))
    assert not _same(_state(a.model), planted["before"]["bd"])


# ---------------------------------------------------------------- detection rule
def test_anomaly_index_uses_the_real_median_and_mad():
    norms = torch.tensor([1.0, 9.0, 10.0, 12.0, 13.0, 30.0])
    index, median, mad = anomaly_indices(norms)
    expected_median = float(np.median(norms.numpy()))  # 11: the two middle values averaged
    expected_mad = 1.4826 * float(np.median(np.abs(norms.numpy() - expected_median)))
    assert median == pytest.approx(expected_median) and mad == pytest.approx(expected_mad)
    assert torch.allclose(index, (norms.double() - expected_median).abs() / expected_mad)


def test_only_small_outliers_are_flagged_sorted_by_norm():
    norms = torch.tensor([1.0, 9.0, 10.0, 12.0, 13.0, 30.0, 0.5])
    index, _, _ = anomaly_indices(norms)
    assert index[5] > 2  # 30 is an outlier too, but a large mask betrays no backdoor
    assert flag_classes(norms) == [6, 0]
    assert flag_classes(norms, threshold=100.0) == []


def test_zero_mad_does_not_divide_by_zero():
    index, _, mad = anomaly_indices(torch.tensor([5.0, 5.0, 5.0, 5.0, 1.0]))
    assert mad == 0 and index[:4].tolist() == [0.0] * 4 and math.isinf(index[4])
    assert flag_classes(torch.tensor([5.0, 5.0, 5.0, 5.0, 1.0])) == [4]
    assert flag_classes(torch.full((4,), 3.0)) == []


# ---------------------------------------------------------------- cost schedule and penalty
def test_cost_schedule_follows_the_reference():
    s = CostSchedule(1e-3, patience=5, multiplier=2.0, early_stop_patience=3)
    assert [s.update(99.0, 10.0 - i) for i in range(5)] == [True] * 5
    assert s.cost == pytest.approx(2e-3) and s.raised and not s.lowered  # 5 successes in a row: ×2
    for _ in range(5):
        assert not s.update(50.0, 1.0)  # below the threshold: never kept, however small
    assert s.cost == pytest.approx(2e-3 / 2 ** 1.5) and s.lowered  # 5 failures in a row: ÷2^1.5
    assert not s.stop  # the best stopped improving 5 epochs ago, but the counter needs both flags first...
    s.update(50.0, 1.0)
    assert s.stop  # ...and has counted every epoch without a 1 % improvement since a best existed
    off = CostSchedule(1e-3, early_stop=False, early_stop_patience=1)
    for _ in range(20):
        off.update(99.0, 1.0), off.update(10.0, 1.0)
    assert not off.stop


def test_mask_penalty_is_scaled_with_image_area():
    full32, full28 = torch.ones(1, 1, 32, 32), torch.ones(1, 1, 28, 28)
    assert float(mask_penalty(full32)) == pytest.approx(float(mask_penalty(full28))) == pytest.approx(1024)
    patch = torch.zeros(1, 1, 32, 32)
    patch[..., -3:, -3:] = 1
    assert float(mask_penalty(patch)) == pytest.approx(9.0)  # the reference's sum at 32×32
    assert float(mask_penalty(full28, scale_cost=False)) == pytest.approx(784.0)


def test_unlearning_set_stamps_a_fifth_with_true_labels():
    retain = make_bundle(n_train=20, side=8).train
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., -2:, -2:] = 1.0
    trig = [Trigger(t, mask, torch.full((1, 1, 8, 8), float(t) / 4), 4.0, 100.0, 1) for t in (1, 2)]
    data = unlearning_set(retain, trig, 0.2, seed=0)
    assert len(data) == 16 + 2 * 4
    clean, first, second = data.x[:16], data.x[16:20], data.x[20:]
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(clean, retain.x[order[:16]]) and torch.equal(data.y[:16], retain.y[order[:16]])
    stamped = retain.x[order[16:]]
    assert torch.equal(first, trig[0].apply(stamped)) and torch.equal(second, trig[1].apply(stamped))
    assert torch.equal(data.y[16:20], retain.y[order[16:]]) and torch.equal(data.y[20:], retain.y[order[16:]])
    assert (first[..., -2:, -2:] == 0.25).all() and data.dataset == retain.dataset


# ---------------------------------------------------------------- errors and entry points
def test_fewer_retain_images_than_classes_is_a_clear_error():
    model = create_model("small_cnn", 10, 1, (0.5,), (0.5,), width=4)
    retain = ImageSplit(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(DefenseError, match="at least as many retain images as the model has classes: got 4 image"):
        NC(nc_epochs=1, epochs=1)(model, retain, device="cpu", progress=False)
    with pytest.raises(DefenseError, match="10 classes"):
        distox.purify(model, (retain.x, retain.y), method="nc", verbose=False, label_check="off", device="cpu")


@pytest.mark.parametrize("kw, msg", [
    ({"nc_epochs": 0}, "nc_epochs must be >= 1"), ({"init_cost": 0}, "init_cost must be > 0"),
    ({"cost_multiplier": 1.0}, "cost_multiplier must be > 1"), ({"success_threshold": 0.98 * 200}, "percentage"),
    ({"unlearning_ratio": 1.0}, "unlearning_ratio"), ({"anomaly_threshold": -1}, "anomaly_threshold"),
    ({"mask_betas": (0.5, 1.0)}, "mask_betas"), ({"early_stop_threshold": 1.5}, "early_stop_threshold"),
])
def test_bad_hyper_parameters_are_refused(kw, msg):
    with pytest.raises(DefenseError, match=msg):
        NC(**kw)


def test_reference_defaults():
    d = create("nc")
    assert (d.nc_epochs, d.mask_lr, d.mask_betas, d.init_cost, d.cost_multiplier, d.patience) == \
        (80, 0.1, (0.5, 0.9), 1e-3, 2.0, 5)
    assert (d.success_threshold, d.early_stop, d.early_stop_threshold, d.early_stop_patience) == (98.0, True, 0.99, 25)
    assert (d.anomaly_threshold, d.unlearning_ratio, d.scale_cost) == (2.0, 0.2, True)
    assert (d.epochs, d.batch_size, d.lr, d.momentum, d.weight_decay, d.augment) == (100, 256, 0.01, 0.9, 5e-4, True)


def test_purify_and_distox_defend_run_nc_and_record_what_it_found(tmp_path):
    bundle = make_bundle(n_train=40, side=8)
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, 1, (0.5,), (0.5,), width=4)
    result = distox.purify(model, (bundle.train.x, bundle.train.y), method="nc", nc_epochs=2, epochs=1,
                           verbose=False, label_check="off", device="cpu")
    assert {"flagged", "anomaly_index", "mask_norms"} <= set(result.info) and result.method == "nc"

    runner, run = CliRunner(), tmp_path / "run"
    res = runner.invoke(app, ["attack", "badnets", "--out", str(run), "--dataset", "digits", "--epochs", "1",
                              "--train-subset", "64", "--test-subset", "32", "--width", "4", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["defend", "nc", str(run), "--epochs", "1", "--count", "24", "--device", "cpu", "-q",
                              "--no-track", "-p", "nc_epochs=2", "-p", "anomaly_threshold=0.1"])
    assert res.exit_code == 0, res.output
    record = json.loads((run / "defense" / "nc" / "defense.json").read_text())
    assert record["method"] == "nc" and isinstance(record["info"]["flagged"], list)
    assert len(record["info"]["mask_norms"]) == 10
    assert record["epochs"] == (1 if record["info"]["flagged"] else 0)
    assert runner.invoke(app, ["methods", "nc"]).exit_code == 0
