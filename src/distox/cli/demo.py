"""``distox demo``: the 60-second BadNets → D3 demo on the embedded digits data."""
from __future__ import annotations

import json

import typer

from ..demo import DemoConfig, run_demo
from ..metrics import round_metrics
from .app import app, friendly_errors


@app.command()
@friendly_errors
def demo(
    seed: int = typer.Option(0, help="Seed of every random choice."),
    preset: str = typer.Option("default", help="D3 preset: default, soft, copies, all-layers, reference or paper."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no warnings; errors only."),
) -> None:
    """Train a backdoored small CNN on digits, purify it with D3 and FT, print before/after."""
    from ..defenses.d3 import PRESETS

    if preset not in PRESETS:
        raise typer.BadParameter(f"preset must be one of {', '.join(sorted(PRESETS))}; got {preset!r}")
    cfg = DemoConfig(seed=seed, preset=preset)
    if not json_out:
        typer.echo(f"distox demo: digits, small CNN, {cfg.attack} ({cfg.poison_rate:.0%} poison, target "
                   f"{cfg.target}); D3 ({cfg.preset} preset) vs FT on a {cfg.retain_ratio:.0%} retain set")
    report = run_demo(cfg, progress=not quiet and not json_out)
    if json_out:
        typer.echo(json.dumps(round_metrics({"rows": report.rows, "retain_size": report.retain_size,
                                             "seconds": report.seconds}), indent=2))
        return
    typer.echo(f"retain set: {report.retain_size} clean images")
    typer.echo(report.table())
    typer.echo(f"total {report.seconds:.1f}s  (ACC/ASR/RA/DER in %, DER vs no defense)")
