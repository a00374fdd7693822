"""Output a person and a script can read: plain progress lines off a terminal, ``--version``,
``-v``/``-q`` before or after the command, DER in percent and rounded numbers in every file,
files with the user's umask, ``distox methods``, and one set of option conventions."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import click
import pytest
import torch
import typer
from typer.testing import CliRunner

from distox import __version__
from distox.cli import app
from distox.metrics import der
from distox.progress import PlainProgress, progress_bar, set_progress
from distox.runs import save_tensors, write_json
from distox.training import LoopConfig, _atomic_torch_save, train

from .conftest import make_bundle
from .test_cli_runs import ATTACK, cli_run, copy_run  # noqa: F401  (cli_run: a finished attack run)

runner = CliRunner()
LOUD_ATTACK = [a for a in ATTACK if a != "--quiet"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTOX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _restore_output():
    """A CLI call configures this process's logging and progress; leave them as found."""
    yield
    set_progress(True)
    logger = logging.getLogger("distox")
    logger.setLevel(logging.NOTSET)
    for h in logger.handlers:
        h.setLevel(logging.WARNING)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------- progress
def test_progress_off_a_terminal_is_plain_lines_one_per_epoch(capsys, monkeypatch):
    monkeypatch.setattr("distox.progress.PLAIN_INTERVAL", 0.0)
    b = make_bundle(n_train=32, n_test=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4))
    train(model, b.train.x, b.train.y, LoopConfig(epochs=3, batch_size=16), device="cpu", desc="fit")
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [ln.split()[:3] for ln in lines] == [["fit:", f"{k}/3", "epoch"] for k in (1, 2, 3)]
    assert "loss=" in lines[-1] and "lr=" in lines[-1]


def test_plain_progress_is_rate_limited_but_always_ends_with_the_final_count():
    out = io.StringIO()
    bar = PlainProgress(total=1000, desc="reading", unit="img", interval=3600.0, stream=out)
    for _ in range(10):
        bar.update(100)
    bar.close()
    bar.close()  # idempotent
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("reading: 1000/1000 img ")
    silent = io.StringIO()
    with PlainProgress(total=5, disable=True, stream=silent) as off:
        off.update(5)
    assert silent.getvalue() == ""


def test_progress_switch_silences_every_bar(capsys):
    set_progress(False)
    for _ in progress_bar(range(3), desc="x"):
        pass
    assert capsys.readouterr().err == ""


