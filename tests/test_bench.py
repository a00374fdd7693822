"""distox bench: grid expansion, cell keys, config validation, resumable atomic cache,
executors (sequential, processes, Ray) and report formats. Unit tests use a fake cell
function; the end-to-end tests run the real attack/defense runs on digits (width-4 CNN, 1 epoch).
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from distox.bench import (
    BenchError, Cache, RunOptions, build_report, cell_key, execute, expand, parse_config, prepare, render,
)
from distox.bench.cache import CELL_RECORD
from distox.bench.config import resolve_config
from distox.experiment import clean_recipe
from distox.metrics import der

BASE = {
    "name": "unit",
    "profile": "custom",
    "datasets": ["digits"],
    "models": [{"name": "small_cnn", "kwargs": {"width": 4}}],
    "seeds": [0, 1],
    "attack_settings": {"epochs": 1, "batch_size": 64},
    "defense_settings": {"ratio": 0.1, "epochs": 1},
    "attacks": ["badnets", {"name": "blended", "options": {"alpha": 0.2}},
                {"name": "wanet", "grid": {"poison_rate": [0.05, 0.1]}}],
    "defenses": ["none", "ft", {"name": "d3", "options": {"preset": "paper"}, "grid": {"ratio": [0.01, 0.05]}}],
}


def cfg_of(**changes):
    d = copy.deepcopy(BASE)
    d.update(changes)
    return parse_config(d)


class FakeCells:
    """Deterministic fake cell function: metrics derived from the key; counts its calls and
    optionally raises after ``fail_after`` successful cells, or on the cells in ``fail_keys``."""

    def __init__(self, fail_after: int | None = None, exc: type[BaseException] = RuntimeError,
                 fail_keys: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.fail_after, self.exc, self.fail_keys = fail_after, exc, fail_keys

    def __call__(self, cell, cells_root, options):
        if cell.key in self.fail_keys or (self.fail_after is not None and len(self.calls) >= self.fail_after):
            raise self.exc("simulated crash")
        self.calls.append(cell.key)
        h = int(cell.key[:8], 16)
        if cell.kind == "attack":
            return {"acc": 90.0 + h % 5, "asr": 95.0 + h % 4, "ra": 2.0}
        return {"acc": 85.0 + h % 7, "asr": float(h % 3), "ra": 60.0}


def fake_cell(cell, cells_root, options):  # module level: picklable for worker processes
    return FakeCells()(cell, cells_root, options)


# ---------------------------------------------------------------------------- grid and keys
def test_grid_expansion_counts():
    grid = expand(cfg_of())
    # attacks: badnets + blended + wanet×2 poison rates = 4 configurations, × 2 seeds
    assert len(grid.attacks) == 8
    # defenses per attack cell: ft + d3×2 retain ratios ("none" is the attack itself)
    assert len(grid.defenses) == 8 * 3
    assert all(len(grid.defenses_of(a.key)) == 3 for a in grid.attacks)
    assert {a.row for a in grid.attacks} == {"badnets", "blended", "wanet (poison_rate=0.05)",
                                             "wanet (poison_rate=0.1)"}
    assert {d.column for d in grid.defenses} == {"ft", "d3 (ratio=0.01)", "d3 (ratio=0.05)"}
    wanet = next(a for a in grid.attacks if a.row == "wanet (poison_rate=0.05)")
    assert wanet.config["poison_rate"] == 0.05 and wanet.config["attack_kwargs"] == {}
    blended = next(a for a in grid.attacks if a.row == "blended")
    assert blended.config["attack_kwargs"] == {"alpha": 0.2}
    d3 = next(d for d in grid.defenses if d.column == "d3 (ratio=0.01)")
    assert d3.config["defense"]["ratio"] == 0.01 and d3.config["defense"]["params"] == {"preset": "paper"}
    assert d3.config["defense"]["epochs"] == 1 and d3.config["attack"] == d3.parent


def test_attack_entry_restricts_its_defenses(tmp_path):
    d = copy.deepcopy(BASE)
    d["seeds"] = [0]
    d["attacks"] = [{"name": "badnets", "grid": {"poison_rate": [0.01, 0.5]}, "defenses": ["d3"]},
                    {"name": "blended", "defenses": ["ft", "d3-retain"]}]
    d["defenses"] = ["none", "ft", "d3", {"name": "d3", "label": "d3-retain", "grid": {"ratio": [0.01, 0.1]}}]
    grid = expand(parse_config(d))
    cols = {a.row: sorted(c.column for c in grid.defenses_of(a.key)) for a in grid.attacks}
    assert cols == {"badnets (poison_rate=0.01)": ["d3"], "badnets (poison_rate=0.5)": ["d3"],
                    "blended": ["d3-retain (ratio=0.01)", "d3-retain (ratio=0.1)", "ft"]}
    bad = copy.deepcopy(d)
    bad["attacks"][1]["defenses"] = ["ft", "d4"]
    with pytest.raises(BenchError, match=r"attacks\[1\]\.defenses\[1\]: 'd4' is not a defense entry"):
        parse_config(bad)
    # the report leaves pairs outside the grid empty, averages over the planned rows, and keeps
    # the config's column order
    grid, cache = prepare(parse_config(d), str(tmp_path))
    execute(grid, cache, cell_fn=FakeCells(), progress=False)
    rep = build_report(tmp_path)
    t = rep.tables[0]
    assert t.columns == ["none", "ft", "d3", "d3-retain (ratio=0.01)", "d3-retain (ratio=0.1)"]
    assert not t.entries["blended"]["d3"].planned and t.entries["blended"]["ft"].acc is not None
    assert t.entries["Average"]["ft"].acc == t.entries["blended"]["ft"].acc
    line = next(x for x in render(rep).splitlines() if x.startswith("| Blended |") and "DER" not in x)
    assert "|  |" in line and "–" not in line


def test_keys_are_stable_and_pinned():
    assert [c.key for c in expand(cfg_of()).cells] == [c.key for c in expand(cfg_of()).cells]
    # a pinned value: a change in hashing or canonical JSON must be deliberate (KEY_VERSION)
    assert cell_key("attack", {"attack": "badnets", "epochs": 1}) == hashlib.sha256(
        b'{"config":{"attack":"badnets","epochs":1},"kind":"attack","v":1}').hexdigest()[:16]
    # data_root is a machine detail, not part of any key
    assert [c.key for c in expand(cfg_of(data_root="/elsewhere")).cells] == [c.key for c in expand(cfg_of()).cells]


def test_revision_one_keeps_the_keys_of_before(monkeypatch):
    from distox import defenses

    # pinned from the code before revisions existed, after the per-dataset flip of issue 17
    # (which changed the keys of every non-CIFAR-10 attack cell; BENCHMARKS.md says so)
    # D3() runs the default preset (2); attention projections (3); the default's soft targets without BatchNorm (4),
    # then with BatchNorm too (5); lr 0.03 on models with BatchNorm (6); the soft targets on the copies only (7)
    assert defenses.get("d3").revision == 7
    d3_keys = {c.key for c in expand(cfg_of()).defenses if c.column.startswith("d3")}
    monkeypatch.setattr(defenses.get("d3"), "revision", 1)
    grid = expand(cfg_of())
    assert d3_keys.isdisjoint(c.key for c in grid.defenses)
    assert grid.attacks[0].key == "44e7a167db33f31a"
    assert grid.defenses[-1].key == "046936f616e3d1cc"
    assert all(c.revisions == {"attack": 1} for c in grid.attacks)
    assert all(c.revisions == {"attack": 1, "defense": 1} for c in grid.defenses)
    assert cell_key("attack", {"a": 1}, {"attack": 1}) == cell_key("attack", {"a": 1})


def test_bumping_a_revision_changes_only_its_cells(monkeypatch, tmp_path):
    from distox import attacks, defenses

    base = _keys_by_label(expand(cfg_of()))
    monkeypatch.setattr(defenses.get("d3"), "revision", 8)
    grid = expand(cfg_of())
    bumped = _keys_by_label(grid)
    diff = {k for k in base if base[k] != bumped[k]}
    assert diff == {k for k in base if k[1].startswith("d3")} and len(diff) == 8 * 2
    d3 = next(c for c in grid.defenses if c.column.startswith("d3"))
    assert d3.revisions == {"attack": 1, "defense": 8}
    # the revision a cell ran with is in its record and in the manifest
    grid, cache = prepare(cfg_of(seeds=[0]), str(tmp_path))
    execute(grid, cache, cell_fn=FakeCells(), progress=False)
    d3 = next(c for c in grid.defenses if c.column.startswith("d3"))
    assert cache.load(d3.key)["revisions"] == {"attack": 1, "defense": 8}
    assert cache.read_manifest()[1].defenses[0].revisions == grid.defenses[0].revisions
    monkeypatch.undo()
    assert _keys_by_label(expand(cfg_of())) == base
    # an attack's revision recomputes that attack and its defenses, nothing else
    monkeypatch.setattr(attacks.get("blended"), "revision", 3)
    bumped = _keys_by_label(expand(cfg_of()))
    diff = {k for k in base if base[k] != bumped[k]}
    assert diff == {k for k in base if k[0] == "blended"} and len(diff) == 2 * (1 + 3)


def _keys_by_label(grid):
    return {(c.row, c.column, c.seed): c.key for c in grid.cells}


def test_defense_option_change_changes_only_that_defense():
    base = _keys_by_label(expand(cfg_of()))
    d = copy.deepcopy(BASE)
    d["defenses"][2]["options"]["lmd"] = 5.0
    changed = _keys_by_label(expand(parse_config(d)))
    assert base.keys() == changed.keys()
    diff = {k for k in base if base[k] != changed[k]}
    assert diff and all(col.startswith("d3") for _, col, _ in diff)
    assert len(diff) == 8 * 2  # both d3 retain ratios on every attack cell


def test_attack_option_change_changes_attack_and_its_defenses():
    base = _keys_by_label(expand(cfg_of()))
    d = copy.deepcopy(BASE)
    d["attacks"][1]["options"]["alpha"] = 0.3
    changed = _keys_by_label(expand(parse_config(d)))
    diff = {k for k in base if base[k] != changed[k]}
    assert {row for row, _, _ in diff} == {"blended"}
    assert len(diff) == 2 * (1 + 3)  # 2 seeds × (attack + its 3 defenses)
    # a shared defense setting changes every defense key but no attack key
    d = copy.deepcopy(BASE)
    d["defense_settings"]["epochs"] = 2
    changed = _keys_by_label(expand(parse_config(d)))
    diff = {k for k in base if base[k] != changed[k]}
    assert diff == {k for k in base if k[1] != "none"}


def _clean_ref(**changes):
    return cfg_of(**{"attack_settings": {"epochs": 1, "batch_size": 64, "clean_reference": True}, **changes})


def test_clean_reference_shares_one_clean_cell_per_recipe():
    grid = expand(_clean_ref())
    # one clean model per seed serves badnets, blended and both WaNet poison rates
    assert [c.seed for c in grid.cleans] == [0, 1] and len(grid) == 2 + 8 + 24
    for a in grid.attacks:
        clean = next(c for c in grid.cleans if c.key == a.parent)
        assert clean.seed == a.seed and clean.config == clean_recipe(a.config)
        assert "attack" not in clean.config and clean.config["epochs"] == 1
        assert a.key == cell_key("attack", a.config)  # the key scheme of per-attack clean models
    # another training recipe gets its own clean model
    d = copy.deepcopy(BASE)
    d["attack_settings"]["clean_reference"] = True
    d["attacks"][1]["options"]["epochs"] = 2
    grid = expand(parse_config(d))
    assert len(grid.cleans) == 4
    parents = {row: {a.parent for a in grid.attacks if a.row == row} for row in ("badnets", "blended")}
    assert parents["badnets"].isdisjoint(parents["blended"])
    assert not expand(cfg_of()).cleans and all(a.parent is None for a in expand(cfg_of()).attacks)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("change, expected", [
    (lambda d: d["attacks"].append({"name": "foo"}), "attacks[3].name: unknown attack 'foo'; valid: "),
    (lambda d: d["defenses"].append("bar"), "defenses[3].name: unknown defense 'bar'"),
    (lambda d: d.update(datasets=["digits", "imagenet-99"]), "datasets[1]: unknown dataset 'imagenet-99'"),
    (lambda d: d["attack_settings"].update(epochs="ten"), "attack_settings.epochs: "),
    (lambda d: d["defense_settings"].update(ratio=1.5), "defense_settings.ratio: "),
    (lambda d: d.update(models=["resnet999"]), "models[0].name: unknown model 'resnet999'"),
    (lambda d: d["defenses"][2]["options"].update(lmdd=3), "defenses[2].options.lmdd: unknown option for defense 'd3'"),
    (lambda d: d["attacks"][1]["options"].update(alpah=3), "attacks[1].options.alpah: unknown option for attack 'blended'"),
    (lambda d: d.update(seedz=[1]), "seedz: unknown key"),
    (lambda d: d["models"][0]["kwargs"].update(widht=4),
     "models[0].kwargs: unknown option(s) widht for model 'small_cnn'; valid: head, norm, width"),
    (lambda d: d.update(models=[{"name": "torchvision:resnet18", "kwargs": {"widht": 4}}]),
     "models[0].kwargs: torchvision:resnet18: ResNet.__init__() got an unexpected keyword argument 'widht'; "
     "valid: groups, norm_layer, replace_stride_with_dilation, width_per_group, zero_init_residual"),
    (lambda d: d.update(models=["torchvision:resnet1800"]), "models[0].kwargs: unknown torchvision model 'resnet1800'"),
    (lambda d: d["defense_settings"].update(params={"d3": {"lmdd": 1}}),
     "defense_settings.params.d3.lmdd: unknown option for defense 'd3'; valid: anchor, augment, auto, average, batch_size, blend, bn_recalibrate, channels_last, classifier_lr, classifier_weight, compile, distill, distill_on, distill_scaled, distill_schedule, distill_source, distill_temperature, epochs, eps,"),
    (lambda d: d["defenses"].append({"name": "ft-sam", "options": {"lmd": 10}}),  # FTSAM -> FT -> Defense
     "defenses[3].options.lmd: unknown option for defense 'ft-sam'; valid: adaptive, augment, batch_size, blend, "
     "channels_last, compile, count, epochs, eta, flip, label_smoothing, lr, momentum, precision, ratio, rho, "
     "weight_decay"),
    (lambda d: d["defenses"][2]["options"].update(preset="papr"),
     "defenses[2] (d3: preset=papr, ratio=0.01): preset must be one of ['all-layers', 'copies', 'default', 'paper', 'reference', 'soft', 'soft-lr03']"),
    (lambda d: d["attacks"][2]["grid"].update(k=[4, -1]), "attacks[2] (wanet: poison_rate=0.05, k=-1): wanet: k (control grid size) must be >= 2"),
    (lambda d: d["attacks"][2].update(grid={"poison_rate": 0.1}), "attacks[2].grid.poison_rate: "),
])
def test_config_errors_name_the_key(change, expected):
    d = copy.deepcopy(BASE)
    change(d)
    with pytest.raises(BenchError) as info:
        parse_config(d)
    assert expected in str(info.value)


def test_bad_config_rejected_before_anything_runs(tmp_path):
    from typer.testing import CliRunner

    from distox.cli import app

    d = copy.deepcopy(BASE)
    d["attacks"][0] = {"name": "badnetz"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(app, ["bench", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "attacks[0].name: unknown attack 'badnetz'" in res.output
    assert not (tmp_path / "out").exists()


def test_options_forwarded_to_the_base_class_are_accepted():
    # D3(**kwargs) forwards lr/augment/flip to Defense: valid, and they reach the cell's params
    d = copy.deepcopy(BASE)
    d["defenses"][2]["options"].update(lr=0.02, augment=False, lmd=10)
    d["defense_settings"]["params"] = {"ft": {"lr": 0.005, "weight_decay": 0.0}}
    grid = expand(parse_config(d))
    d3 = next(c for c in grid.defenses if c.config["defense"]["method"] == "d3")
    assert {"lr": 0.02, "augment": False, "lmd": 10}.items() <= d3.config["defense"]["params"].items()


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["defense_settings"].update(params={"d3": {"lmdd": 10}}), "defense_settings.params.d3.lmdd"),
    (lambda d: d["models"][0]["kwargs"].update(widht=4), "models[0].kwargs: unknown option(s) widht"),
    (lambda d: d["defenses"][2]["options"].update(preset="papr"), "defenses[2] (d3: preset=papr"),
])
def test_bad_option_rejected_before_the_attack_cell_trains(tmp_path, change, expected):
    from typer.testing import CliRunner

    from distox.cli import app

    d = copy.deepcopy(BASE)
    change(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(app, ["bench", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert expected in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- shipped configs
def _cli(*args: str):
    from typer.testing import CliRunner

    from distox.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_shipped_configs_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    for name in ("smoke", "smoke.yaml", "configs/smoke.yaml"):
        res = _cli("bench", name, "--dry-run")
        assert res.exit_code == 0, res.output
        assert "6 cells (2 attack, 4 defense): 0 done, 6 to compute; out runs/smoke" in res.stdout
    # a file of one's own wins over the shipped grid of the same name
    d = yaml.safe_load(resolve_config("smoke").read_text())
    d["seeds"] = [0, 1]
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(d))
    assert "12 cells" in _cli("bench", "smoke.yaml", "--dry-run").stdout
    assert "12 cells" in _cli("bench", tmp_path / "smoke.yaml", "--dry-run").stdout
    # report --config NAME: that grid's table, not the one last benched into the directory
    prepare(cfg_of(), str(tmp_path / "b"))
    res = _cli("report", tmp_path / "b", "--config", "smoke")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("Grid `smoke` (profile smoke): 0/6 cells done.")


def test_unknown_config_lists_the_shipped_ones(tmp_path, monkeypatch):
    from distox.bench.config import shipped_configs

    monkeypatch.chdir(tmp_path)
    assert shipped_configs() == ["cpu", "cpu-ablations", "cpu-seeds", "cpu-vgg", "paper", "smoke", "zoo"]
    res = _cli("bench", "smok", "--dry-run")
    assert res.exit_code == 2
    assert res.stderr.strip() == ("error: no config named 'smok': not a file here nor a shipped grid; shipped: "
                                  "cpu, cpu-ablations, cpu-seeds, cpu-vgg, paper, smoke, zoo")
    res = _cli("report", tmp_path, "--config", "mine/grid.yaml")
    assert res.exit_code == 2 and "config file not found: mine/grid.yaml (shipped grids, usable by name: cpu," in res.stderr
    (tmp_path / "adir").mkdir()
    assert "config adir is not a file" in _cli("bench", "adir").stderr


def test_shipped_configs_are_package_data():
    """One copy, inside the package, matched by the pyproject package-data pattern (so a wheel
    carries them)."""
    import fnmatch
    import tomllib

    import distox
    from distox.bench.config import SHIPPED_DIR

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["distox"]
    package = Path(distox.__file__).parent
    files = sorted(SHIPPED_DIR.glob("*.yaml"))
    assert len(files) == 7 and SHIPPED_DIR.parent == package
    assert all(any(fnmatch.fnmatch(str(f.relative_to(package)), p) for p in patterns) for f in files)
    assert not (root / "configs").exists()


def test_console_entry_point_runs_a_shipped_config_elsewhere(tmp_path):
    """The `distox` script's function (pyproject [project.scripts]) in a fresh process whose
    working directory is not the checkout."""
    import subprocess
    import sys
    import tomllib

    import distox

    root = Path(__file__).resolve().parents[1]
    target = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["distox"]
    module, func = target.split(":")
    env = {**os.environ, "PYTHONPATH": str(Path(distox.__file__).parents[1]), "DISTOX_CACHE": str(tmp_path / "c")}
    code = f"import sys; sys.argv[0] = 'distox'; from {module} import {func}; {func}()"
    res = subprocess.run([sys.executable, "-c", code, "bench", "smoke", "--dry-run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("6 cells (2 attack, 4 defense): 0 done, 6 to compute; out runs/smoke")


def test_second_bench_on_same_directory_is_refused(tmp_path):
    from typer.testing import CliRunner

    from distox.cli import app

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    with Cache(out).exclusive():  # as if another bench process were working on `out`
        res = CliRunner().invoke(app, ["bench", str(path), "--out", str(out)])
        assert res.exit_code == 2
        assert f"pid {os.getpid()}" in res.output and "is running on" in res.output
        assert not (out / "cells").exists()
        with pytest.raises(BenchError, match="another `distox bench`"):
            with Cache(out).exclusive():
                pass
    with Cache(out).exclusive():  # released on exit
        pass


def test_shipped_configs_validate():
    from distox.bench import load_config

    grids = {name: expand(load_config(name))
             for name in ("smoke", "cpu", "cpu-vgg", "cpu-seeds", "cpu-ablations", "paper", "zoo")}
    sizes = {name: len(grid) for name, grid in grids.items()}
    assert sizes["smoke"] == 2 + 2 * 2
    assert sizes["cpu"] == sizes["cpu-vgg"] == 7 * 10 - 5  # 7 attacks x (no defense + nine defenses), NC
    # (about 40x FT) on BadNets and Blended only
    nine = {"ft", "ft-sam", "sau", "fp", "nad", "nc", "anp", "i-bau", "d3"}
    for name in ("cpu", "cpu-vgg", "paper"):
        assert {c.column for c in grids[name].cells} == nine | {"none"}, name
    assert sizes["cpu-seeds"] == 3 * 7 * 3  # 3 seeds x 7 attacks x (no defense, FT-SAM, D3)
    # cpu-seeds.yaml is cpu.yaml over more seeds: its seed-0 cells are cpu.yaml's (same keys)
    seed0 = {c.key for c in grids["cpu-seeds"].cells if c.seed == 0}
    assert seed0 and seed0 <= {c.key for c in grids["cpu"].cells}
    # zoo.yaml: 6 models x 7 attack rows x 2 seeds; one clean cell per (model, seed, recipe: plain,
    # SAM-trained or label-smoothed); defenses: 5 per attack plus the 2 retain sizes on BadNets and Blended
    zoo = grids["zoo"]
    kinds = [c.kind for c in zoo.cells]
    assert (kinds.count("attack"), kinds.count("clean")) == (6 * 7 * 2, 6 * 2 * 3)
    assert kinds.count("defense") == 6 * 2 * (7 * 5 + 2 * 2)
    check = {(c.group, c.row) for c in zoo.cells if c.part == "check"}
    assert {g for g, _ in check} >= {"fashion-mnist / small_vit", "fashion-mnist / hybrid_vit"}
    assert all(g.endswith(("small_vit", "hybrid_vit")) or r in ("ssba", "blended-ls") for g, r in check)
    smoothed = [c for c in zoo.cells if c.kind in ("attack", "clean") and c.config.get("label_smoothing")]
    assert len(smoothed) == 6 * 2 * 2 and all(c.config["label_smoothing"] == 0.1 for c in smoothed)
    # the retain-size rows run the default preset's own epochs (its steps floor), the 3,000-image
    # row the grid's 12
    from distox.data.core import ImageSplit
    from distox.experiment import DefenseSpec
    from distox.experiment.factories import build_defense

    for column, epochs in (("d3-default-retain", {500: 38, 1000: 19}), ("d3-default", {3000: 12})):
        cells = [c for c in zoo.cells if c.column.split(" (")[0] == column]
        assert {c.config["defense"]["count"] for c in cells} == set(epochs)
        for cell in cells:
            spec = DefenseSpec(**cell.config["defense"])
            images = ImageSplit(torch.zeros(spec.count, 1, 4, 4), torch.zeros(spec.count, dtype=torch.long))
            assert build_defense(spec).epochs_for(images) == epochs[spec.count]


# ---------------------------------------------------------------------------- cache and resume
def test_kill_midway_then_resume_computes_only_the_rest(tmp_path):
    grid, cache = prepare(cfg_of(), str(tmp_path))
    crash = FakeCells(fail_after=5)
    with pytest.raises(BenchError, match="simulated crash"):
        execute(grid, cache, cell_fn=crash, fail_fast=True, progress=False)
    assert len(crash.calls) == 5 and len(cache.pending(grid)) == len(grid) - 5
    # the first attack's defenses ran right after it (rows complete early)
    assert crash.calls[1:4] == [d.key for d in grid.defenses_of(crash.calls[0])]
    rest = FakeCells()
    summary = execute(grid, cache, cell_fn=rest, progress=False)
    assert sorted(rest.calls) == sorted(c.key for c in grid.cells if c.key not in crash.calls)
    assert summary.ok and len(summary.cached) == 5 and len(summary.computed) == len(grid) - 5
    again = FakeCells()
    summary = execute(grid, cache, cell_fn=again, progress=False)
    assert again.calls == [] and summary.computed == [] and len(summary.cached) == len(grid)


def test_keyboard_interrupt_keeps_finished_cells(tmp_path):
    grid, cache = prepare(cfg_of(seeds=[0]), str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        execute(grid, cache, cell_fn=FakeCells(fail_after=3, exc=KeyboardInterrupt), progress=False)
    assert len(grid) - len(cache.pending(grid)) == 3


def test_failed_attack_skips_its_defenses_and_keeps_going(tmp_path):
    grid, cache = prepare(cfg_of(seeds=[0]), str(tmp_path))
    first = grid.attacks[0].key
    summary = execute(grid, cache, cell_fn=FakeCells(fail_keys=(first,)), progress=False)
    assert list(summary.failed) == [first] and "simulated crash" in summary.failed[first]
    assert sorted(summary.skipped) == sorted(d.key for d in grid.defenses_of(first))
    assert len(cache.pending(grid)) == 1 + 3


def test_half_written_cell_is_not_done(tmp_path, monkeypatch):
    grid, cache = prepare(cfg_of(seeds=[0]), str(tmp_path))
    cell = grid.attacks[0]
    d = cache.cell_dir(cell.key)
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"partial")
    assert not cache.is_done(cell)
    (d / CELL_RECORD).write_text('{"key": "' + cell.key + '", "result": {"acc": 9')  # truncated
    assert not cache.is_done(cell)
    (d / CELL_RECORD).write_text(json.dumps({"key": "0" * 16, "result": {}}))  # another cell's record
    assert not cache.is_done(cell)
    (d / CELL_RECORD).unlink()
    # a crash during the final rename leaves no record and no temp file behind
    import distox.runs

    def boom(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(distox.runs.os, "replace", boom)
    with pytest.raises(OSError):
        cache.mark_done(cell, {"acc": 1.0, "asr": 2.0}, 1.0)
    monkeypatch.undo()
    assert not cache.is_done(cell) and sorted(p.name for p in d.iterdir()) == ["model.safetensors"]
    calls = FakeCells()
    execute(grid, cache, cell_fn=calls, progress=False)
    assert cell.key in calls.calls and cache.is_done(cell)


def test_process_executor_matches_sequential(tmp_path):
    cfg = cfg_of(seeds=[0], attacks=["badnets", "blended"], defenses=["ft", "d3"])
    grid, seq = prepare(cfg, str(tmp_path / "seq"))
    execute(grid, seq, cell_fn=fake_cell, progress=False)
    grid, par = prepare(cfg, str(tmp_path / "par"))
    # fork: the fake cells use no torch, and spawn would import torch in each worker (slow)
    summary = execute(grid, par, executor="local", jobs=2, cell_fn=fake_cell, progress=False,
                      mp_context="fork")
    assert summary.ok and len(summary.computed) == len(grid) == 6
    for c in grid.cells:
        assert par.load(c.key)["result"] == seq.load(c.key)["result"]


def logged_cell(cell, cells_root, options):  # module level: picklable for worker processes
    """Fake cell that appends ``start``/``end`` lines (kind, key) to ``cells_root/../calls.log``."""
    log = Path(cells_root).parent / "calls.log"
    with open(log, "a") as fh:
        fh.write(f"start {cell.kind} {cell.key}\n")
    out = FakeCells()(cell, cells_root, options)
    with open(log, "a") as fh:
        fh.write(f"end {cell.kind} {cell.key}\n")
    return out


def test_clean_cells_run_once_before_their_attacks_with_two_workers(tmp_path):
    grid, cache = prepare(_clean_ref(defenses=["ft"]), str(tmp_path))
    summary = execute(grid, cache, executor="local", jobs=2, cell_fn=logged_cell, progress=False,
                      mp_context="fork")
    assert summary.ok and len(summary.computed) == len(grid) == 2 + 8 + 8
    lines = (tmp_path / "calls.log").read_text().splitlines()
    for clean in grid.cleans:
        assert lines.count(f"start clean {clean.key}") == 1
        finished = lines.index(f"end clean {clean.key}")
        for a in grid.attacks:
            if a.parent == clean.key:
                assert lines.index(f"start attack {a.key}") > finished


def test_failed_clean_cell_skips_its_attacks_and_their_defenses(tmp_path):
    grid, cache = prepare(_clean_ref(defenses=["ft"]), str(tmp_path))
    bad = grid.cleans[0].key
    summary = execute(grid, cache, cell_fn=FakeCells(fail_keys=(bad,)), progress=False)
    waiting = [a for a in grid.attacks if a.parent == bad]
    assert list(summary.failed) == [bad] and len(waiting) == 4
    assert sorted(summary.skipped) == sorted([a.key for a in waiting]
                                             + [d.key for a in waiting for d in grid.defenses_of(a.key)])
    assert len(cache.pending(grid)) == 1 + 4 + 4


# ---------------------------------------------------------------------------- report
def test_report_formats_with_average_row(tmp_path):
    cfg = cfg_of(seeds=[0], attacks=["badnets", "blended"], defenses=["none", "ft", "d3"])
    grid, cache = prepare(cfg, str(tmp_path))
    execute(grid, cache, cell_fn=FakeCells(), progress=False)
    res = {c.key: cache.load(c.key)["result"] for c in grid.cells}
    atk = {a.row: res[a.key] for a in grid.attacks}
    d3 = {d.row: res[d.key] for d in grid.defenses if d.column == "d3"}

    md = render(build_report(tmp_path), "markdown")
    assert "| Attack | No defense ACC | No defense ASR | FT ACC | FT ASR | D3 ACC | D3 ASR |" in md
    avg_line = next(line for line in md.splitlines() if line.startswith("| **Average** | ") and "ACC" not in line)
    cells = [c.strip() for c in avg_line.strip("|").split("|")]
    assert cells[1] == f"{(atk['badnets']['acc'] + atk['blended']['acc']) / 2:.2f}"
    assert cells[6] == f"{(d3['badnets']['asr'] + d3['blended']['asr']) / 2:.2f}"
    assert "| D3 DER |" in md.replace("FT DER | ", "")
    want_der = der(atk["badnets"], d3["badnets"])  # percent
    assert f"{want_der:.2f}" in next(line for line in md.splitlines() if line.startswith("| BadNets |") and "DER" not in line
                                     and line.count("|") == 4)

    rows = list(csv.reader(io.StringIO(render(build_report(tmp_path), "csv"))))
    assert rows[0][:4] == ["group", "attack", "No defense ACC", "No defense ASR"] and "D3 DER" in rows[0]
    assert [r[1] for r in rows[1:]] == ["BadNets", "Blended", "Average"]
    assert rows[3][rows[0].index("D3 ASR")] == cells[6]

    tex = render(build_report(tmp_path), "latex")
    assert r"\begin{tabular}" in tex and "Average & " in tex and r"\multicolumn{2}{c}{D3}" in tex

    js = json.loads(render(build_report(tmp_path), "json"))
    avg = js["tables"][0]["rows"][-1]
    assert avg["attack"] == "Average" and avg["cells"]["D3"]["asr"] == float(cells[6])
    assert js["done"] == js["total"] == 6


def test_report_incomplete_and_paper_profile(tmp_path):
    cfg = cfg_of(seeds=[0], profile="paper", attacks=["badnets", "blended"], defenses=["ft", "d3"])
    grid, cache = prepare(cfg, str(tmp_path))
    with pytest.raises(BenchError):
        execute(grid, cache, cell_fn=FakeCells(fail_after=3), fail_fast=True, progress=False)
    rep = build_report(tmp_path)
    assert (rep.done, rep.total) == (3, 6)
    md = render(rep, "markdown")
    assert "D3 ASR (paper)" in md and "D3 ACC (paper)" in md and "0.74" in md and "96.91" in md
    blended = next(line for line in md.splitlines() if line.startswith("| Blended |") and line.count("|") > 8)
    assert "–" in blended  # not computed yet
    assert "| **Average** | " in md


def test_report_config_selects_grid_in_shared_dir(tmp_path):
    # two grids benched into one directory: the manifest names the last one, --config either
    main = cfg_of(seeds=[0], attacks=["badnets", "blended"], defenses=["none", "d3"])
    other = cfg_of(seeds=[0], name="other", attacks=["badnets"], defenses=["none", "ft"])
    for cfg in (main, other):
        grid, cache = prepare(cfg, str(tmp_path))
        execute(grid, cache, cell_fn=FakeCells(), progress=False)
    last = build_report(tmp_path)
    assert last.name == "other" and (last.done, last.total) == (2, 2)
    chosen = build_report(tmp_path, main)
    assert chosen.name == main.name and (chosen.done, chosen.total) == (4, 4)
    md = render(chosen, "markdown")
    assert "D3 ASR" in md and "FT ASR" not in md and "| Blended |" in md

    from typer.testing import CliRunner

    from distox.cli import app

    path = tmp_path / "main.yaml"
    path.write_text(yaml.safe_dump(main.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["report", str(tmp_path), "--config", str(path), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["name"] == main.name


def test_report_clean_model_column(tmp_path):
    # attack cells with clean_reference carry the clean model's ACC and its ASR on the attack's
    # triggers (distox.experiment.score_clean_model): the report shows them first, without DER
    def cells_with_clean(cell, cells_root, options):
        out = FakeCells()(cell, cells_root, options)
        if cell.kind == "attack":
            assert cell.config["clean_reference"] is True
            out.update(clean_acc=91.0, clean_asr=4.0 if cell.config["attack"] == "blended" else 1.0, clean_ra=80.0)
        return out

    cfg = cfg_of(seeds=[0], attacks=["badnets", "blended"], defenses=["none", "d3"],
                 attack_settings={"epochs": 1, "batch_size": 64, "clean_reference": True})
    grid, cache = prepare(cfg, str(tmp_path))
    execute(grid, cache, cell_fn=cells_with_clean, progress=False)
    rep = build_report(tmp_path)
    t = rep.tables[0]
    assert t.columns == ["clean", "none", "d3"]
    assert (t.entries["blended"]["clean"].acc, t.entries["blended"]["clean"].asr) == (91.0, 4.0)
    assert t.entries["Average"]["clean"].asr == 2.5 and t.entries["Average"]["clean"].der is None
    md = render(rep, "markdown")
    assert "| Attack | Clean model ACC | Clean model ASR | No defense ACC |" in md
    assert "Clean model DER" not in md and "| D3 DER |" in md
    js = json.loads(render(rep, "json"))
    assert js["tables"][0]["rows"][1]["cells"]["Clean model"]["asr"] == 4.0
    assert "der" not in js["tables"][0]["rows"][1]["cells"]["Clean model"]
    # without clean_reference there is no such column
    plain = cfg_of(seeds=[0], name="plain", attacks=["badnets"], defenses=["none", "d3"])
    grid, cache = prepare(plain, str(tmp_path / "plain"))
    execute(grid, cache, cell_fn=FakeCells(), progress=False)
    assert build_report(tmp_path / "plain").tables[0].columns == ["none", "d3"]


def test_report_rejects_non_bench_dir(tmp_path):
    with pytest.raises(BenchError, match="not a bench directory"):
        build_report(tmp_path)


# ---------------------------------------------------------------------------- end to end (real runs)
def _e2e_config():
    d = yaml.safe_load(resolve_config("smoke").read_text())
    d["attack_settings"]["epochs"] = 1
    d["defense_settings"]["epochs"] = 1
    d["attacks"] = ["badnets"]
    return parse_config(d)


@pytest.fixture(scope="module")
def e2e_runs(tmp_path_factory):
    """The smoke grid (1 attack × FT, D3; 1 epoch) run twice with the real experiment functions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outs = []
        for name in ("a", "b"):
            out = tmp_path_factory.mktemp(f"e2e_{name}")
            grid, cache = prepare(_e2e_config(), str(out))
            summary = execute(grid, cache, options=RunOptions(device="cpu", threads=1), progress=False)
            assert summary.ok and len(summary.computed) == 3, summary
            outs.append(out)
    finally:
        torch.set_num_threads(threads)
    return outs


