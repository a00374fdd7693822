"""``distox purify`` from files (practitioner workflow) and D3's automatic ε / λ."""
from __future__ import annotations

import functools
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from distox.cli import app
from distox.metrics import evaluate
from distox.models.normalized import Normalized
from distox.practitioner import (
    IMAGENET_MEAN, PractitionerError, build_model, holdout, import_factory, load_clean_data,
    parse_normalize, purify_files,
)
from distox.runs import load_into, save_model

from .conftest import make_bundle

MODEL_SRC = textwrap.dedent('''
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes=3, channels=1):
            super().__init__()
            self.conv = nn.Conv2d(channels, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 2 * 2, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn(self.conv(x)))
            return self.fc(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))

    def factory(num_classes=3):
        return Tiny(num_classes)

    class TinyDict(Tiny):
        def forward(self, x):
            return {"logits": super().forward(x)}

    def dict_factory(num_classes=3):
        return TinyDict(num_classes)
''')

runner = CliRunner()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A model file, trained suspect weights and an image folder of 3 classes (16×16 grey PNGs)."""
    tmp_path = tmp_path_factory.mktemp("practitioner")
    (tmp_path / "usermodel.py").write_text(MODEL_SRC)
    spec = f"{tmp_path / 'usermodel.py'}:factory"
    bundle = make_bundle(n_train=90, n_test=0, side=16, classes=3, seed=3)
    folder = tmp_path / "clean"
    for i, (x, y) in enumerate(zip(bundle.train.x, bundle.train.y)):
        d = folder / f"class_{int(y)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8), mode="L").save(d / f"{i:03d}.png")
    torch.manual_seed(0)
    model = import_factory(spec)(num_classes=3)
    from distox.training import LoopConfig, train

    train(model, bundle.train.x, bundle.train.y, LoopConfig(epochs=8, batch_size=16, lr=0.05), progress=False)
    weights = tmp_path / "suspect.safetensors"
    save_model(weights, model)
    return {"spec": spec, "folder": folder, "weights": weights, "model": model}


@pytest.fixture
def setup(shared, tmp_path: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return {**shared, "out": out_dir / "purified.safetensors", "tmp": tmp_path}


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_end_to_end_reports_true_accuracies(setup):
    w_before = load_file(str(setup["weights"]))
    res = invoke("purify", "--model", setup["spec"], "--weights", setup["weights"], "--data", setup["folder"],
                 "--epochs", "2", "--param", "batch_size=16", "--param", "lmd=10", "--out", setup["out"], "-q")
    assert res.exit_code == 0, res.output
    assert "validation accuracy" in res.output and "distance travelled" in res.output
    report = json.loads(setup["out"].with_suffix(".json").read_text())
    # the purified file loads into the user's own architecture (no wrapper keys)
    purified = import_factory(setup["spec"])(num_classes=3)
    load_into(purified, load_file(str(setup["out"])))
    # the reported accuracies are those of the input / output models on the held-out split
    clean = load_clean_data(str(setup["folder"]))
    _, val = holdout(clean.split, 0.2, seed=0)
    assert report["val_size"] == len(val) and report["retain_size"] == len(clean.split) - len(val)
    assert report["after"]["acc"] == round(evaluate(purified, val.x, val.y, device="cpu")["acc"], 2)  # 2 decimals
    assert report["before"]["acc"] == round(evaluate(setup["model"], val.x, val.y, device="cpu")["acc"], 2)
    assert report["params"]["lmd"] == 10 and report["params"]["epochs"] == 2
    # distance = Σ Frobenius norms of the change of the weights D3's distance covered: the default
    # preset's final classifier
    d = torch.linalg.vector_norm(purified.fc.weight.detach() - w_before["fc.weight"]).item()
    assert report["distance"] == pytest.approx(d, rel=1e-5) and d > 0 and report["distance_layers"] == ["fc"]
    # the input weights are untouched
    assert all(torch.equal(v, load_file(str(setup["weights"]))[k]) for k, v in w_before.items())


def test_report_says_how_many_epochs_ran_and_why():
    from distox.practitioner import PurifyReport

    def report(params):
        return PurifyReport(model="m", weights="w", data="d", method="d3", params=params, num_classes=3,
                            retain_size=72, val_size=18, before={"acc": 90.0}, after={"acc": 89.0}, acc_drop=1.0,
                            distance=1.0, distance_layers=["fc"], seconds=1.0, tolerance=2.0)

    assert "epochs 2\n" in report({"epochs": 2}).text() + "\n"
    floored = report({"epochs": 12, "min_steps": 600, "min_steps_resolved": {"epochs": 200}}).text()
    assert "epochs 200 (at least 600 optimiser steps on 72 images)" in floored
    assert "epochs 12\n" in report({"epochs": 12, "min_steps": 600, "min_steps_resolved": {"epochs": 12}}).text() + "\n"


def test_reported_distance_covers_the_weights_the_run_selected():
    """The report's distance is over D3's own selection as the run resolved it (the BatchNorm rule
    confines it to the classifier), the final classifier for other methods."""
    from distox.practitioner import distance_selection, layer_list

    assert distance_selection("d3", {"layers": "all"}) == "all"
    assert distance_selection("d3", {"layers": "all", "norm_rule_resolved": {"changed": {"layers": "auto"}}}) == "auto"
    assert distance_selection("d3", {"layers": ["fc"], "norm_rule_resolved": {"changed": {}}}) == ["fc"]
    assert distance_selection("ft", {}) == "auto"
    assert layer_list(["a", "b"]) == "a, b"
    assert layer_list([f"l{i}" for i in range(9)]) == "9 weights: l0, l1, ..., l8"


def test_warning_when_accuracy_falls_beyond_tolerance(setup):
    # D3's random warm start with 1 epoch and a tiny λ destroys accuracy: the report must say so
    res = invoke("purify", "--model", setup["spec"], "--weights", setup["weights"], "--data", setup["folder"],
                 "--epochs", "1", "--param", "lmd=0.01", "--tolerance", "0", "--out", setup["out"], "-q")
    assert res.exit_code == 0, res.output
    report = json.loads(setup["out"].with_suffix(".json").read_text())
    assert report["acc_drop"] > 0
    assert "WARNING" in res.output and "fell by" in report["warning"]
    assert res.output.count("fell by") == 1  # printed once, not also as a log line
    assert "lmd=40" in report["warning"] and "fewer epochs" not in report["warning"]  # measured advice only
    res2 = invoke("purify", "--model", setup["spec"], "--weights", setup["weights"], "--data", setup["folder"],
                  "--epochs", "1", "--param", "lmd=0.01", "--tolerance", "100", "--out", setup["out"], "-q")
    assert res2.exit_code == 0 and "WARNING" not in res2.output
    assert json.loads(setup["out"].with_suffix(".json").read_text())["warning"] is None


def test_pickled_pt_refused_without_opt_in(setup):
    model = import_factory(setup["spec"])(num_classes=3)
    model.load_state_dict(setup["model"].state_dict())
    pt = setup["tmp"] / "whole_model.pt"
    torch.save(model, pt)  # a pickled nn.Module: could run code when loaded
    res = invoke("purify", "--model", setup["spec"], "--weights", pt, "--data", setup["folder"],
                 "--epochs", "1", "--out", setup["out"], "-q")
    assert res.exit_code != 0
    assert "pickle" in res.output and "--trust-pickle" in res.output
    assert list(setup["out"].parent.iterdir()) == []
    # a plain tensor state dict in a .pt is fine without the opt-in
    plain = setup["tmp"] / "plain.pt"
    torch.save(setup["model"].state_dict(), plain)
    ok = invoke("purify", "--model", setup["spec"], "--weights", plain, "--data", setup["folder"],
                "--epochs", "1", "--out", setup["out"], "-q")
    assert ok.exit_code == 0, ok.output
    # and with the opt-in the pickled module loads
    setup["out"].unlink()
    ok2 = invoke("purify", "--model", setup["spec"], "--weights", pt, "--data", setup["folder"], "--trust-pickle",
                 "--epochs", "1", "--out", setup["out"], "-q")
    assert ok2.exit_code == 0, ok2.output
    assert setup["out"].is_file()


def _clean_exit_2(setup, weights, *fragments: str) -> None:
    res = invoke("purify", "--model", setup["spec"], "--weights", weights, "--data", setup["folder"],
                 "--epochs", "1", "--out", setup["out"], "-q")
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "Traceback" not in res.output
    for frag in fragments:
        assert frag in res.stderr, (frag, res.stderr)
    assert list(setup["out"].parent.iterdir()) == []


def test_broken_weight_files_each_get_their_own_message(setup):
    rng = np.random.default_rng(0)
    good = setup["weights"].read_bytes()
    files = {"corrupt.safetensors": rng.bytes(300), "truncated.safetensors": good[:-7],
             "random.pt": rng.bytes(300), "empty.pt": b"", "safetensors_named.pt": good}
    for name, data in files.items():
        (setup["tmp"] / name).write_bytes(data)
    torch.save(setup["model"].state_dict(), setup["tmp"] / "whole.pt")
    (setup["tmp"] / "truncated.pt").write_bytes((setup["tmp"] / "whole.pt").read_bytes()[:200])
    t = setup["tmp"]
    _clean_exit_2(setup, t / "corrupt.safetensors", "corrupt.safetensors is not a readable safetensors file "
                  "(corrupt or truncated?): Error while deserializing header")
    _clean_exit_2(setup, t / "truncated.safetensors", "truncated.safetensors is not a readable safetensors file")
    _clean_exit_2(setup, t / "random.pt", "random.pt is not a PyTorch checkpoint (neither the zip archive nor the "
                  "pickle that torch.save writes): the file is corrupt or of another format")
    _clean_exit_2(setup, t / "safetensors_named.pt", "rename it to .safetensors")
    _clean_exit_2(setup, t / "truncated.pt", "truncated.pt is a corrupt or truncated PyTorch checkpoint: "
                  "PytorchStreamReader failed reading zip archive")
    _clean_exit_2(setup, t / "empty.pt", "weights file", "empty.pt is empty")
    for name in files:  # none of them is mistaken for a pickle that needs --trust-pickle
        res = invoke("purify", "--model", setup["spec"], "--weights", t / name, "--data", setup["folder"], "-q")
        assert "pickled Python objects" not in res.output


def test_checkpoint_dicts_are_unwrapped_or_their_keys_listed(setup):
    from distox.runs import STATE_WRAPPERS, load_state

    state = setup["model"].state_dict()
    for key in STATE_WRAPPERS:  # tensors under a wrapper key, beside training metadata
        torch.save({key: state, "epoch": 3, "best_acc": 0.9}, setup["tmp"] / f"{key}.pt")
        got = load_state(setup["tmp"] / f"{key}.pt")
        assert list(got) == list(state) and all(torch.equal(got[k], v) for k, v in state.items())
    torch.save({"module." + k: v for k, v in state.items()}, setup["tmp"] / "dp.pt")  # DataParallel
    assert list(load_state(setup["tmp"] / "dp.pt")) == list(state)
    res = invoke("purify", "--model", setup["spec"], "--weights", setup["tmp"] / "model_state_dict.pt", "--data",
                 setup["folder"], "--epochs", "1", "--out", setup["out"], "-q")
    assert res.exit_code == 0, res.output
    setup["out"].unlink()
    setup["out"].with_suffix(".json").unlink()
    torch.save({"weights": state, "epoch": 3, "optimizer": {"lr": 0.1}}, setup["tmp"] / "other.pt")
    _clean_exit_2(setup, setup["tmp"] / "other.pt", "other.pt holds a dict with keys weights, epoch, optimizer, "
                  "not a state dict of tensors; distox looks for one at the top level or under 'state_dict', "
                  "'model_state_dict', 'model'")
    torch.save({"model": {"epoch": 3}}, setup["tmp"] / "nested.pt")  # a wrapper key without tensors
    _clean_exit_2(setup, setup["tmp"] / "nested.pt", "holds a dict with keys model, not a state dict")


def _bad(setup, *args: str, expect: str) -> None:
    base = {"--model": setup["spec"], "--weights": setup["weights"], "--data": setup["folder"]}
    overrides = dict(zip(args[::2], args[1::2]))
    argv = ["purify"]
    for k, v in {**base, **overrides}.items():
        argv += [k, str(v)]
    res = invoke(*argv, "--epochs", "1", "--out", setup["out"], "-q")
    assert res.exit_code != 0, res.output
    assert expect in res.output, res.output
    assert "Traceback" not in res.output
    assert list(setup["out"].parent.iterdir()) == []  # nothing written


def test_factory_not_importable(setup):
    _bad(setup, "--model", "no_such_module_xyz:factory", expect="cannot import 'no_such_module_xyz'")
    _bad(setup, "--model", f"{setup['spec'].rpartition(':')[0]}:nope", expect="has no attribute 'nope'")
    _bad(setup, "--model", f"{setup['tmp'] / 'missing.py'}:factory", expect="model file not found")
    _bad(setup, "--model", "justamodule", expect="package.module:factory")


def test_weights_not_matching_lists_keys(setup):
    state = load_file(str(setup["weights"]))
    state["extra.weight"] = torch.zeros(2)
    del state["fc.bias"]
    from safetensors.torch import save_file

    bad = setup["tmp"] / "bad.safetensors"
    save_file(state, str(bad))
    _bad(setup, "--weights", bad, expect="missing keys (1): fc.bias")
    _bad(setup, "--weights", bad, expect="unexpected keys (1): extra.weight")
    # wrong number of classes: shape mismatch
    _bad(setup, "--weights", setup["weights"], "--num-classes", "5", expect="shape mismatches: fc.bias (3,) vs model (5,)")


def test_bad_data(setup):
    empty = setup["tmp"] / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    _bad(setup, "--data", empty, expect="holds no images")
    one = setup["tmp"] / "one"
    (one / "only").mkdir(parents=True)
    for p in sorted((setup["folder"] / "class_0").iterdir())[:5]:
        (one / "only" / p.name).write_bytes(p.read_bytes())
    _bad(setup, "--data", one, expect="only one class")
    _bad(setup, "--data", setup["tmp"] / "does_not_exist", expect="not found")
    # fewer clean images than classes (digits: 10 classes, 5 images)
    digits_model = setup["tmp"] / "digits_model.py"
    digits_model.write_text(MODEL_SRC)
    _bad(setup, "--data", "digits", "--limit", "5", "--model", f"{digits_model}:factory",
         expect="5 clean images for 10 classes")


def test_parse_normalize_and_wrapped_model_saves_user_keys(setup):
    assert parse_normalize("none", 3) is None
    assert parse_normalize("imagenet", 3) == (IMAGENET_MEAN, (0.229, 0.224, 0.225))
    assert parse_normalize("0.5,0.25", 1) == ((0.5,), (0.25,))
    assert parse_normalize("1,2,3,4,5,6", 3) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    with pytest.raises(PractitionerError):
        parse_normalize("imagenet", 1)
    with pytest.raises(PractitionerError):
        parse_normalize("1,2,3", 1)
    report = purify_files(setup["spec"], setup["weights"], str(setup["folder"]), epochs=1,
                          params={"batch_size": 32}, normalize="0.5,0.5", out=setup["out"], progress=False)
    assert report.normalize == {"mean": [0.5], "std": [0.5]}
    assert set(load_file(str(setup["out"]))) == set(setup["model"].state_dict())


def test_build_model_passes_num_classes_only_when_accepted():
    from torch import nn

    assert build_model(lambda num_classes: nn.Linear(2, num_classes), 7).out_features == 7
    assert build_model(lambda: nn.Linear(2, 3), 7).out_features == 3
    with pytest.raises(PractitionerError, match="not a torch nn.Module"):
        build_model(lambda: 3, None)
    tv = import_factory("torchvision.models:resnet18")
    assert build_model(tv, 4).fc.out_features == 4


# ------------------------------------------------------------------------ automatic ε and λ
@functools.lru_cache(maxsize=1)
def _auto_setup():
    from distox.models import create_model

    bundle = make_bundle(n_train=120, n_test=40, side=16, classes=4, seed=1)
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, 1, (0.5,), (0.5,), width=4)
    from distox.training import LoopConfig, train

    train(model, bundle.train.x, bundle.train.y, LoopConfig(epochs=6, batch_size=32, lr=0.05), progress=False)
    return model.eval(), bundle


def test_auto_eps_rule():
    from torch.nn import functional as F

    from distox.defenses.d3_auto import auto_eps

    model, bundle = _auto_setup()
    with torch.no_grad():
        ce = F.cross_entropy(model(bundle.train.x), bundle.train.y, reduction="none")
    assert auto_eps(model, bundle.train, eps_min=0.0) == pytest.approx(float(ce.mean()), rel=1e-5)
    assert auto_eps(model, bundle.train, eps_min=50.0) == 50.0


def test_auto_lmd_picks_largest_distance_within_tolerance(monkeypatch):
    import distox.defenses.d3_auto as auto
    from distox.defenses import D3

    model, bundle = _auto_setup()
    # trial outcomes: λ → (held-out acc, distance); the rule must pick λ = 2 (largest distance
    # among those within 2 points of the start accuracy 90)
    fake = {0.5: (70.0, 9.0), 2.0: (89.0, 5.0), 10.0: (90.0, 1.0)}

    def fake_trial(d3, model, train, held, lmd, eps, device, progress):
        return {"lmd": lmd, "acc": fake[lmd][0], "distance": fake[lmd][1]}

    monkeypatch.setattr(auto, "_trial", fake_trial)
    monkeypatch.setattr(auto, "accuracy", lambda m, s, d: 90.0)
    choice = auto.choose_lmd(D3(epochs=1, lmd="auto", auto={"ladder": [0.5, 2, 10], "tolerance": 2.0}),
                             model, bundle.train, eps=0.1, device=torch.device("cpu"), progress=False)
    assert choice["lmd"] == 2.0
    assert [t["lmd"] for t in choice["trials"]] == [0.5, 2.0, 10.0]
    # nothing within tolerance: the most accurate trial
    fake.update({2.0: (80.0, 5.0), 10.0: (85.0, 1.0)})
    choice = auto.choose_lmd(D3(epochs=1, lmd="auto", auto={"ladder": [0.5, 2, 10], "tolerance": 2.0}),
                             model, bundle.train, eps=0.1, device=torch.device("cpu"), progress=False)
    assert choice["lmd"] == 10.0


def test_d3_auto_end_to_end_records_resolved_values():
    from distox.defenses import D3
    from distox.defenses.d3_auto import auto_eps

    model, bundle = _auto_setup()
    d3 = D3(epochs=2, batch_size=32, eps="auto", lmd="auto", auto={"ladder": [1, 10]})
    res = d3(model, bundle.train, device="cpu", progress=False)
    info = res.config["auto_resolved"]
    assert info["eps"] == pytest.approx(max(0.01, auto_eps(model, bundle.train, eps_min=0.0)), rel=1e-5)
    assert info["lmd"] in (1.0, 10.0) and len(info["trials"]) == 2
    assert res.config["lmd"] == "auto" and len(res.history) == 2
    # the fixed defaults are unchanged by the option's existence
    assert D3(preset="reference").lmd == 0.5 and D3(preset="reference").eps == 0.1
    with pytest.raises(Exception, match="auto"):
        D3(eps="automatic")


def test_a_model_returning_a_dict_is_purified_on_its_logits_and_saved_with_its_own_keys(setup):
    """A factory whose model returns ``{"logits": ...}`` (Hugging Face style), normalised: trained
    on the logits (:mod:`distox.models.outputs`), saved and reported under the user's names."""
    spec = setup["spec"].replace(":factory", ":dict_factory")
    report = purify_files(spec, setup["weights"], str(setup["folder"]), epochs=1, params={"batch_size": 32},
                          normalize="0.5,0.5", out=setup["out"], progress=False)
    assert set(load_file(str(setup["out"]))) == set(setup["model"].state_dict())
    assert report.distance_layers == ["fc"] and report.distance > 0
    normalised = Normalized(setup["model"], (0.5,), (0.5,))  # the tensor-returning twin, as the run saw it
    assert report.before["acc"] == pytest.approx(evaluate(normalised, *_val(setup), device="cpu")["acc"])


def _val(setup):
    _, val = holdout(load_clean_data(str(setup["folder"])).split, 0.2, seed=0)
    return val.x, val.y
