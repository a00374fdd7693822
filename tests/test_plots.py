"""``distox plot KIND RUN_DIR``: every kind writes a non-empty PNG and the CSV of its numbers,
and the numbers are the right ones (loss path endpoints = backdoored / defended model)."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from distox.analysis.common import load_defended
from distox.analysis.path import interpolate_state
from distox.cli import app
from distox.experiment import AttackSpec, DefenseSpec, load_run, read_history, run_attack, run_defense

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """digits, small CNN width 4, BadNets 2 epochs; FT and D3 for 2 epochs on 100 images."""
    run = tmp_path_factory.mktemp("plots") / "badnets"
    run_attack(AttackSpec("badnets", dataset="digits", model="small_cnn", model_kwargs={"width": 4}, epochs=2,
                          batch_size=64, lr=0.05, augment=False), run, device="cpu", progress=False)
    for method, params in (("ft", {}), ("d3", {"lmd": 10})):
        run_defense(run, DefenseSpec(method, count=100, epochs=2, batch_size=32, params=params), device="cpu",
                    progress=False)
    return run


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot(kind: str, run: Path, out: Path, *extra: str) -> None:
    res = runner.invoke(app, ["plot", kind, str(run), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000  # a real, non-empty picture
    assert out.with_suffix(".csv").stat().st_size > 0


def test_path_csv_endpoints_are_the_two_models(smoke_run, tmp_path):
    out = tmp_path / "path.png"
    plot("path", smoke_run, out, "--steps", "5")  # t = 0, 0.5, 1, 1.5, 2
    rows = read_csv(out.with_suffix(".csv"))
    assert {r["defense"] for r in rows} == {"ft", "d3"}
    run = load_run(smoke_run)
    test, bd = run.data.test, run.backdoor_test_set()

    def losses(model):
        with torch.no_grad():
            return (float(F.cross_entropy(model(test.x), test.y)), float(F.cross_entropy(model(bd.x), bd.target)))

    at0 = losses(run.model)
    for name in ("ft", "d3"):
        mine = {float(r["t"]): r for r in rows if r["defense"] == name}
        assert sorted(mine) == [0.0, 0.5, 1.0, 1.5, 2.0]
        at1 = losses(load_defended(run, smoke_run / "defense" / name))
        assert float(mine[0.0]["clean_loss"]) == pytest.approx(at0[0], rel=1e-4)
        assert float(mine[0.0]["backdoor_loss"]) == pytest.approx(at0[1], rel=1e-4)
        assert float(mine[1.0]["clean_loss"]) == pytest.approx(at1[0], rel=1e-4)
        assert float(mine[1.0]["backdoor_loss"]) == pytest.approx(at1[1], rel=1e-4)
        assert float(mine[2.0]["clean_loss"]) != pytest.approx(at1[0], rel=1e-3)  # extrapolated, not clamped


def test_interpolate_state_is_linear():
    s0 = {"w": torch.zeros(3), "n": torch.tensor(1)}
    s1 = {"w": torch.ones(3), "n": torch.tensor(5)}
    assert torch.equal(interpolate_state(s0, s1, 2.0)["w"], torch.full((3,), 2.0))
    assert int(interpolate_state(s0, s1, 0.2)["n"]) == 1 and int(interpolate_state(s0, s1, 1.0)["n"]) == 5


def test_weights_histogram_counts_every_classifier_weight(smoke_run, tmp_path):
    out = tmp_path / "weights.png"
    plot("weights", smoke_run, out)
    rows = read_csv(out.with_suffix(".csv"))
    run = load_run(smoke_run)
    n = run.model.net.fc.weight.numel()
    for name in ("ft", "d3"):
        counts = [int(r["count"]) for r in rows if r["defense"] == name]
        assert sum(counts) == n
    # D3 moves the classifier much further than FT (its objective)
    def spread(name):
        return sum(abs((float(r["bin_left"]) + float(r["bin_right"])) / 2) * int(r["count"])
                   for r in rows if r["defense"] == name)
    assert spread("d3") > spread("ft")


def test_tsne_writes_points_of_every_model(smoke_run, tmp_path):
    out = tmp_path / "tsne.png"
    plot("tsne", smoke_run, out, "--points", "120")
    rows = read_csv(out.with_suffix(".csv"))
    models = {r["model"] for r in rows}
    assert models == {"before (backdoored)", "after ft", "after d3"}
    per_model = [r for r in rows if r["model"] == "after d3"]
    assert len(per_model) == 120
    assert sum(r["kind"] == "poisoned" for r in per_model) == 60


def test_penultimate_features_are_the_classifiers_input_linear_or_conv_head():
    """The t-SNE features: the last Linear's input, or a conv class head's input averaged over
    positions (the model has no Linear); the model's modes are left as they were."""
    from distox.analysis import penultimate_features
    from distox.models import create_model

    torch.manual_seed(0)
    x = torch.rand(5, 1, 16, 16)
    linear = create_model("small_cnn", 4, 1, width=4)
    conv = create_model("small_cnn", 4, 1, width=4, head="conv")
    for model in (linear, conv):
        model.train()
        feats = penultimate_features(model, x, batch_size=2)
        assert model.training and all(m.training for m in model.modules())
        head = model.net.fc if model is linear else [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        seen = []
        hook = head.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
        with torch.no_grad():
            model.eval()(x)
        hook.remove()
        expected = seen[0].flatten(1) if model is linear else seen[0].mean((2, 3))
        assert feats.shape == (5, expected.shape[1]) and torch.allclose(feats, expected, atol=1e-6)


def test_penultimate_features_move_the_model_back_where_it_was(monkeypatch):
    """The caller's model goes to ``device`` for the pass and back to its own device after."""
    from distox.analysis import penultimate_features
    from distox.models import create_model

    model = create_model("small_cnn", 4, 1, width=4)
    moves, real_to = [], torch.nn.Module.to

    def spy(self, *args, **kwargs):
        if self is model:
            moves.append(str(args[0] if args else kwargs["device"]))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    penultimate_features(model, torch.rand(3, 1, 16, 16), device="cpu")
    assert moves == ["cpu", "cpu"]


def test_curves_csv_matches_histories(smoke_run, tmp_path):
    out = tmp_path / "curves.png"
    plot("curves", smoke_run, out)
    rows = read_csv(out.with_suffix(".csv"))
    for name in ("ft", "d3"):
        hist = read_history(smoke_run / "defense" / name / "history.csv")
        mine = [r for r in rows if r["defense"] == name]
        assert [int(r["epoch"]) for r in mine] == [0] + [int(h["epoch"]) for h in hist]
        assert [float(r["asr"]) for r in mine[1:]] == pytest.approx([h["asr"] for h in hist])


def test_plot_errors(smoke_run, tmp_path):
    res = runner.invoke(app, ["plot", "nope", str(smoke_run), "--out", str(tmp_path / "x.png")])
    assert res.exit_code != 0 and "unknown plot kind" in res.output
    res = runner.invoke(app, ["plot", "path", str(smoke_run), "--defense", "sau", "--out", str(tmp_path / "x.png")])
    assert res.exit_code != 0 and "no finished defense result for sau" in res.output
    empty = tmp_path / "empty_run"
    empty.mkdir()
    res = runner.invoke(app, ["plot", "curves", str(empty), "--out", str(tmp_path / "x.png")])
    assert res.exit_code != 0 and "no defense results" in res.output
    assert not (tmp_path / "x.png").exists()


def test_path_shows_progress_per_defense(smoke_run, tmp_path):
    res = runner.invoke(app, ["plot", "path", str(smoke_run), "--steps", "3", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert "path ft: 3/3 t" in res.stderr and "path d3: 3/3 t" in res.stderr and "\r" not in res.stderr


def test_weights_names_the_results_it_leaves_out_and_why(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    shutil.copytree(run / "defense" / "ft", run / "defense" / "sau")
    (run / "defense" / "half").mkdir()
    (run / "defense" / "half" / "history.csv").write_text("epoch\n1\n")  # an unfinished result
    res = runner.invoke(app, ["plot", "weights", str(run), "--out", str(tmp_path / "w.png")])
    assert res.exit_code == 0, res.output
    assert re.search(r"compares ft and d3 by default; left out sau \(pass --defense", res.stderr), res.stderr
    assert re.search(r"left out \S*half: not a finished defense result \(no defense\.json or model\.safetensors\)",
                     res.stderr), res.stderr
    assert {r["defense"] for r in read_csv(tmp_path / "w.csv")} == {"ft", "d3"}
    chosen = runner.invoke(app, ["plot", "weights", str(run), "-d", "sau", "-d", "d3", "--out", str(tmp_path / "c.png")])
    assert chosen.exit_code == 0 and "left out" not in chosen.stderr, chosen.stderr
    assert {r["defense"] for r in read_csv(tmp_path / "c.csv")} == {"sau", "d3"}