def test_e2e_identical_tables_and_zero_recompute(e2e_runs):
    a, b = e2e_runs
    def metrics_md(out):  # the markdown report up to its cost table (wall times differ between runs)
        md = render(build_report(out), "markdown")
        assert "Wall seconds per defense cell" in md
        return md[:md.index("Wall seconds per defense cell")]

    assert metrics_md(a) == metrics_md(b)
    assert render(build_report(a), "csv") == render(build_report(b), "csv")

    def numbers(out):  # the JSON report minus wall times
        js = json.loads(render(build_report(out), "json"))
        for t in js["tables"]:
            for r in t["rows"]:
                for c in r["cells"].values():
                    c.pop("seconds"), c.pop("cpu_seconds")
        return js

    assert numbers(a) == numbers(b)
    grid, cache = prepare(_e2e_config(), str(a))
    summary = execute(grid, cache, options=RunOptions(device="cpu", threads=1), progress=False)
    assert summary.computed == [] and len(summary.cached) == 3
    attack = grid.attacks[0]
    assert (cache.cell_dir(attack.key) / "model.safetensors").is_file()
    assert all(cache.load(c.key)["cpu_seconds"] > 0 and cache.load(c.key)["seconds"] > 0 for c in grid.cells)
    rec = json.loads((cache.cell_dir(grid.defenses[0].key) / "defense.json").read_text())
    assert rec["after"]["acc"] == cache.load(grid.defenses[0].key)["result"]["acc"]