def test_cli_progress_without_a_terminal_has_no_carriage_returns(tmp_path):
    result = invoke(*LOUD_ATTACK, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr and re.search(r"badnets: 2/2 epoch", result.stderr), result.stderr
    quiet = invoke("-q", *LOUD_ATTACK, "--seed", "2", "--out", tmp_path / "run2")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr


# ---------------------------------------------------------------------------- --version, -v, -q
def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"distox {__version__}"


def test_python_dash_m_distox_is_the_cli():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "distox", "--version"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"distox {__version__}", proc.stderr


class _StopAt:
    """An Evaluator stand-in that raises KeyboardInterrupt when asked about epoch ``stop``."""

    def __init__(self, stop: int) -> None:
        self.stop = stop

    def __call__(self, *args, **kwargs):
        stop = self.stop

        def evaluate(epoch, model):
            if epoch == stop:
                raise KeyboardInterrupt
            return {}
        return evaluate


def test_verbose_shows_the_resume_notice_before_or_after_the_command(tmp_path, monkeypatch):
    import distox.experiment.attack_runner as runner_mod

    out = tmp_path / "run"
    args = [*LOUD_ATTACK, "--epochs", "3", "--track-epochs", "--out", out]
    monkeypatch.setattr(runner_mod, "Evaluator", _StopAt(2))
    assert invoke(*args).exit_code == 130  # interrupted in epoch 2: checkpoint of epoch 1
    monkeypatch.setattr(runner_mod, "Evaluator", _StopAt(3))
    plain = invoke(*args)  # resumes silently, interrupted in epoch 3
    assert plain.exit_code == 130 and "resumed" not in plain.stderr, plain.stderr
    monkeypatch.setattr(runner_mod, "Evaluator", _StopAt(99))
    verbose = invoke(*args, "-v")
    assert verbose.exit_code == 0, verbose.output
    assert re.search(r"INFO distox\.training: .*resumed from .*checkpoint\.pt at epoch 2", verbose.stderr), verbose.stderr
    again = invoke("-v", *args)  # before the command too
    assert "finished run with the same spec" in again.stderr


@pytest.mark.parametrize("where", ["before", "after", "none"])
def test_quiet_silences_warnings_and_log_warnings(tmp_path, monkeypatch, where):
    import distox.experiment as experiment

    def noisy(run_dir, device="auto"):
        logging.getLogger("distox.experiment").warning("a logged warning")
        warnings.warn("a python warning", UserWarning)
        return {"acc": 1.0}

    monkeypatch.setattr(experiment, "evaluate_run", noisy)
    args = {"before": ["-q", "evaluate", tmp_path], "after": ["evaluate", tmp_path, "-q"],
            "none": ["evaluate", tmp_path]}[where]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke(*args)
    assert result.exit_code == 0 and json.loads(result.stdout) == {"acc": 1.0}
    shown = [str(w.message) for w in caught]
    if where == "none":
        assert "a logged warning" in result.stderr and shown == ["a python warning"]
    else:
        assert result.stderr == "" and shown == []


# ---------------------------------------------------------------------------- DER and rounding in files
def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def test_defend_writes_der_in_percent_and_rounded_numbers(cli_run, tmp_path):  # noqa: F811
    run = copy_run(cli_run, tmp_path)
    result = invoke("defend", "ft", run, "--count", "24", "--epochs", "2", "--batch-size", "8", "--device", "cpu",
                    "-q")
    assert result.exit_code == 0, result.output
    rec = json.loads((run / "defense" / "ft" / "defense.json").read_text())
    assert rec["der"] == round(der(rec["before"], rec["after"]), 2) and 0 <= rec["der"] <= 100
    assert f"DER {rec['der']:.2f}" in result.stdout  # the screen and the file agree
    for part in ("before", "after"):
        assert all(_decimals(repr(v)) <= 2 for v in rec[part].values()), rec[part]
    with open(run / "defense" / "ft" / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(_decimals(r[k]) <= 2 for r in rows for k in ("acc", "asr", "ra"))
    assert all(len(r["loss"].replace(".", "").lstrip("0")) <= 6 for r in rows)
    shown = json.loads(invoke("defend", "ft", run, "--out", tmp_path / "d2", "--count", "24", "--epochs", "1",
                              "--device", "cpu", "-q", "--json").stdout)
    assert shown["der"] == round(der(shown["before"], shown["after"]), 2)


def test_summary_line_reads_an_old_record_with_a_fraction_der_in_percent():
    from distox.cli.defend import summary_line

    old = {"method": "d3", "before": {"acc": 90.0, "asr": 100.0, "ra": 0.0},
           "after": {"acc": 88.0, "asr": 2.0, "ra": 80.0}, "der": 0.98, "seconds": 1.0, "retain": {"size": 10}}
    assert "DER 98.00" in summary_line(old)


def test_report_recomputes_der_of_an_old_cached_cell(tmp_path):
    from distox.bench import build_report, execute, prepare, render

    from .test_bench import FakeCells, cfg_of

    cfg = cfg_of(seeds=[0], attacks=["badnets"], defenses=["none", "d3"])
    grid, cache = prepare(cfg, str(tmp_path))
    execute(grid, cache, cell_fn=FakeCells(), progress=False)
    (cell,) = [c for c in grid.defenses if c.column == "d3"]
    path = cache.cells_root / cell.key / "cell.json"
    rec = json.loads(path.read_text())
    atk = cache.load(cell.parent)["result"]
    rec["result"]["der"] = 0.5  # a fraction, as an older distox might have cached it
    path.write_text(json.dumps(rec))
    js = json.loads(render(build_report(tmp_path), "json"))
    badnets = js["tables"][0]["rows"][0]["cells"]["D3"]
    assert badnets["der"] == round(der(atk, rec["result"]), 2) and badnets["der"] > 1


# ---------------------------------------------------------------------------- umask
@pytest.mark.parametrize("mask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_tensors(tmp_path / "w.safetensors", {"w": torch.zeros(2)})
        _atomic_torch_save({"epoch": 1}, tmp_path / "checkpoint.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "w.safetensors", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "checkpoint.pt", "w.safetensors"]


# ---------------------------------------------------------------------------- help and option conventions
def test_methods_lists_names_and_each_methods_parameters():
    overview = invoke("methods")
    assert overview.exit_code == 0 and "imported" not in overview.stdout
    assert all(n in overview.stdout for n in ("badnets", "wanet", "d3", "ft-sam", "sau"))
    d3 = invoke("methods", "d3")
    assert d3.exit_code == 0, d3.output
    params = dict(re.findall(r"^  (\w+)\s+(\S+)", d3.stdout, re.M))
    from distox.defenses import D3

    assert params["lmd"] == json.dumps(D3().lmd) and params["preset"] == '"default"'
    assert params["epochs"] == str(D3().epochs) and "--epochs" in d3.stdout
    assert "patch" in invoke("methods", "badnets").stdout
    bad = invoke("methods", "nonsense")
    assert bad.exit_code == 2 and "unknown attack or defense 'nonsense'" in bad.stderr


def _commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}  # type: ignore[arg-type]


def test_option_conventions_are_the_same_in_every_command():
    shorts = {"--out": "-o", "--param": "-p", "--quiet": "-q", "--verbose": "-v"}
    for name, cmd in _commands().items():
        for opt in cmd.params:
            if not isinstance(opt, click.Option):
                continue
            for long, short in shorts.items():
                if long in opt.opts:
                    assert short in opt.opts, (name, long)
            if "--device" in opt.opts:
                assert opt.default == "auto", name
        assert {"--quiet", "--verbose"} <= {o for p in cmd.params for o in p.opts}, name


def test_help_shows_flags_without_a_type_and_hides_the_imported_attack():
    for name in _commands():
        text = invoke(name, "--help").stdout
        assert "<bool>" not in text, name
    assert "imported" not in invoke("attack", "--help").stdout
    assert "distox methods" in " ".join(invoke("defend", "--help").stdout.split())  # however the help wraps


def test_bench_and_report_help_keep_their_own_short_options(tmp_path):
    cmds = _commands()
    assert "-j" in next(p for p in cmds["bench"].params if "--jobs" in p.opts).opts
    assert "-o" in next(p for p in cmds["report"].params if "--output" in p.opts).opts

