"""Purifying a purified model: ``distox.purify`` marks what it returns, and D3 after D3 warns
(a second D3 run pushes away from the first one's result, which can lead back toward the suspect;
BENCHMARKS.md "Twentieth round")."""
from __future__ import annotations

import warnings

import pytest
import torch
from safetensors import safe_open

import distox
from distox.api import PURIFIED_BY, RepurifyWarning, repurify_warning
from distox.models import create_model
from distox.practitioner import marker_from_header, purify_files
from distox.runs import safetensors_metadata, save_model

from .conftest import make_bundle
from .test_practitioner import setup, shared  # noqa: F401 (fixtures)


def _suspect():
    torch.manual_seed(0)
    return create_model("small_cnn", 4, 1, width=4)


def _purify(model, clean, method="d3"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extra = {"batch_size": 16} if method == "d3" else {}
        res = distox.purify(model, clean, method, epochs=1, verbose=False, device="cpu", label_check="off", **extra)
    return res, [w for w in caught if issubclass(w.category, RepurifyWarning)]


def test_purify_marks_the_model_it_returns_outside_its_state_dict():
    b = make_bundle(n_train=32)
    suspect = _suspect()
    res, caught = _purify(suspect, (b.train.x, b.train.y))
    assert not caught and not hasattr(suspect, PURIFIED_BY)  # the caller's model stays unmarked
    assert getattr(res.model, PURIFIED_BY) == {"method": "d3", "seed": 0}
    assert set(res.model.state_dict()) == set(suspect.state_dict())  # nothing saved with the weights


def test_d3_on_a_model_d3_returned_warns_and_other_orders_do_not():
    b = make_bundle(n_train=32)
    clean = (b.train.x, b.train.y)
    once, _ = _purify(_suspect(), clean)
    twice, caught = _purify(once.model, clean)
    assert len(caught) == 1 and "purify the original suspect" in str(caught[0].message)
    assert getattr(twice.model, PURIFIED_BY)["method"] == "d3"
    _, after_ft = _purify(once.model, clean, method="ft")  # fine-tuning a purified model: no warning
    assert not after_ft
    tuned, _ = _purify(_suspect(), clean, method="ft")
    _, d3_after_ft = _purify(tuned.model, clean)  # D3 after another defense: no warning
    assert not d3_after_ft


@pytest.mark.parametrize("earlier, method, warns", [
    (None, "d3", False), ({"method": "d3"}, "d3", True), ({"method": "d3"}, "ft", False),
    ({"method": "ft"}, "d3", False), ({}, "d3", False), ("d3", "d3", False),
])
def test_repurify_rule(earlier, method, warns):
    assert (repurify_warning(earlier, method) is not None) is warns


def test_header_metadata_round_trip_and_foreign_files(tmp_path):
    model = _suspect()
    marked, plain = tmp_path / "m.safetensors", tmp_path / "p.safetensors"
    save_model(marked, model, metadata={PURIFIED_BY: '{"method": "d3", "seed": 3}'})
    save_model(plain, model)
    assert marker_from_header(safetensors_metadata(marked)[PURIFIED_BY]) == {"method": "d3", "seed": 3}
    assert PURIFIED_BY not in safetensors_metadata(plain)
    (tmp_path / "w.pt").write_bytes(b"")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    assert safetensors_metadata(tmp_path / "w.pt") == {} and safetensors_metadata(tmp_path / "bad.safetensors") == {}
    assert marker_from_header("d3") == {"method": "d3"}


def test_distox_purify_files_write_the_mark_and_warn_when_purified_again(setup):  # noqa: F811
    first = setup["out"]
    purify_files(setup["spec"], setup["weights"], str(setup["folder"]), epochs=1, params={"batch_size": 16},
                 out=first, progress=False)
    with safe_open(str(first), framework="pt") as f:
        assert marker_from_header(f.metadata()[PURIFIED_BY]) == {"method": "d3", "seed": 0}
    second = first.with_name("twice.safetensors")
    with pytest.warns(RepurifyWarning):
        purify_files(setup["spec"], first, str(setup["folder"]), epochs=1, params={"batch_size": 16},
                     out=second, progress=False, label_check="off")  # one epoch leaves it near chance
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepurifyWarning)  # the suspect's own file: no warning
        purify_files(setup["spec"], setup["weights"], str(setup["folder"]), epochs=1, params={"batch_size": 16},
                     out=first.with_name("again.safetensors"), progress=False)


def test_label_check_measures_batch_statistics_on_device_auto():
    """The BatchNorm check of a near-chance model ran on the device string it was given, so
    ``device="auto"`` (``distox purify``'s default) raised a RuntimeError instead of a verdict."""
    from distox.label_check import check_labels

    b = make_bundle(n_train=40)
    model = _suspect().eval()
    wrong = (b.train.y + 1) % 4  # labels the model does not share: accuracy near chance
    check = check_labels(model, type(b.train)(b.train.x, wrong), device="auto")
    assert check.batch_stats_accuracy is not None and 0.0 <= check.batch_stats_accuracy <= 100.0