def test_shared_clean_cell_gives_the_per_attack_floor(tmp_path):
    """Attack cells score the shared clean cell's model on their own triggers: the floor of a
    per-attack clean reference (run_attack with clean_reference=True), with one clean model."""
    from distox.experiment import AttackSpec, run_attack

    d = _e2e_config().model_dump(mode="json")
    d["attacks"] = ["badnets", {"name": "blended", "options": {"alpha": 0.2}}]
    d["defenses"] = []
    d["attack_settings"]["clean_reference"] = True
    grid, cache = prepare(parse_config(d), str(tmp_path / "bench"))
    assert len(grid.cleans) == 1 and len(grid) == 3
    summary = execute(grid, cache, options=RunOptions(device="cpu"), progress=False)
    assert summary.ok and summary.computed[0] == grid.cleans[0].key
    clean_dir = cache.cell_dir(grid.cleans[0].key)
    # the clean cell's config is run_clean's spec (both are experiment.clean_recipe)
    spec = json.loads((clean_dir / "spec.json").read_text())
    assert {k: v for k, v in spec.items() if k != "data_root"} == grid.cleans[0].config
    blended = next(a for a in grid.attacks if a.row == "blended")
    assert not (cache.cell_dir(blended.key) / "clean").exists()
    shared = cache.load(blended.key)["result"]
    own = run_attack(AttackSpec.from_dict(blended.config), tmp_path / "own", device="cpu", progress=False)
    assert {k: shared[k] for k in own} == own  # acc, asr, ra and clean_acc, clean_asr, clean_ra
    assert set(own) >= {"clean_acc", "clean_asr", "clean_ra"}
    assert (tmp_path / "own" / "clean" / "model.safetensors").read_bytes() == (clean_dir / "model.safetensors").read_bytes()


