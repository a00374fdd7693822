"""Class folders → labels (numeric names, ``--classes``), and the check that refuses to purify
with labels the suspect model does not share (`distox purify`) or warns about them
(`distox.purify`)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import distox
from distox.api import LabelWarning
from distox.cli import app
from distox.data import DataError
from distox.data.folder import folder_labels, load_folder_bundle
from distox.label_check import check_labels, near_chance_floor
from distox.practitioner import parse_classes

from .test_practitioner import shared  # noqa: F401  (fixture: a trained user model and an image folder)
from .test_resume import trained  # noqa: F401  (fixture: a small CNN trained on synthetic bands)

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------- folder → label
def test_folder_labels_rules():
    assert folder_labels(["dog", "cat", "bird"]) == ({"bird": 0, "cat": 1, "dog": 2}, ["bird", "cat", "dog"])
    # numeric names are the label itself: "10" is label 10, not the second name sorted
    mapping, names = folder_labels(["2", "10", "0"])
    assert mapping == {"2": 2, "10": 10, "0": 0} and len(names) == 11 and names[10] == "10" and names[5] == "5"
    assert folder_labels(["cat", "dog"], ["dog", "cat", "fox"]) == ({"cat": 1, "dog": 0}, ["dog", "cat", "fox"])
    assert folder_labels(["cat", "dog"], {"dog": 3, "cat": 0}) == ({"cat": 0, "dog": 3}, ["cat", "1", "2", "dog"])
    for names, classes, match in [(["cat", "dog"], ["cat"], "dog are not among the given classes"),
                                  (["a", "b"], ["a", "b", "a"], "given twice: a"),
                                  (["1", "01"], None, "01, 1 → 1"),
                                  (["a", "b"], {"a": 0, "b": 0}, "several classes map to one label"),
                                  (["a", "b"], {"a": 0, "b": "x"}, "integers >= 0")]:
        with pytest.raises(DataError, match=match):
            folder_labels(names, classes)


def _write_folder(root: Path, labels: dict[str, int], per_class: int = 3) -> None:
    for name, value in labels.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((4, 4), value * 20 + i, dtype=np.uint8), mode="L").save(root / name / f"{i}.png")


def test_numeric_and_given_folder_labels_reach_the_images(tmp_path):
    _write_folder(tmp_path / "num", {"0": 0, "2": 2, "10": 10})
    b = load_folder_bundle(tmp_path / "num", test_fraction=0.0, progress=False)
    assert b.num_classes == 11 and sorted(set(b.train.y.tolist())) == [0, 2, 10]
    # each image carries its own folder's number (pixel value = 20·label + i)
    assert all(int(round(float(x[0, 0, 0]) * 255)) // 20 == int(y) for x, y in zip(b.train.x, b.train.y))
    _write_folder(tmp_path / "named", {"cat": 1, "dog": 0})
    b = load_folder_bundle(tmp_path / "named", test_fraction=0.0, progress=False, classes=["dog", "cat"])
    assert b.class_names == ["dog", "cat"]
    assert all(int(round(float(x[0, 0, 0]) * 255)) // 20 == int(y) for x, y in zip(b.train.x, b.train.y))


def test_parse_classes(tmp_path):
    assert parse_classes("b, a ,c") == ["b", "a", "c"]
    (tmp_path / "list.json").write_text(json.dumps(["x", "y"]))
    (tmp_path / "map.json").write_text(json.dumps({"x": 1, "y": 0}))
    assert parse_classes(str(tmp_path / "list.json")) == ["x", "y"]
    assert parse_classes(str(tmp_path / "map.json")) == {"x": 1, "y": 0}
    (tmp_path / "bad.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text('["x", "y"')  # a cut-off file: said so, not a NameError
    for value, match in [(str(tmp_path / "missing.json"), "file not found"), ("solo", "two or more"),
                         ("a,,b", "two or more"), (str(tmp_path / "bad.json"), "list of class names"),
                         (str(tmp_path / "broken.json"), "broken.json is not a readable JSON file: Expecting")]:
        with pytest.raises(DataError, match=match):
            parse_classes(value)


# ---------------------------------------------------------------------------- the near-chance rule
def test_near_chance_floor():
    assert near_chance_floor(10.0, 400) == pytest.approx(19.0)  # a tenth of the way to 100 %
    assert near_chance_floor(10.0, 40) == pytest.approx(10.0 + 300 * (0.09 / 40) ** 0.5)  # three standard errors
    assert near_chance_floor(50.0, 10_000) == pytest.approx(55.0)


def test_api_warns_or_refuses_labels_the_model_does_not_share(trained):  # noqa: F811
    model, b = trained
    kw = dict(epochs=1, batch_size=32, verbose=False, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)  # its own labels: no warning
        ok = distox.purify(model, b.train, **kw)
    assert ok.label_check["accuracy"] > ok.label_check["near_chance_floor"] and not ok.label_check["swapped"]
    shuffled = (b.train.x, b.train.y[torch.randperm(len(b.train.y), generator=torch.Generator().manual_seed(0))])
    check = check_labels(model, distox.as_split(shuffled))
    assert check.near_chance and check.accuracy < check.floor
    with pytest.warns(LabelWarning, match="labels or the preprocessing are likely wrong"):
        warned = distox.purify(model, shuffled, **kw)
    assert warned.label_check["near_chance"] is True
    with pytest.raises(DataError, match="near-chance floor"):
        distox.purify(model, shuffled, label_check="error", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)
        assert distox.purify(model, shuffled, label_check="off", **kw).label_check is None
    with pytest.raises(DataError, match="label_check must be"):
        distox.purify(model, shuffled, label_check="maybe", **kw)


def test_stale_batchnorm_statistics_are_told_apart_from_wrong_labels(trained):  # noqa: F811
    """A model whose BatchNorm running statistics are not its weights' scores near chance in
    evaluation mode with the right labels; scored with each batch's own statistics it does not, so
    the check names the statistics instead of the labels (no LabelCheck problem; a warning)."""
    import copy

    from distox.utils import batchnorm_modules

    model, b = trained
    stale = copy.deepcopy(model)
    with torch.no_grad():
        for _, bn in batchnorm_modules(stale):
            bn.running_mean.fill_(5.0)
            bn.running_var.fill_(0.01)
    before = {k: v.clone() for k, v in stale.state_dict().items()}
    modes = [m.training for m in stale.modules()]
    check = check_labels(stale, b.train)
    assert check.accuracy < check.floor <= check.batch_stats_accuracy
    assert check.stale_batchnorm and not check.near_chance and not check.mostly_swapped
    assert check.problem() is None and "running statistics do not match" in check.stale_message()
    assert all(torch.equal(before[k], v) for k, v in stale.state_dict().items())  # measured on a copy
    assert [m.training for m in stale.modules()] == modes
    with pytest.warns(LabelWarning, match="running statistics do not match"):
        result = distox.purify(stale, b.train, epochs=1, batch_size=32, verbose=False, device="cpu",
                               label_check="error")
    assert result.label_check["stale_batchnorm"] is True
    # wrong labels stay wrong labels: with each batch's statistics the model is near chance too
    shuffled = distox.as_split((b.train.x, b.train.y[torch.randperm(len(b.train.y),
                                                                    generator=torch.Generator().manual_seed(0))]))
    wrong = check_labels(stale, shuffled)
    assert not wrong.stale_batchnorm and wrong.problem() is not None
    assert check_labels(model, b.train).batch_stats_accuracy is None  # measured only near chance


# ---------------------------------------------------------------------------- distox purify
def _purify(shared, folder, out, *extra):  # noqa: F811
    return invoke("purify", "--model", shared["spec"], "--weights", shared["weights"], "--data", folder,
                  "--epochs", "1", "--device", "cpu", "-q", "--out", out, *extra)


def test_purify_refuses_swapped_folder_labels_and_takes_classes(shared, tmp_path):  # noqa: F811
    folder = tmp_path / "renamed"
    shutil.copytree(shared["folder"], folder)
    for old, new in (("class_0", "c"), ("class_1", "a"), ("class_2", "b")):  # sorted: a, b, c = model's 1, 2, 0
        (folder / old).rename(folder / new)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = _purify(shared, folder, out_dir / "p.safetensors")
    assert res.exit_code == 2, res.output
    text = res.stderr
    assert text.startswith("error: ") and "labels or the preprocessing are likely wrong" in text
    assert "a→0, b→1, c→2 (folder names sorted alphabetically)" in text and "--classes c,a,b" in text
    assert list(out_dir.iterdir()) == []  # nothing written

    ok = _purify(shared, folder, out_dir / "p.safetensors", "--classes", "c,a,b")
    assert ok.exit_code == 0, ok.output
    assert "c→0, a→1, b→2 (as given by --classes)" in ok.stdout
    report = json.loads((out_dir / "p.json").read_text())
    assert report["classes"]["mapping"] == {"c": 0, "a": 1, "b": 2}
    assert report["label_check"]["accuracy"] == pytest.approx(report["before"]["acc"], abs=15)
    (tmp_path / "classes.json").write_text(json.dumps({"a": 1, "b": 2, "c": 0}))
    same = _purify(shared, folder, out_dir / "q.safetensors", "--classes", tmp_path / "classes.json")
    assert same.exit_code == 0, same.output
    assert json.loads((out_dir / "q.json").read_text())["classes"]["mapping"] == {"a": 1, "b": 2, "c": 0}


def test_purify_label_check_warn_or_off_runs_on_labels_it_would_refuse(shared, tmp_path, caplog):  # noqa: F811
    folder = tmp_path / "renamed"
    shutil.copytree(shared["folder"], folder)
    for old, new in (("class_0", "c"), ("class_1", "a"), ("class_2", "b")):  # the refused layout above
        (folder / old).rename(folder / new)
    refused = _purify(shared, folder, tmp_path / "r.safetensors")
    assert refused.exit_code == 2 and "--label-check warn runs anyway" in refused.stderr
    warned = _purify(shared, folder, tmp_path / "w.safetensors", "--label-check", "warn")
    assert warned.exit_code == 0, warned.output
    assert any("likely wrong" in r.getMessage() and "going on" in r.getMessage()
               for r in caplog.records)  # said (a warning: -q hides it), then purified
    assert json.loads((tmp_path / "w.json").read_text())["label_check"]["accuracy"] >= 0
    off = _purify(shared, folder, tmp_path / "o.safetensors", "--label-check", "off")
    assert off.exit_code == 0, off.output
    assert json.loads((tmp_path / "o.json").read_text())["label_check"] == {"skipped": True}
    bad = _purify(shared, folder, tmp_path / "b.safetensors", "--label-check", "maybe")
    assert bad.exit_code == 2 and "label_check must be one of error, warn, off" in bad.stderr


def test_purify_numeric_folders_and_near_chance_labels(shared, tmp_path):  # noqa: F811
    numeric = tmp_path / "numeric"
    shutil.copytree(shared["folder"], numeric)
    for k in range(3):
        (numeric / f"class_{k}").rename(numeric / str(k))
    ok = _purify(shared, numeric, tmp_path / "n.safetensors")
    assert ok.exit_code == 0, ok.output
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["classes"] == {"rule": "numeric folder names taken as labels", "mapping": {"0": 0, "1": 1, "2": 2},
                                 "text": "0→0, 1→1, 2→2 (numeric folder names taken as labels)"}

    mixed = tmp_path / "mixed"  # every image in a seeded random class folder: the labels mean nothing
    files = sorted(shared["folder"].rglob("*.png"))
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(1)).tolist()
    for i, j in enumerate(order):
        dst = mixed / f"class_{i % 3}"
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[j], dst / f"{i:03d}.png")
    res = _purify(shared, mixed, tmp_path / "m.safetensors")
    assert res.exit_code == 2 and "near-chance floor" in res.stderr and "--classes" in res.stderr
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "m.json").exists()


def test_classes_with_a_named_dataset_is_an_error(shared, tmp_path):  # noqa: F811
    res = _purify(shared, "digits", tmp_path / "d.safetensors", "--classes", "a,b")
    assert res.exit_code == 2 and "named dataset" in res.stderr


def test_purify_runs_a_model_whose_batchnorm_statistics_are_stale(shared, tmp_path):  # noqa: F811
    """``distox purify`` refused such a model as if its labels were wrong (exit 2); it now names
    the statistics and purifies."""
    import copy

    from distox.runs import save_model

    stale = copy.deepcopy(shared["model"])
    with torch.no_grad():
        stale.bn.running_mean.fill_(5.0)
        stale.bn.running_var.fill_(0.01)
    weights = tmp_path / "stale.safetensors"
    save_model(weights, stale)
    out = tmp_path / "purified.safetensors"
    result = _purify({**shared, "weights": weights}, shared["folder"], out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert out.exists() and report["label_check"]["stale_batchnorm"] is True
    assert report["label_check"]["batch_stats_accuracy"] >= report["label_check"]["near_chance_floor"]
