"""The accuracy warning: advice depends on the method and on what already ran, and it reaches
distox.purify, distox defend and distox purify (tests/test_practitioner.py) once each."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

import distox
from distox.experiment import DefenseSpec, run_defense
from distox.experiment import defense_runner
from distox.guidance import AccuracyWarning, accuracy_advice, accuracy_warning

from .conftest import make_bundle
from .test_experiment import copy_run, finished  # noqa: F401  (module-scoped attack run fixture)


def test_d3_advice_follows_what_already_ran():
    default = " ".join(accuracy_advice("d3", {"preset": "default", "lmd": 10.0}, 3000))
    assert "preset='paper'" in default and "lmd=40" in default and "more clean images" not in default
    assert "preset='default'" not in default and "preset='reference'" not in default  # measured against all-layers
    all_layers = " ".join(accuracy_advice("d3", {"preset": "all-layers", "lmd": 10.0}, 3000))
    assert all_layers.index("preset='default'") < all_layers.index("preset='reference'") < all_layers.index("paper")
    few = " ".join(accuracy_advice("d3", {"preset": "default", "lmd": 10.0}, 800))
    assert "more clean images (you gave 800; the default's mean ACC change" in few  # the default's own record
    assert "-5.80 points with 500 images, -3.40 with 1,000 and -1.24 with 3,000" in few
    few_all = " ".join(accuracy_advice("d3", {"preset": "all-layers", "lmd": 10.0}, 800))
    assert "more clean images (you gave 800; the all-layers preset's worst" in few_all
    paper = " ".join(accuracy_advice("d3", {"preset": "paper", "lmd": 40.0}, 3000))
    assert "preset='paper'" not in paper and "lmd=" not in paper
    reference = " ".join(accuracy_advice("d3", {"preset": "reference", "lmd": 0.5}, 3000))
    assert "preset='all-layers' with blend=0" in reference
    auto = " ".join(accuracy_advice("d3", {"preset": "default", "lmd": "auto"}, 3000))
    assert "lmd=" not in auto
    overlay = " ".join(accuracy_advice("d3", {"preset": "default", "lmd": 10.0, "blend": 0.3}, 3000))
    assert overlay.startswith("blend=0") and "blend=0, no overlay" not in default  # only while it is on
    assert "MobileNetV3-Small's backdoor stayed" in overlay  # the cost of taking it off is named with it


def test_other_methods_get_their_own_advice_or_none():
    ft_sam = " ".join(accuracy_advice("ft-sam", {"rho": 2.0}, 3000))
    assert "method 'd3'" in ft_sam and "lmd" not in ft_sam  # FT-SAM has no lmd
    assert accuracy_advice("sau", {}, 3000) == []
    text = accuracy_warning(80.0, 70.0, 2.0, "sau", {}, 3000)
    assert text.startswith("accuracy fell by 10.00 points (80.00% -> 70.00%)") and "no setting of sau" in text


def test_no_warning_within_tolerance_or_without_one():
    assert accuracy_warning(80.0, 78.5, 2.0, "d3", {}, 3000) is None
    assert accuracy_warning(80.0, 50.0, None, "d3", {}, 3000) is None
    assert accuracy_warning(80.0, 77.9, 2.0, "d3", {"preset": "default", "lmd": 10.0}, 3000) is not None


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 4))


def test_purify_api_warns_once_and_keeps_the_warning_on_the_result():
    b = make_bundle(n_train=40, n_test=40)
    kw = dict(epochs=1, batch_size=16, verbose=False, label_check="off", eval_data=(b.test.x, b.test.y))
    with pytest.warns(AccuracyWarning) as caught:
        res = distox.purify(_tiny(), (b.train.x, b.train.y), tolerance=-101, **kw)  # any change exceeds it
    assert len([w for w in caught if w.category is AccuracyWarning]) == 1
    assert res.warning and res.warning.startswith("eval_data accuracy fell by")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        quiet = distox.purify(_tiny(), (b.train.x, b.train.y), tolerance=None, **kw)
    assert quiet.warning is None


def test_defend_records_and_logs_the_warning_once(finished, tmp_path, monkeypatch, caplog):  # noqa: F811
    out = copy_run(finished, tmp_path)
    monkeypatch.setattr(defense_runner, "ACC_TOLERANCE", -101.0)
    with caplog.at_level(logging.WARNING, logger="distox"):
        rec = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=1, seed=7), tmp_path / "d", device="cpu",
                          progress=False, track_epochs=False)
    assert rec["warning"].startswith("test accuracy fell by")
    assert sum("test accuracy fell by" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(defense_runner, "ACC_TOLERANCE", 101.0)
    rec2 = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=1, seed=8), tmp_path / "d2", device="cpu",
                       progress=False, track_epochs=False)
    assert rec2["warning"] is None


def test_a_grid_cell_records_the_warning_without_logging_it(finished, tmp_path, monkeypatch, caplog):  # noqa: F811
    """``distox bench`` runs cells with ``warn=False``: the warning is in defense.json, not printed
    once per cell (``bench -q`` promises no warnings)."""
    import inspect

    from distox.bench import executors

    assert "warn=False" in inspect.getsource(executors.compute_cell)
    out = copy_run(finished, tmp_path)
    monkeypatch.setattr(defense_runner, "ACC_TOLERANCE", -101.0)
    with caplog.at_level(logging.WARNING, logger="distox"):
        rec = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=1, seed=7), tmp_path / "d", device="cpu",
                          progress=False, track_epochs=False, warn=False)
    assert rec["warning"].startswith("test accuracy fell by")
    assert not any("test accuracy fell by" in r.getMessage() for r in caplog.records)


def test_every_entry_point_defaults_to_the_one_tolerance():
    import inspect

    import typer.main

    from distox.cli import app
    from distox.experiment import defense_runner as runner
    from distox.guidance import DEFAULT_TOLERANCE

    assert runner.ACC_TOLERANCE == DEFAULT_TOLERANCE
    assert inspect.signature(distox.purify).parameters["tolerance"].default == DEFAULT_TOLERANCE
    purify_cmd = typer.main.get_command(app).commands["purify"]
    opt = next(p for p in purify_cmd.params if "--tolerance" in getattr(p, "opts", []))
    assert opt.default == DEFAULT_TOLERANCE


def test_backdoor_advice_names_what_cleared_the_default_s_resnets_and_skips_what_already_ran():
    from distox.guidance import backdoor_advice

    old = " ".join(backdoor_advice("d3", {"preset": "all-layers", "lmd": 10.0}, 3000))
    assert "preset='reference', epochs=12" in old and "layer_weighting='size-median'" in old
    assert "universal_radius=0.1" in old and "more clean images (you gave 3000" in old
    assert old.index("preset='default'") < old.index("shared_radius=0.03, shared_schedule='once'")
    assert old.index("shared_radius") < old.index("universal_radius")
    shared = " ".join(backdoor_advice("d3", {"preset": "all-layers", "shared_radius": 0.05}, 3000))
    assert "shared_radius" not in shared and "universal_radius" not in shared  # the two are not combined
    assert "more clean images" not in " ".join(backdoor_advice("d3", {"preset": "all-layers"}, 5000))
    used = " ".join(backdoor_advice("d3", {"preset": "all-layers", "layer_weighting": "size-median",
                                           "universal_radius": 0.1}, 5000))
    assert "size-median'" not in used and "universal_radius" not in used and "preset='reference'" in used
    assert "shared_radius" not in used
    # the default already has the copies and the classifier's distance: the all-layer distance with them is next
    default = " ".join(backdoor_advice("d3", {"preset": "default", "layers": "auto", "shared_radius": 0.03}, 3000))
    assert "preset='all-layers', shared_radius=0.03" in default and "size-median" not in default
    assert "universal_radius" not in default and "preset='reference', epochs=12" in default
    assert "shared_radius=0.05" in default
    # where the default's distance covered every weight (a model with no classifier) that suggestion is what ran;
    # where the caller's own option turned the copies off, a larger radius is not what is missing
    fallback = " ".join(backdoor_advice("d3", {"preset": "default", "layers": "auto", "shared_radius": 0.03,
                                               "layers_resolved": {"layers": "all", "reason": "no classifier"}}, 3000))
    assert "preset='all-layers', shared_radius" not in fallback and "shared_radius=0.05" in fallback
    off = " ".join(backdoor_advice("d3", {"preset": "default", "layers": "auto", "shared_radius": 0.0}, 3000))
    assert "shared_radius=0.05" not in off
    # on a model without BatchNorm the default's rule added the soft targets: running without them is named
    soft = {"preset": "default", "layers": "auto", "shared_radius": 0.03,
            "norm_rule_resolved": {"batchnorm": False, "changed": {"distill": 0.5, "distill_source": "retain"}}}
    assert "distill=0 (" in " ".join(backdoor_advice("d3", soft, 3000))
    assert "distill=0" not in default and "distill=0" not in old
    # the default's soft targets went to the copies alone: giving them to the plain images too is named; not where
    # they already went there, nor without copies (where ``distill_on`` changes nothing)
    rule = soft["norm_rule_resolved"]
    on_copies = {**soft, "norm_rule_resolved": {**rule, "changed": {**rule["changed"], "distill_on": "copies"}}}
    assert "distill_on='both' (" in " ".join(backdoor_advice("d3", on_copies, 3000))
    assert "distill_on='both'" not in " ".join(backdoor_advice("d3", soft, 3000))
    assert "distill_on='both'" not in " ".join(backdoor_advice("d3", {**on_copies, "shared_radius": 0.0}, 3000))
    explicit = {"preset": "default", "shared_radius": 0.03, "distill": 0.5, "distill_on": "copies"}  # the caller's
    assert "distill_on='both' (" in " ".join(backdoor_advice("d3", explicit, 3000))
    # the default's own lambda (10) above the reference code's: that smaller lambda is named; once it ran, not
    assert "lmd=0.5 (" in " ".join(backdoor_advice("d3", {**soft, "lmd": 10.0}, 3000))
    assert "lmd=0.5" not in " ".join(backdoor_advice("d3", {**soft, "lmd": 0.5}, 3000)) and "lmd=0.5" not in default
    reference = " ".join(backdoor_advice("d3", {"preset": "reference"}, 5000))
    assert "preset='reference'" not in reference and "size-median" not in reference
    assert "lmd=0.5" not in reference
    assert "preset='default'" in " ".join(backdoor_advice("d3", {"preset": "paper"}, 5000))
    assert "method 'd3'" in " ".join(backdoor_advice("ft-sam", {}, 3000))
    assert backdoor_advice("nc", {}, 3000) == []


def test_backdoor_warning_only_above_the_asr_tolerance():
    from distox.guidance import DEFAULT_ASR_TOLERANCE, backdoor_warning

    assert DEFAULT_ASR_TOLERANCE == 10.0
    assert backdoor_warning(9.99, 10.0, "d3", {"preset": "default"}, 3000) is None
    assert backdoor_warning(99.0, None, "d3", {"preset": "default"}, 3000) is None
    text = backdoor_warning(21.48, 10.0, "d3", {"preset": "default"}, 3000)
    assert text.startswith("the backdoor remains: 21.48% of the triggered test images") and "measured to help" in text
    assert "no setting of nc" in backdoor_warning(50.0, 10.0, "nc", {}, 3000)


def test_purify_api_warns_that_the_backdoor_remains_only_with_an_attack():
    from distox.attacks import create
    from distox.guidance import BackdoorWarning

    b = make_bundle(n_train=40, n_test=40)
    atk = create("badnets")
    atk.check_data(b)
    kw = dict(epochs=1, batch_size=16, verbose=False, label_check="off", eval_data=(b.test.x, b.test.y),
              tolerance=None)
    with pytest.warns(BackdoorWarning) as caught:
        res = distox.purify(_tiny(), (b.train.x, b.train.y), attack=atk, asr_tolerance=-1, **kw)  # any ASR exceeds it
    assert len([w for w in caught if w.category is BackdoorWarning]) == 1
    assert res.backdoor_warning.startswith("the backdoor remains:") and res.warning is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackdoorWarning)
        quiet = distox.purify(_tiny(), (b.train.x, b.train.y), attack=atk, asr_tolerance=None, **kw)
        unarmed = distox.purify(_tiny(), (b.train.x, b.train.y), asr_tolerance=-1, **kw)  # no attack: no ASR
    assert quiet.backdoor_warning is None and unarmed.backdoor_warning is None


def test_defend_judges_by_the_attacks_own_floor_when_the_run_has_a_clean_reference(tmp_path):
    import json

    from distox.experiment.defense_runner import asr_bar

    assert asr_bar(tmp_path) == (10.0, False)  # no metrics.json: the guess
    (tmp_path / "metrics.json").write_text(json.dumps({"acc": 90.0, "asr": 99.0}))
    assert asr_bar(tmp_path) == (10.0, False)  # no clean reference trained
    (tmp_path / "metrics.json").write_text(json.dumps({"acc": 90.0, "asr": 99.0, "clean_asr": 4.9}))
    assert asr_bar(tmp_path) == (pytest.approx(6.9), True)
    (tmp_path / "metrics.json").write_text(json.dumps({"acc": 90.0, "asr": 99.0, "clean_asr": 0.25}))
    assert asr_bar(tmp_path) == (pytest.approx(2.25), True)  # the vgg-a2a-badnets study model's floor
    # a clean ASR the caller knows (distox bench's shared clean cell) wins over the run directory's
    assert asr_bar(tmp_path, 4.9) == (pytest.approx(6.9), True)
    (tmp_path / "metrics.json").write_text(json.dumps({"acc": 90.0, "asr": 99.0}))
    assert asr_bar(tmp_path, 0.0) == (pytest.approx(2.0), True)


def test_defend_records_and_logs_the_backdoor_warning_once(finished, tmp_path, monkeypatch, caplog):  # noqa: F811
    out = copy_run(finished, tmp_path)
    monkeypatch.setattr(defense_runner, "asr_bar", lambda run_dir, clean_asr=None: (-1.0, True))  # any ASR is above it
    with caplog.at_level(logging.WARNING, logger="distox"):
        rec = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=1, seed=7), tmp_path / "d", device="cpu",
                          progress=False, track_epochs=False)
    assert rec["backdoor_warning"].startswith("the backdoor remains:") and "above the floor of -1.00%" in rec["backdoor_warning"]
    assert sum("the backdoor remains" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(defense_runner, "asr_bar", lambda run_dir, clean_asr=None: (101.0, True))
    rec2 = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=1, seed=8), tmp_path / "d2", device="cpu",
                       progress=False, track_epochs=False)
    assert rec2["backdoor_warning"] is None