def test_ray_executor_matches_local(e2e_runs, tmp_path):
    import ray  # noqa: F401  (dev extra)

    local = e2e_runs[0]
    grid, cache = prepare(_e2e_config(), str(tmp_path))
    summary = execute(grid, cache, executor="ray", options=RunOptions(device="cpu", threads=1), progress=False,
                      ray_init={"num_cpus": 1})
    assert summary.ok and len(summary.computed) == len(grid) == 3
    ref = Cache(local)
    for c in grid.cells:
        assert cache.load(c.key)["result"] == ref.load(c.key)["result"]
        mine = (cache.cell_dir(c.key) / "model.safetensors").read_bytes()
        assert mine == (ref.cell_dir(c.key) / "model.safetensors").read_bytes()


def test_a_cell_finished_by_an_interrupted_run_records_what_it_cost(tmp_path):
    """A defense that an earlier, interrupted grid run finished (its defense.json is there, the
    cell.json is not) is picked up in no time; the cell records the defense's own seconds, so the
    report's cost table does not show it as free."""
    from distox.bench.executors import SPENT, run_one

    cell = expand(cfg_of(seeds=[0])).defenses[0]

    def finished_earlier(cell, cells_root, options):
        return {"acc": 80.0, "asr": 1.0, "ra": 50.0, SPENT: 123.4}

    key, result, seconds = run_one(finished_earlier, cell, str(tmp_path), RunOptions())
    assert seconds == 123.4 and SPENT not in result
    rec = json.loads((tmp_path / "cells" / key / CELL_RECORD).read_text())
    assert rec["seconds"] == 123.4 and rec["result"] == {"acc": 80.0, "asr": 1.0, "ra": 50.0}


