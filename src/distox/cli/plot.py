"""``distox plot KIND RUN_DIR``: the paper's analyses (SPEC §6) as PNG + CSV."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app, friendly_errors


@app.command()
@friendly_errors
def plot(
    kind: str = typer.Argument(..., metavar="KIND", help="path | weights | tsne | curves"),
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="An attack run directory with defense results under defense/*."),
    out: Path | None = typer.Option(None, "--out", "-o", help="PNG file (default RUN_DIR/plots/KIND.png); the numbers go to the .csv beside it."),
    defense: list[str] | None = typer.Option(None, "--defense", "-d", help="Defense result(s) to include, repeatable (default: all; weights: ft and d3)."),
    layer: str = typer.Option("auto", "--layer", help="weights: layer name or glob (default: the final classifier)."),
    points: int = typer.Option(1000, "--points", help="tsne: at most this many points (half clean, half poisoned)."),
    steps: int = typer.Option(21, "--steps", help="path: number of t values in [0, 2]."),
    seed: int = typer.Option(0, "--seed", help="Seed of subsamples and t-SNE."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Plot an analysis of RUN_DIR: `path` (clean/backdoor loss along θ_init + t(θ_def − θ_init),
    t ∈ [0, 2]), `weights` (histogram of θ_def − θ_init, FT vs D3), `tsne` (penultimate features,
    clean vs poisoned, before/after), `curves` (ACC/ASR per defense epoch)."""
    from ..analysis import plot_run

    png, csv = plot_run(kind, run_dir, out, defenses=defense or None, layer=layer, points=points, steps=steps,
                        seed=seed, device=device, progress=True)
    typer.echo(f"wrote {png} and {csv}")
