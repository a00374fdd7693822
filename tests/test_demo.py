"""The README's demo: D3 removes the backdoor on digits; FT reported alongside."""
from __future__ import annotations

from typer.testing import CliRunner

from distox.cli import app
from distox.demo import DemoConfig, run_demo


def test_demo_d3_removes_backdoor_and_keeps_accuracy():
    report = run_demo(DemoConfig(), progress=False)
    none, ft, d3 = report.row("no defense"), report.row("ft"), report.row("d3")
    assert none["asr"] > 80, "the demo attack must implant a working backdoor"
    assert d3["asr"] < 5.0
    assert d3["acc"] >= none["acc"] - 5.0
    assert ft["asr"] > d3["asr"]  # contrast: plain fine-tuning with the same budget
    assert report.retain_size >= 64


def test_demo_cli_prints_a_table():
    result = CliRunner().invoke(app, ["demo", "--quiet", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "no defense" in result.output and "d3" in result.output and "ASR" in result.output


def test_demo_cli_runs_the_preset_it_is_given_and_refuses_unknown_ones(monkeypatch):
    import distox.cli.demo as cli_demo
    from distox.demo import DemoReport

    seen = []
    monkeypatch.setattr(cli_demo, "run_demo", lambda cfg, progress: seen.append(cfg.preset) or DemoReport())
    result = CliRunner().invoke(app, ["demo", "--quiet", "--preset", "paper", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == ["paper"] and DemoConfig().preset == "default"
    bad = CliRunner().invoke(app, ["demo", "--preset", "strong"])
    assert bad.exit_code != 0 and "preset must be one of" in bad.output
