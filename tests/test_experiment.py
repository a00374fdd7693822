"""Attack and defense run directories (distox.experiment): contents, exact rebuild of the
poisoned test set, resume after an interruption, atomic writes, retain-set seeding, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import distox
from distox.attacks import AttackError
from distox.attacks.badnets import BadNets
from distox.data import DataError, register_dataset, select_retain
from distox.defenses import DefenseError
from distox.experiment import (
    AttackSpec, DefenseSpec, LoadedRun, evaluate_run, load_run, read_history, run_attack, run_defense,
    model_factory, subset_indices, tensor_digest,
)
from distox.runs import FORMAT_VERSION, RunError, load_into, load_state

from .conftest import make_bundle

#: A tiny synthetic dataset (4 classes, 1×16×16, 160 train / 80 test), registered by name so run
#: directories can refer to it like to any named dataset.
DATASET = "synthetic-runs"
register_dataset(DATASET, lambda data_root=None, **kw: make_bundle(n_train=160, n_test=80, side=16, seed=3))
register_dataset("synthetic-3px", lambda data_root=None, **kw: make_bundle(n_train=40, n_test=20, side=3))


def tiny_spec(**kw) -> AttackSpec:
    base = dict(attack="badnets", dataset=DATASET, model_kwargs={"width": 4}, epochs=2, batch_size=32,
                lr=0.05, train_subset=120, test_subset=60, poison_rate=0.2, seed=1)
    base.update(kw)
    return AttackSpec(**base)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTOX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict, BadNets, object]:
    """One finished tiny BadNets run; also captures the poisoned test set built at attack time."""
    out = tmp_path_factory.mktemp("runs") / "badnets"
    seen = []
    original = BadNets.backdoor_test_set

    def spy(self, test):
        bd = original(self, test)
        seen.append(bd)
        return bd

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BadNets, "backdoor_test_set", spy)
        metrics = run_attack(tiny_spec(), out, device="cpu", progress=False)
    return out, metrics, seen[-1]


def copy_run(finished, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished[0], dst)
    return dst


# ---------------------------------------------------------------------------- attack runs
def test_run_directory_holds_model_records_and_no_checkpoint(finished):
    out, metrics, _ = finished
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "attack.json", "attack_resources.safetensors", "metrics.json", "spec.json",
            "history.csv"} <= names
    assert "checkpoint.pt" not in names and not [n for n in names if n.endswith(".tmp")]
    assert set(metrics) == {"acc", "asr", "ra"} and json.loads((out / "metrics.json").read_text()) == metrics
    rec = json.loads((out / "attack.json").read_text())
    assert rec["format_version"] == FORMAT_VERSION
    assert AttackSpec.from_dict(rec["spec"]) == tiny_spec()
    assert rec["attack"] == {"name": "badnets", "target": 0, "mode": "all2one", "poison_rate": 0.2, "seed": 1,
                             "shift": 1, "patch": 3, "value": 1.0}
    assert rec["dataset"]["train_subset"]["size"] == 120 and rec["dataset"]["test_subset"]["size"] == 60
    assert rec["dataset"]["train_size"] == 160
    assert rec["poisoned_train"] == 24  # round(0.2 · 120)
    assert rec["training"]["epochs"] == 2 and rec["training"]["lr"] == 0.05 and rec["training"]["sam_rho"] is None
    assert set(rec["versions"]) >= {"torch", "distox", "python"}
    assert rec["versions"]["torch"] == torch.__version__ and rec["versions"]["distox"] == distox.__version__
    assert [r["epoch"] for r in read_history(out / "history.csv")] == [1.0, 2.0]


def test_subsets_are_seeded_and_recorded(finished):
    run = load_run(finished[0])
    full = make_bundle(n_train=160, n_test=80, side=16, seed=3)
    idx = subset_indices(160, 120, seed=1)
    assert torch.equal(run.data.train.x, full.train.x[idx]) and torch.equal(run.data.train.y, full.train.y[idx])
    assert run.record["dataset"]["train_subset"]["indices_sha256"] == tensor_digest(idx)
    assert not torch.equal(subset_indices(160, 120, seed=2), idx)
    assert subset_indices(160, None, 0) is None and subset_indices(160, 500, 0) is None


def test_rebuilt_poisoned_test_set_is_bit_identical_to_the_one_at_attack_time(finished):
    out, metrics, at_attack = finished
    run = load_run(out)
    assert isinstance(run, LoadedRun) and not run.model.training
    rebuilt = run.backdoor_test_set()
    assert torch.equal(rebuilt.x, at_attack.x)
    assert torch.equal(rebuilt.target, at_attack.target) and torch.equal(rebuilt.true, at_attack.true)
    assert tensor_digest(rebuilt.x, rebuilt.target, rebuilt.true) == run.record["backdoor_test"]["sha256"]
    # and the stored model reproduces the stored metrics
    assert run.evaluate() == metrics == evaluate_run(out, device="cpu")


def test_interrupted_run_resumes_from_its_checkpoint_and_equals_an_uninterrupted_one(tmp_path):
    spec = tiny_spec(epochs=3)
    run_attack(spec, tmp_path / "ref", device="cpu", progress=False)

    class Interrupted(Exception):
        pass

    def stop_at_two(epoch, model):
        if epoch == 2:
            raise Interrupted
        return {}

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run_attack(spec, out, device="cpu", progress=False, on_epoch_end=stop_at_two)
    assert (out / "checkpoint.pt").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()
    with pytest.raises(RunError, match="did not finish"):
        load_run(out)

    run_attack(spec, out, device="cpu", progress=False)
    rec = json.loads((out / "attack.json").read_text())
    assert rec["resumed_from_epoch"] == 1
    assert not (out / "checkpoint.pt").exists()
    ref, got = load_state(tmp_path / "ref" / "model.safetensors"), load_state(out / "model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert len(read_history(out / "history.csv")) == 3


def test_model_file_appears_only_when_complete(tmp_path, monkeypatch):
    import distox.runs as runs

    out = tmp_path / "run"
    seen_during_training = []

    def look(epoch, model):
        seen_during_training.append((out / "model.safetensors").exists())
        return {}

    real_save = runs.save_file

    def crash_mid_write(tensors, path, metadata=None):
        if "model.safetensors" not in Path(path).name:
            return real_save(tensors, path, metadata=metadata)
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(runs, "save_file", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        run_attack(tiny_spec(), out, device="cpu", progress=False, on_epoch_end=look)
    assert seen_during_training == [False, False]
    assert not (out / "model.safetensors").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(runs, "save_file", real_save)
    run_attack(tiny_spec(), out, device="cpu", progress=False)
    assert json.loads((out / "attack.json").read_text())["resumed_from_epoch"] == 2
    assert set(load_state(out / "model.safetensors"))


def test_finished_run_is_returned_without_retraining_and_other_specs_are_refused(finished, tmp_path, monkeypatch):
    out = copy_run(finished, tmp_path)

    def no_training(*a, **k):
        raise AssertionError("retrained a finished run")

    monkeypatch.setattr(BadNets, "train_model", no_training)
    assert run_attack(tiny_spec(), out, device="cpu", progress=False) == finished[1]
    with pytest.raises(RunError, match="different attack run.*poison_rate"):
        run_attack(tiny_spec(poison_rate=0.3), out, device="cpu", progress=False)
    monkeypatch.undo()
    metrics = run_attack(tiny_spec(poison_rate=0.3), out, device="cpu", progress=False, force=True)
    assert json.loads((out / "attack.json").read_text())["attack"]["poison_rate"] == 0.3
    assert set(metrics) == {"acc", "asr", "ra"}


def test_sam_radius_reaches_the_training_loop(tmp_path, monkeypatch):
    import distox.training as training

    calls = []
    real = training.sam_perturbation

    def counting(params, rho, adaptive=False, *args, **kwargs):
        calls.append((rho, adaptive))
        return real(params, rho, adaptive, *args, **kwargs)

    monkeypatch.setattr(training, "sam_perturbation", counting)
    run_attack(tiny_spec(epochs=1, sam_rho=1.5), tmp_path / "sam", device="cpu", progress=False)
    assert calls and set(calls) == {(1.5, True)}  # one adaptive-SAM step per batch
    assert len(calls) == 4  # ceil(120 / 32)
    assert json.loads((tmp_path / "sam" / "attack.json").read_text())["training"]["sam_rho"] == 1.5


def test_clean_reference_and_per_epoch_tracking(tmp_path):
    out = tmp_path / "run"
    metrics = run_attack(tiny_spec(epochs=1, clean_reference=True), out, device="cpu", progress=False,
                         track_epochs=True)
    assert set(metrics) == {"acc", "asr", "ra", "clean_acc", "clean_asr", "clean_ra"}
    assert (out / "clean" / "model.safetensors").exists() and (out / "clean" / "clean.json").exists()
    # the clean model's ASR/RA are measured on the attack's own backdoor test set
    run = load_run(out)
    clean = run.evaluate(model=load_into(model_factory(run.spec, run.data)(),
                                         load_state(out / "clean" / "model.safetensors")))
    assert (metrics["clean_acc"], metrics["clean_asr"], metrics["clean_ra"]) == (clean["acc"], clean["asr"], clean["ra"])
    assert clean["acc"] == json.loads((out / "clean" / "metrics.json").read_text())["acc"]
    rows = read_history(out / "history.csv")
    assert {"acc", "asr", "ra", "loss", "lr"} <= set(rows[0])
    assert rows[-1]["acc"] == pytest.approx(metrics["acc"], abs=1e-3)
    assert evaluate_run(out, device="cpu") == metrics


def test_all2all_run(tmp_path):
    metrics = run_attack(tiny_spec(epochs=1, mode="all2all"), tmp_path / "a2a", device="cpu", progress=False)
    run = load_run(tmp_path / "a2a")
    bd = run.backdoor_test_set()
    assert len(bd) == 60 and torch.equal(bd.target, (bd.true + 1) % 4)
    assert run.evaluate() == metrics


@pytest.mark.parametrize("kw, match", [
    (dict(target=4), "outside the dataset's classes 0..3"),
    (dict(poison_rate=0.0), r"poison rate must be in \(0, 1\]"),
    (dict(poison_rate=1.5), r"poison rate must be in \(0, 1\]"),
    (dict(dataset="synthetic-3px", train_subset=None, test_subset=None), "at least 4×4"),
    (dict(attack_kwargs={"colour": 1}), "no parameter.*colour.*valid:.*patch"),
    (dict(attack="nope"), "unknown attack 'nope'. Valid attacks: .*badnets"),
    (dict(attack_kwargs={"target": 2}), "through the spec's own fields.*--target"),
])
def test_bad_attack_input_gives_clear_errors_before_anything_is_written(tmp_path, kw, match):
    with pytest.raises(AttackError, match=match):
        run_attack(tiny_spec(**kw), tmp_path / "bad", device="cpu", progress=False)
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- loading errors
def test_load_run_errors(finished, tmp_path, monkeypatch):
    with pytest.raises(RunError, match="run directory not found"):
        load_run(tmp_path / "nowhere")
    out = copy_run(finished, tmp_path)
    (out / "model.safetensors").unlink()
    with pytest.raises(RunError, match="no model.safetensors"):
        load_run(out)
    shutil.rmtree(out)
    out = copy_run(finished, tmp_path)
    (out / "attack.json").unlink()
    with pytest.raises(RunError, match="attack.json is missing"):
        load_run(out)
    shutil.rmtree(out)

    out = copy_run(finished, tmp_path)
    rec = json.loads((out / "attack.json").read_text())
    (out / "attack.json").write_text(json.dumps({**rec, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(RunError, match=f"format_version {FORMAT_VERSION + 1}, newer"):
        load_run(out)

    import distox.data.paths as paths

    monkeypatch.setattr(paths, "SYSTEM_ROOTS", {})
    monkeypatch.delenv("DISTOX_DATA", raising=False)
    rec["spec"]["dataset"], rec["spec"]["data_root"] = "fashion-mnist", str(tmp_path / "empty")
    (out / "attack.json").write_text(json.dumps(rec))
    with pytest.raises(DataError, match="dataset 'fashion-mnist' not found"):
        load_run(out)


def test_load_run_refuses_data_that_differ_from_the_run(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    rec = json.loads((out / "attack.json").read_text())
    rec["dataset"]["test_sha256"] = "0" * 64
    (out / "attack.json").write_text(json.dumps(rec))
    with pytest.raises(RunError, match="differ from the ones this run used"):
        load_run(out)


# ---------------------------------------------------------------------------- defense runs
def test_defense_run_writes_record_model_and_history(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    before_weights = load_state(out / "model.safetensors")
    rec = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=2, batch_size=16, seed=3), device="cpu",
                      progress=False)
    dst = out / "defense" / "ft"
    assert {p.name for p in dst.iterdir()} == {"defense.json", "model.safetensors", "history.csv"}
    assert json.loads((dst / "defense.json").read_text()) == rec
    assert rec["format_version"] == FORMAT_VERSION and rec["method"] == "ft"
    assert rec["before"] == finished[1]
    assert rec["config"]["epochs"] == 2 and rec["config"]["batch_size"] == 16 and rec["config"]["seed"] == 3
    assert rec["config"]["flip"] is False  # resolved: the reference table does not know this dataset
    expected = 0.5 * (max(0, rec["before"]["asr"] - rec["after"]["asr"])
                      - max(0, rec["before"]["acc"] - rec["after"]["acc"]) + 100)  # percent, like the paper
    assert rec["der"] == round(expected, 2)
    rows = read_history(dst / "history.csv")
    assert len(rows) == 2 and {"acc", "asr", "ra"} <= set(rows[0])
    assert rows[-1]["asr"] == pytest.approx(rec["after"]["asr"], abs=1e-3)
    # the purified model differs from the input, which is left untouched on disk
    purified = load_state(dst / "model.safetensors")
    assert any(not torch.equal(purified[k], before_weights[k]) for k in purified)
    assert all(torch.equal(v, load_state(out / "model.safetensors")[k]) for k, v in before_weights.items())


def test_retain_set_is_seeded_and_recorded(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    spec = DefenseSpec("ft", ratio=0.25, epochs=1, seed=7)
    rec = run_defense(out, spec, tmp_path / "d1", device="cpu", progress=False, track_epochs=False)
    want = select_retain(120, ratio=0.25, seed=7)
    assert rec["retain"]["indices"] == want.tolist() and rec["retain"]["size"] == 30 and rec["retain"]["seed"] == 7
    assert rec["retain"]["of"] == 120
    run = load_run(out)
    assert torch.equal(run.retain(ratio=0.25, seed=7).x, run.data.train.x[want])
    assert run.retain(ratio=0.25, seed=7).dataset == "synthetic"  # its augmentation follows its dataset
    other = run_defense(out, DefenseSpec("ft", ratio=0.25, epochs=1, seed=8), tmp_path / "d2", device="cpu",
                        progress=False, track_epochs=False)
    assert other["retain"]["indices"] != rec["retain"]["indices"]
    by_count = run_defense(out, DefenseSpec("ft", count=11, epochs=1), tmp_path / "d3", device="cpu",
                           progress=False, track_epochs=False)
    assert by_count["retain"]["size"] == 11 and by_count["spec"]["ratio"] is None
    assert "acc" not in read_history(tmp_path / "d1" / "history.csv")[0]


def test_finished_defense_is_returned_and_other_arguments_need_force(finished, tmp_path, monkeypatch):
    from distox.defenses.ft import FT

    out = copy_run(finished, tmp_path)
    spec = DefenseSpec("ft", count=20, epochs=1)
    first = run_defense(out, spec, device="cpu", progress=False, track_epochs=False)
    with monkeypatch.context() as mp:
        mp.setattr(FT, "fit", lambda *a, **k: pytest.fail("recomputed a finished defense"))
        assert run_defense(out, spec, device="cpu", progress=False) == first
        assert run_defense(out, spec, device="cpu", progress=False, force=True) == first
        with pytest.raises(RunError, match=r"other arguments \(differs in: epochs\).*--force"):
            run_defense(out, DefenseSpec("ft", count=20, epochs=2), device="cpu", progress=False)
    second = run_defense(out, DefenseSpec("ft", count=20, epochs=2), device="cpu", progress=False, force=True,
                         track_epochs=False)
    assert second["epochs"] == 2 and second["retain"] == first["retain"]
    assert json.loads((out / "defense" / "ft" / "defense.json").read_text()) == second


def test_defense_input_errors(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    with pytest.raises(DefenseError, match="unknown defense 'nope'"):
        run_defense(out, DefenseSpec("nope"), device="cpu")
    with pytest.raises(DefenseError, match="no parameter.*bogus"):
        run_defense(out, DefenseSpec("ft", params={"bogus": 1}), device="cpu")
    with pytest.raises(DefenseError, match=r"retain ratio must be in \(0, 1\]"):
        DefenseSpec("ft", ratio=1.5)
    with pytest.raises(RunError, match="not a finished attack run"):
        run_defense(tmp_path, DefenseSpec("ft"), device="cpu")
