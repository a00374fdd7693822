"""benchmarks/d3_study.py's cache of done cells: a run is the same under any spelling of its path,
and a label reused with other settings is reported, not silently taken as done."""
from __future__ import annotations

import argparse
import json

from .conftest import load_benchmark


def test_done_lines_match_any_spelling_and_differs_names_what_changed(tmp_path, monkeypatch):
    study = load_benchmark("d3_study")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "m").mkdir(parents=True)
    args = argparse.Namespace(epochs=12, batch_size=32, seed=0, ratio=None, count=500)
    _, opts, _ = study.defense_of({"preset": "default"}, args)
    line = {"run": "runs/m", "candidate": "default", "params": opts, "revision": 7, "count": 500}
    out = tmp_path / "cells.jsonl"
    out.write_text(json.dumps(line) + "\n")
    done = study.done_lines(out)
    assert (str((tmp_path / "runs" / "m").resolve()), "default") in done
    assert study.differs(line, {"preset": "default"}, args) is None
    assert "preset': 'paper'" in study.differs(line, {"preset": "paper"}, args)
    assert "500 retain images (now 1000)" in study.differs(line, {"preset": "default"},
                                                          argparse.Namespace(**{**vars(args), "count": 1000}))


def test_a_line_before_the_default_became_what_it_is_counts_under_the_presets_name_now():
    """A D3 line that ran ``preset: default`` before revision 4 (no ``revision`` recorded) ran what the
    ``copies`` preset is now: a step spelling ``preset:copies`` finds it done, one spelling ``default`` does not.
    At revisions 4, 5 and 6 a model with BatchNorm (read from the line's resolved rule) ran ``copies``, ``soft`` and
    ``soft-lr03``; one without, and a line that does not say, ``soft-lr03`` (revision 7 changed every model's
    default); from revision 7 on the line keeps ``default``."""
    study = load_benchmark("d3_study")
    args = argparse.Namespace(epochs=None, batch_size=32, seed=0, ratio=None, count=3000)
    _, opts, _ = study.defense_of({"preset": "default"}, args)
    old = {"run": "runs/m", "candidate": "default", "params": opts, "method": "d3", "count": 3000}
    assert study.differs(old, {"preset": "copies"}, args) is None
    assert "copies" in study.differs(old, {"preset": "default"}, args)
    four = {**old, "revision": 4}  # not saying whether its model had BatchNorm: the change every model had counts
    assert study.differs(four, {"preset": "soft-lr03"}, args) is None
    assert study.differs(four, {"preset": "default"}, args) is not None
    new = {**old, "revision": 7}
    assert study.differs(new, {"preset": "default"}, args) is None
    assert study.differs(new, {"preset": "copies"}, args) is not None

    def ran(revision: int, batchnorm: bool) -> str:
        line = {**old, "revision": revision, "resolved": {"norm_rule_resolved": {"batchnorm": batchnorm}}}
        return study.recorded_params(line)["preset"]
    assert [ran(4, True), ran(5, True), ran(6, True), ran(7, True)] == ["copies", "soft", "soft-lr03", "default"]
    assert [ran(4, False), ran(6, False), ran(7, False)] == ["soft-lr03", "soft-lr03", "default"]
    ft = {**old, "method": "ft", "params": {**opts, "preset": "default"}}  # only D3's preset was renamed
    assert study.recorded_params(ft) == ft["params"]