def test_report_has_a_cost_table_relative_to_ft(tmp_path):
    from distox.bench.executors import SPENT

    def timed(cell, cells_root, options):  # FT cells "took" 10 s, every other defense 25 s
        res = fake_cell(cell, cells_root, options)
        if cell.kind == "defense":
            res[SPENT] = 10.0 if cell.column == "ft" else 25.0
        return res

    cfg = cfg_of(seeds=[0])
    grid, cache = prepare(cfg, str(tmp_path))
    execute(grid, cache, cell_fn=timed, progress=False)
    text = render(build_report(tmp_path, cfg), "markdown")
    lines = text[text.index("Wall seconds per defense cell"):].splitlines()
    assert "| BadNets | 10.0 | 25.0 | 25.0 |" in lines
    assert "| **Mean** | 10.0 | 25.0 | 25.0 |" in lines
    assert "| **× FT** | 1.00 | 2.50 | 2.50 |" in lines
    assert any(line.startswith("| **× FT (CPU s)** |") for line in lines)  # fake cells: ~0 CPU s


def test_defense_cell_warns_by_its_attack_cells_floor(tmp_path):
    """A bench attack cell scores the shared clean model in its own record, not in the run
    directory's metrics.json; its defense cells still judge the backdoor by that floor."""
    from distox.bench.summary import asr_floor

    d = _e2e_config().model_dump(mode="json")
    d["defenses"] = ["ft"]
    d["attack_settings"]["clean_reference"] = True
    grid, cache = prepare(parse_config(d), str(tmp_path / "bench"))
    summary = execute(grid, cache, options=RunOptions(device="cpu", threads=1), progress=False)
    assert summary.ok, summary
    attack, defense = grid.attacks[0], grid.defenses[0]
    assert "clean_asr" not in json.loads((cache.cell_dir(attack.key) / "metrics.json").read_text())
    clean_asr = cache.load(attack.key)["result"]["clean_asr"]
    rec = json.loads((cache.cell_dir(defense.key) / "defense.json").read_text())
    assert rec["asr_bar"] == {"percent": round(asr_floor(clean_asr), 2), "source": "floor"}
    if rec["after"]["asr"] > rec["asr_bar"]["percent"]:
        assert f"above the floor of {asr_floor(clean_asr):.2f}%" in rec["backdoor_warning"]
    else:
        assert rec["backdoor_warning"] is None
