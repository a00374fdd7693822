"""``distox bench CONFIG.yaml`` (run a resumable grid) and ``distox report DIR`` (its table)."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from ..bench import FORMATS, Cache, RunOptions, build_report, execute, expand, load_config, prepare, render
from ..bench.config import BenchError
from ..bench.executors import EXECUTORS
from .app import app, friendly_errors


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@app.command()
@friendly_errors
def bench(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Grid YAML file, or the name of a shipped grid (smoke, cpu, paper, ...)."),
    executor: str = typer.Option("local", help=f"Where cells run: {' | '.join(EXECUTORS)}."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Local worker processes (1: sequential, in-process); ray: CPUs of a local instance."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Bench directory (default runs/<config name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and which are done; run nothing."),
    device: str = typer.Option("auto", help="auto | cpu | cuda (per cell)."),
    threads: int | None = typer.Option(None, help="Torch CPU threads per cell (default: torch's; with --jobs N: cores/N)."),
    data_root: str | None = typer.Option(None, help="Dataset directory (default: the config's, then standard places)."),
    gpus_per_task: float = typer.Option(0.0, help="Ray: GPUs per cell task."),
    cpus_per_task: float = typer.Option(1.0, help="Ray: CPUs per cell task."),
    ray_address: str | None = typer.Option(None, help="Ray: address of a running cluster (default: start a local one)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed cell."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no table at the end, no warnings."),
) -> None:
    """Run every missing cell of a grid (attacks, then each defense on them), caching each cell
    under a hash of its config: rerunning computes only what is missing."""
    cfg = load_config(config)  # validated before anything runs
    out = out or Path("runs") / config.stem
    if dry_run:
        grid, cache = expand(cfg), Cache(out)
        done = 0
        for c in grid.cells:
            state = "done" if cache.is_done(c) else "pending"
            done += state == "done"
            typer.echo(f"{state:<8}{c.kind:<8}{c.key}  {c.group} | {c.row} | {c.column} | seed {c.seed}")
        cleans = f", {len(grid.cleans)} clean" if grid.cleans else ""
        typer.echo(f"{len(grid)} cells ({len(grid.attacks)} attack, {len(grid.defenses)} defense{cleans}): "
                   f"{done} done, {len(grid) - done} to compute; out {out}")
        return
    options = RunOptions(device=device, data_root=data_root or cfg.data_root, threads=threads)
    with Cache(out).exclusive():
        grid, cache = prepare(cfg, str(out))
        t0 = time.perf_counter()
        summary = execute(grid, cache, executor=executor, jobs=jobs, options=options, fail_fast=fail_fast,
                          progress=not quiet, num_gpus=gpus_per_task, num_cpus=cpus_per_task,
                          ray_address=ray_address)
    wall = time.perf_counter() - t0
    typer.echo(f"{len(summary.computed)} cell(s) computed, {len(summary.cached)} already done, "
               f"{len(summary.failed)} failed, {len(summary.skipped)} skipped; {_duration(wall)}; out {out}",
               err=True)
    for key, msg in summary.failed.items():
        typer.echo(f"failed {key}: {msg}", err=True)
    if not quiet:
        typer.echo(render(build_report(out), "markdown"))
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def report(
    directory: Path = typer.Argument(..., metavar="DIR", help="A bench directory (distox bench --out DIR)."),
    fmt: str = typer.Option("markdown", "--format", "-f", help=f"{' | '.join(FORMATS)}."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    config: Path | None = typer.Option(None, "--config", "-c",
                                       help="Report this config's grid, a file or a shipped grid's name (default: the grid last benched into DIR)."),
) -> None:
    """The grid's table in the paper's layout: ACC/ASR per attack and defense, Average, DER."""
    if fmt not in FORMATS:
        raise BenchError(f"unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    cfg = load_config(config) if config is not None else None
    text = render(build_report(directory, cfg), fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