def test_a_user_model_line_of_an_earlier_revision_counts_its_default_under_the_preset_that_runs_it_now(tmp_path):
    """benchmarks/user_models.py: a D3 line recorded with ``preset: default`` and no ``revision`` ran what ``copies``
    runs now on a model with BatchNorm, so a step naming ``--preset copies`` finds it done; at revision 5 what
    ``soft`` runs (the thirty-third round gave such models lr 0.03), at revision 6 ``soft-lr03``; on a model without
    BatchNorm revision 5's default is ``soft-lr03`` too (the thirty-fifth round moved every model's soft targets to the
    copies); a line of revision 7 keeps its preset; another method's preset field is left alone."""
    users = load_benchmark("user_models")
    old = {"model": "resnet18", "images": 3000, "method": "d3", "preset": "default", "epochs": None, "seed": 0,
           "label": "half", "params": {"shared_fraction": 0.5}}
    five = {**old, "seed": 1, "revision": 5}
    six = {**old, "seed": 2, "revision": 6}
    seven = {**old, "seed": 3, "revision": 7}
    no_bn = {**five, "model": "mlp-mixer"}
    ft_sam = {**old, "method": "ft-sam", "label": None}
    lines = (old, five, six, seven, no_bn, ft_sam)
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert [r["preset"] for r in users.recorded(tmp_path)] == [
        "copies", "soft", "soft-lr03", "default", "soft-lr03", "default"]
    assert users.D3.revision == 7


def test_the_user_recipes_mixup_and_random_erasing_do_what_their_docstrings_say():
    """benchmarks/user_models.py (thirty-fifth round's check models): without ``mixup`` the loss is plain
    cross-entropy; with it, the batch mixed with a permutation of itself at one weight λ and the loss mixed alike
    (so it lies between the two label sets' losses); ``erased`` zeroes one 8×8 square in some images and leaves the
    rest as they were."""
    import torch
    import torch.nn.functional as F

    users = load_benchmark("user_models")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    assert torch.equal(users.recipe_loss(model, x, y, {}), F.cross_entropy(model(x), y))
    torch.manual_seed(1)
    mixed = users.recipe_loss(model, x, y, {"mixup": 0.2})
    torch.manual_seed(1)
    lam = float(torch.distributions.Beta(0.2, 0.2).sample())
    other = torch.randperm(16)
    logits = model(lam * x + (1 - lam) * x[other])
    expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[other])
    assert torch.allclose(mixed, expected) and 0 < lam < 1
    torch.manual_seed(2)
    ones = torch.ones(64, 1, 28, 28)
    erased = users.erased(ones)
    zeros = (erased == 0).flatten(1).sum(1)
    assert set(zeros.tolist()) <= {0, 64} and 0 < int((zeros == 64).sum()) < 64 and torch.equal(ones, torch.ones_like(ones))


def test_every_user_model_classifies_a_fashion_mnist_batch_and_its_trigger_stays_an_image():
    """benchmarks/user_models.py: each recipe's model (the thirty-second round's ConvMixer, ConvNeXt-style network
    and MLP-Mixer, the thirty-third's EfficientNet- and DenseNet-like networks among them) maps a batch of 1×28×28 images to ten logits, and its trigger changes the images
    while keeping them in [0, 1]."""
    import torch

    users = load_benchmark("user_models")
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28) * 0.5
    for name, spec in users.MODELS.items():
        triggered = spec["trigger"](x)
        assert triggered.shape == x.shape and 0 <= triggered.min() and triggered.max() <= 1, name
        assert not torch.equal(triggered, x), name
        assert spec["build"]().eval()(spec["scale"](triggered)).shape == (4, 10), name
    assert {"convmixer", "convnext-ln", "mlp-mixer", "efficientnet-lite", "densenet-lite"} <= set(users.MODELS)


def test_table_run_directories_count_after_the_result_files_too(tmp_path):
    """benchmarks/d3_study.py: ``--table FILE ... RUN_DIR ...`` restricts the table to those runs, as
    ``RUN_DIR ... --table FILE ...`` does (``--table`` takes every argument after it)."""
    from pathlib import Path

    study = load_benchmark("d3_study")
    (tmp_path / "run-a").mkdir()
    cells = tmp_path / "cells.jsonl"
    cells.write_text("")
    runs, files = study.split_table_args([Path("before")], [cells, tmp_path / "run-a"])
    assert runs == [Path("before"), tmp_path / "run-a"] and files == [cells]
    assert study.split_table_args([], [cells]) == ([], [cells])
