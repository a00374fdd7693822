"""`distox attack`, `distox evaluate` and `distox defend` through Typer's CliRunner: outputs,
files, and one clear error (exit code 2, no traceback) for each kind of bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distox.cli import app
from distox.cli.attack import ParamError, parse_params
from distox.runs import FORMAT_VERSION

from . import test_experiment  # noqa: F401  (registers the tiny synthetic datasets)
from .test_experiment import DATASET

runner = CliRunner()

ATTACK = ["attack", "badnets", "--dataset", DATASET, "--epochs", "2", "--train-subset", "120", "--test-subset",
          "60", "--poison-rate", "0.2", "--width", "4", "--batch-size", "32", "--lr", "0.05", "--seed", "1",
          "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTOX_CACHE", str(tmp_path / "cache"))


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *fragments: str) -> None:
    """Exit code 2, one `error:` message naming every fragment, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    text = result.stderr
    assert text.startswith("error: ") and "Traceback" not in result.output, text
    for frag in fragments:
        assert frag in text, (frag, text)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cli") / "badnets"
    result = runner.invoke(app, ATTACK + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def copy_run(cli_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(cli_run[0], dst)
    return dst


# ---------------------------------------------------------------------------- --param parsing
def test_param_values_are_json_when_possible():
    assert parse_params(["alpha=0.2", "n=3", "flag=true", "sizes=[1, 2]", "name=paper", "empty=",
                         "layers=all-linear", "cfg={\"a\": 1}", "none=null"]) == {
        "alpha": 0.2, "n": 3, "flag": True, "sizes": [1, 2], "name": "paper", "empty": "",
        "layers": "all-linear", "cfg": {"a": 1}, "none": None}
    assert parse_params(["grid-rescale=1"]) == {"grid_rescale": 1}
    assert parse_params(None) == {}
    with pytest.raises(ParamError, match="key=value"):
        parse_params(["alpha"])


# ---------------------------------------------------------------------------- attack / evaluate
def test_attack_prints_metrics_and_evaluate_reproduces_them(cli_run):
    out, printed = cli_run
    assert printed == json.loads((out / "metrics.json").read_text())
    assert set(printed) == {"acc", "asr", "ra"}
    rec = json.loads((out / "attack.json").read_text())
    assert rec["spec"]["model_kwargs"] == {"width": 4} and rec["spec"]["train_subset"] == 120
    result = invoke("evaluate", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == printed


def test_attack_params_reach_the_attack(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ATTACK[:4] + ["--epochs", "1", "--train-subset", "60", "--test-subset", "20",
                                              "--width", "4", "--device", "cpu", "-q", "--param", "patch=2",
                                              "--param", "value=0.5", "--model-kwarg", "norm=none",
                                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "attack.json").read_text())["attack"]["patch"] == 2
    assert json.loads((out / "attack.json").read_text())["spec"]["model_kwargs"] == {"norm": "none", "width": 4}
    assert json.loads((out / "attack.json").read_text())["attack"]["value"] == 0.5


@pytest.mark.parametrize("extra, fragments", [
    (["--target", "9"], ["target label 9 is outside the dataset's classes 0..3"]),
    (["--poison-rate", "1.5"], ["poison rate must be in (0, 1]"]),
    (["--poison-rate", "0"], ["poison rate must be in (0, 1]"]),
    (["--dataset", "synthetic-3px", "--train-subset", "10"], ["needs images of at least 4×4", "3×3"]),
    (["--param", "colour=1"], ["no parameter(s) colour"]),
    (["--param", "patch"], ["--param expects key=value"]),
    (["--mode", "one2one"], ["mode must be 'all2one' or 'all2all'"]),
    (["--model", "resnet9000"], ["unknown model 'resnet9000'"]),
    (["--model-kwarg", "norm=layer"], ["norm must be one of ('batch', 'group', 'none')"]),
    (["--model-kwarg", "depth=3"], ["unknown option(s) depth for model 'small_cnn'"]),
])
def test_attack_bad_input_is_one_clear_error(tmp_path, extra, fragments):
    result = invoke(*ATTACK, *extra, "--out", tmp_path / "bad")
    assert_clean_error(result, *fragments)
    assert not (tmp_path / "bad").exists()


def test_unknown_attack_lists_the_valid_ones(tmp_path):
    from distox import attacks

    result = invoke("attack", "nonsense", "--out", tmp_path / "x")
    assert_clean_error(result, "unknown attack 'nonsense'", "Valid attacks:", *attacks.list())


def test_evaluate_errors(tmp_path):
    assert_clean_error(invoke("evaluate", tmp_path / "missing"), "run directory not found")
    assert_clean_error(invoke("evaluate", tmp_path), "attack.json is missing")


# ---------------------------------------------------------------------------- defend
def test_defend_writes_results_prints_summary_and_refuses_overwrite(cli_run, tmp_path):
    run = copy_run(cli_run, tmp_path)
    args = ["defend", "ft", run, "--count", "24", "--epochs", "2", "--batch-size", "8", "--seed", "5",
            "--device", "cpu", "-q"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert "\n" not in line and line.startswith("ft: ACC ") and "→" in line and "DER" in line and "ASR" in line
    rec = json.loads((run / "defense" / "ft" / "defense.json").read_text())
    assert rec["retain"]["size"] == 24 and rec["retain"]["seed"] == 5 and rec["config"]["epochs"] == 2
    assert f"ACC {rec['before']['acc']:.2f}→{rec['after']['acc']:.2f}" in line
    assert (run / "defense" / "ft" / "model.safetensors").exists()
    assert (run / "defense" / "ft" / "history.csv").read_text().splitlines()[0].split(",")[:2] == ["epoch", "lr"]

    again = invoke(*args, "--json")  # the same arguments: the finished result, not an error
    assert again.exit_code == 0, again.output
    shown = json.loads(again.stdout)
    assert shown["retain"]["size"] == 24 and "indices" not in shown["retain"]
    assert shown["after"] == rec["after"] and shown["seconds"] == rec["seconds"]
    assert_clean_error(invoke(*args[:5], "--epochs", "3", *args[7:]), "differs in: epochs", "--force")


def test_defend_params_and_custom_out(cli_run, tmp_path):
    run = copy_run(cli_run, tmp_path)
    out = tmp_path / "elsewhere"
    result = invoke("defend", "d3", run, "--ratio", "0.2", "--epochs", "1", "--param", "lmd=10", "--param",
                    "init=far", "--out", out, "--device", "cpu", "-q", "--no-track")
    assert result.exit_code == 0, result.output
    rec = json.loads((out / "defense.json").read_text())
    assert rec["config"]["lmd"] == 10.0 and rec["config"]["init"] == "far"
    assert rec["retain"]["size"] == 24 and rec["spec"]["ratio"] == 0.2
    assert not (run / "defense").exists()


def test_defend_bad_input_is_one_clear_error(cli_run, tmp_path, monkeypatch):
    run = copy_run(cli_run, tmp_path)
    assert_clean_error(invoke("defend", "ft", run, "--ratio", "0.1", "--count", "5"), "either --ratio or --count")
    assert_clean_error(invoke("defend", "nope", run), "unknown defense 'nope'", "Valid defenses:", "d3", "ft")
    assert_clean_error(invoke("defend", "ft", tmp_path / "missing"), "run directory not found")

    (run / "model.safetensors").rename(run / "moved.safetensors")
    assert_clean_error(invoke("defend", "ft", run, "--device", "cpu"), "no model.safetensors")
    (run / "moved.safetensors").rename(run / "model.safetensors")

    record = json.loads((run / "attack.json").read_text())
    (run / "attack.json").unlink()
    assert_clean_error(invoke("defend", "ft", run, "--device", "cpu"), "attack.json is missing")

    (run / "attack.json").write_text(json.dumps({**record, "format_version": FORMAT_VERSION + 1}))
    assert_clean_error(invoke("defend", "ft", run, "--device", "cpu"), f"format_version {FORMAT_VERSION + 1}",
                       "upgrade distox")

    import distox.data.paths as paths

    monkeypatch.setattr(paths, "SYSTEM_ROOTS", {})
    monkeypatch.delenv("DISTOX_DATA", raising=False)
    record["spec"].update(dataset="fashion-mnist", data_root=str(tmp_path / "no-data"))
    (run / "attack.json").write_text(json.dumps(record))
    assert_clean_error(invoke("defend", "ft", run, "--device", "cpu"), "dataset 'fashion-mnist' not found",
                       "How to get it")
    assert not (run / "defense").exists()


def test_grouped_options_of_the_benchmark_scripts():
    from distox.cli.app import parse_grouped

    assert parse_grouped(["sau.lr=1e-3", "lf.linf=0.1", "sau.clip=false", "d3.layers=[fc, layer4.*]"]) == {
        "sau": {"lr": 0.001, "clip": False}, "lf": {"linf": 0.1}, "d3": {"layers": ["fc", "layer4.*"]}}
    with pytest.raises(ParamError, match="NAME.KEY=VALUE"):
        parse_grouped(["lr=0.1"])
