"""`distox defend` and `distox purify` resume after Ctrl-C from their per-epoch checkpoints
(the attack runs' mechanism, :func:`distox.training.train`) and end bit-identical to an
uninterrupted run; a checkpoint of other arguments is refused, never mixed in; a finished
`defend` is returned on a rerun and `evaluate` rescores a defense directory."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import distox
from distox.cli import app
from distox.experiment import read_history, run_attack
from distox import training
from distox.runs import load_state

from .conftest import make_bundle
from .test_experiment import tiny_spec
from .test_practitioner import shared  # noqa: F401  (fixture: a trained user model and an image folder)

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def ctrl_c_at(monkeypatch):
    """``ctrl_c_at(k)``: the next run is interrupted (KeyboardInterrupt, as Ctrl-C) at the end of
    epoch ``k`` (whether or not it is evaluated), before it is checkpointed, so that epoch
    ``k - 1`` is the last saved; ``ctrl_c_at(None)`` undoes it."""
    real = training._atomic_torch_save

    def arm(epoch: int | None) -> None:
        def hook(obj, path):
            if obj["epoch"] == epoch:
                raise KeyboardInterrupt
            return real(obj, path)

        monkeypatch.setattr(training, "_atomic_torch_save", real if epoch is None else hook)

    return arm


def assert_same_weights(a: Path, b: Path) -> None:
    ref, got = load_state(a), load_state(b)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "badnets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTOX_CACHE", str(out.parent / "cache"))
        run_attack(tiny_spec(), out, device="cpu", progress=False)
    return out


@pytest.fixture
def run(attack_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(attack_run, dst)
    return dst


# ---------------------------------------------------------------------------- distox defend
@pytest.mark.parametrize("method, extra", [("d3", []), ("ft", ["--batch-size", "8"]),
                                           ("d3", ["--param", "select=heldout", "--param", "lmd_control=heldout"])])
def test_defend_resumes_after_ctrl_c_bit_identical(run, tmp_path, ctrl_c_at, method, extra):
    args = ["defend", method, run, "--count", "40", "--epochs", "3", "--device", "cpu", "-q", *extra]
    assert invoke(*args, "--out", tmp_path / "ref").exit_code == 0
    out = tmp_path / "resumed"
    ctrl_c_at(2)
    stopped = invoke(*args, "--out", out)
    assert stopped.exit_code == 130 and "rerun the same command to resume" in stopped.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "defense.json").exists() and not (out / "model.safetensors").exists()
    ctrl_c_at(None)
    again = invoke(*args, "--out", out)
    assert again.exit_code == 0, again.output
    rec, ref = (json.loads((d / "defense.json").read_text()) for d in (out, tmp_path / "ref"))
    assert rec["resumed_from_epoch"] == 1 and ref["resumed_from_epoch"] == 0
    assert not (out / "checkpoint.pt").exists()
    assert_same_weights(tmp_path / "ref" / "model.safetensors", out / "model.safetensors")
    assert read_history(out / "history.csv") == read_history(tmp_path / "ref" / "history.csv")
    assert rec["after"] == ref["after"] and rec["config"] == ref["config"]


def test_defend_refuses_a_checkpoint_of_other_arguments_and_force_starts_over(run, tmp_path, ctrl_c_at):
    args = ["defend", "d3", run, "--count", "40", "--device", "cpu", "-q", "--out", tmp_path / "d"]
    ctrl_c_at(2)
    assert invoke(*args, "--epochs", "3").exit_code == 130
    ctrl_c_at(None)
    other = invoke(*args, "--epochs", "4")  # another schedule: epochs 1 of the two runs differ
    assert other.exit_code == 2 and "holds an interrupted defense run with other arguments" in other.stderr
    assert "--force" in other.stderr and (tmp_path / "d" / "checkpoint.pt").exists()
    fresh = invoke(*args, "--epochs", "4", "--force")
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((tmp_path / "d" / "defense.json").read_text())["resumed_from_epoch"] == 0


def test_defend_eval_every_writes_those_epochs_and_refuses_a_checkpoint_of_another_cadence(run, tmp_path, ctrl_c_at):
    args = ["defend", "ft", run, "--count", "40", "--epochs", "3", "--batch-size", "8", "--device", "cpu", "-q",
            "--out", tmp_path / "d"]
    ctrl_c_at(3)
    assert invoke(*args, "--eval-every", "2").exit_code == 130
    ctrl_c_at(None)
    other = invoke(*args)  # every epoch: another history, so another run
    assert other.exit_code == 2 and "holds an interrupted defense run with other arguments" in other.stderr
    again = invoke(*args, "--eval-every", "2")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "d" / "defense.json").read_text())["resumed_from_epoch"] == 2
    assert ["acc" in r for r in read_history(tmp_path / "d" / "history.csv")] == [False, True, True]


def test_defend_rerun_returns_the_result_and_evaluate_rescores_a_defense_directory(run, tmp_path, monkeypatch):
    from distox.defenses.d3 import D3

    args = ["defend", "d3", run, "--count", "40", "--epochs", "2", "--device", "cpu", "-q"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    with monkeypatch.context() as mp:
        mp.setattr(D3, "fit", lambda *a, **k: pytest.fail("recomputed a finished defense"))
        assert invoke(*args).stdout == first.stdout
    rec = json.loads((run / "defense" / "d3" / "defense.json").read_text())
    shown = invoke("evaluate", run / "defense" / "d3", "--device", "cpu")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == rec["after"]
    moved = tmp_path / "moved"  # the recorded run_dir is gone: RUN_DIR/defense/METHOD is found instead
    shutil.move(str(run), moved)
    assert json.loads(invoke("evaluate", moved / "defense" / "d3", "--device", "cpu").stdout) == rec["after"]
    (moved / "attack.json").unlink()
    res = invoke("evaluate", moved / "defense" / "d3", "--device", "cpu")
    assert res.exit_code == 2 and "attack run" in res.stderr and "not found" in res.stderr


def test_defend_out_must_not_be_the_attack_run(run):
    res = invoke("defend", "ft", run, "--out", run, "--device", "cpu", "-q")
    assert res.exit_code == 2 and "is the attack run directory itself" in res.stderr


# ---------------------------------------------------------------------------- distox purify
@pytest.mark.parametrize("method, extra", [("d3", []), ("ft", ["--param", "batch_size=16"])])
def test_purify_resumes_after_ctrl_c_bit_identical(shared, tmp_path, ctrl_c_at, method, extra):  # noqa: F811
    args = ["purify", "--model", shared["spec"], "--weights", shared["weights"], "--data", shared["folder"],
            "--method", method, "--epochs", "3", "--device", "cpu", "-q", *extra]
    ref, out = tmp_path / "ref.safetensors", tmp_path / "resumed.safetensors"
    assert invoke(*args, "--out", ref).exit_code == 0
    ctrl_c_at(2)
    stopped = invoke(*args, "--out", out)
    assert stopped.exit_code == 130 and "rerun the same command to resume" in stopped.stderr
    ckpt = tmp_path / "resumed.checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1 and not out.exists()
    ctrl_c_at(None)
    again = invoke(*args, "--out", out)
    assert again.exit_code == 0, again.output
    assert "resumed after epoch 1" in again.stdout and not ckpt.exists()
    assert_same_weights(ref, out)
    a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (ref, out))
    assert b["resumed_from_epoch"] == 1 and a["after"] == b["after"] and a["history"] == b["history"]


def test_purify_refuses_a_checkpoint_of_other_arguments(shared, tmp_path, ctrl_c_at):  # noqa: F811
    args = ["purify", "--model", shared["spec"], "--weights", shared["weights"], "--data", shared["folder"],
            "--device", "cpu", "-q", "--out", tmp_path / "p.safetensors"]
    ctrl_c_at(2)
    assert invoke(*args, "--epochs", "3").exit_code == 130
    ctrl_c_at(None)
    res = invoke(*args, "--epochs", "3", "--param", "lmd=5")
    assert res.exit_code == 2 and "p.checkpoint.pt was saved by an interrupted run with other" in res.stderr
    assert "delete" in res.stderr and not (tmp_path / "p.safetensors").exists()


# ---------------------------------------------------------------------------- what a resume restores
def interrupted_and_resumed(model, retain, kw, ckpt: Path, ctrl_c_at, stop: int):
    """(uninterrupted result, result interrupted at the end of epoch ``stop`` and resumed), after
    checking the resume picked up at ``stop - 1``, removed its checkpoint and matches the
    uninterrupted run: history, record and every weight."""
    ref = distox.purify(model, retain, **kw)
    ctrl_c_at(stop)
    with pytest.raises(KeyboardInterrupt):
        distox.purify(model, retain, checkpoint=ckpt, **kw)
    ctrl_c_at(None)
    got = distox.purify(model, retain, checkpoint=ckpt, **kw)
    assert got.resumed_from_epoch == stop - 1 and not ckpt.exists()
    assert got.history == ref.history and got.config == ref.config
    a, c = ref.model.state_dict(), got.model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)
    return ref, got


@pytest.fixture(scope="module")
def trained():
    from distox.training import LoopConfig, train

    b = make_bundle(n_train=64, n_test=32, side=8, classes=4, seed=1)
    torch.manual_seed(0)
    model = distox.models.create_model("small_cnn", 4, 1, width=4)
    train(model, b.train.x, b.train.y, LoopConfig(epochs=10, batch_size=16, lr=0.05), device="cpu", progress=False)
    return model, b


@pytest.mark.parametrize("params", [
    # the held-out chooser keeps epoch 3 (the most accurate; none within tolerance): its kept
    # weights and the heldout λ controller must come back from the checkpoint
    {"preset": "paper", "select": "heldout", "lmd_control": "heldout", "val_fraction": 0.25},
    {"lmd_control": "geometric"},  # λ follows the epoch
    {"method": "sau", "pgd_steps": 1, "pgd_init": "uniform"},  # random δ from the global generator
    {"method": "ft", "eval_every": 3},  # epochs 3 and 4 evaluated: the history mixes both kinds of rows
    {"universal_radius": 0.1},  # the shared perturbation δ of epochs 1-3 must come back from the checkpoint
    {"shared_radius": 0.1},  # per-image δ drawn from the global generator: its state must come back
    {"shared_radius": 0.1, "shared_schedule": "once"},  # copies crafted again from the suspect, the loop batches indices
    # the soft targets' α as the decay left it must come back from the checkpoint
    {"distill": 0.5, "distill_source": "retain", "distill_schedule": "decay"},
])
def test_api_resume_restores_every_piece_of_state(tmp_path, ctrl_c_at, trained, params):
    model, b = trained
    kw = {**dict(epochs=4, batch_size=16, verbose=False, device="cpu", eval_data=(b.test.x, b.test.y), eval_every=1),
          **params}
    ref, got = interrupted_and_resumed(model, b.train, kw, tmp_path / "ck.pt", ctrl_c_at, 4)
    if "select" in params:
        assert ref.config["selection_resolved"]["chosen_epoch"] == 3
    if "eval_every" in params:
        assert ["acc" in r for r in got.history] == [False, False, True, True]


def test_api_resume_with_input_pruning_is_bit_identical(tmp_path, ctrl_c_at):
    """The default's input pruning (a model that starts with a Linear) is redone from the suspect
    model on a resume, so the resumed run starts from the same pruned weights and ends identical."""
    from distox.training import LoopConfig, train

    b = make_bundle(n_train=64, n_test=32, side=8, classes=4, seed=1)
    torch.manual_seed(0)
    model = distox.models.create_model("small_mlp", 4, 1, width=16, image_size=8)
    train(model, b.train.x, b.train.y, LoopConfig(epochs=10, batch_size=16, lr=0.05), device="cpu", progress=False)
    kw = dict(epochs=3, batch_size=16, verbose=False, device="cpu")
    ref, _ = interrupted_and_resumed(model, b.train, kw, tmp_path / "ck.pt", ctrl_c_at, 3)
    assert ref.config["input_prune_resolved"]["layer"] == "net.hidden.0"


def test_a_diverged_default_run_again_at_the_callers_rate_resumes_bit_identical(tmp_path, ctrl_c_at, trained,
                                                                                monkeypatch):
    """The default's run again at lr 0.01 after diverging at the BatchNorm rule's rate (here
    made inf) is checkpointed under its own identity: interrupted and rerun, it resumes where it
    stopped and ends identical to an uninterrupted run."""
    from distox.defenses import d3 as d3_module
    from distox.training import LoopConfig, train

    monkeypatch.setitem(d3_module.WITHOUT_BATCHNORM, "lr", float("inf"))
    _, b = trained
    torch.manual_seed(0)
    model = distox.models.create_model("small_cnn", 4, 1, width=4, norm="none")
    train(model, b.train.x, b.train.y, LoopConfig(epochs=4, batch_size=16, lr=0.05), device="cpu", progress=False)
    kw = dict(epochs=3, batch_size=16, verbose=False, device="cpu")
    ref, _ = interrupted_and_resumed(model, b.train, kw, tmp_path / "ck.pt", ctrl_c_at, 3)
    assert ref.config["norm_rule_resolved"]["diverged_lr"] == float("inf")
