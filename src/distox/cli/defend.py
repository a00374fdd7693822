"""``distox defend METHOD RUN_DIR``: purify an attack run's model with a defense, score it
(ACC/ASR/RA before → after, DER; SPEC §2, §4) and write defense.json, model.safetensors and
history.csv (default ``RUN_DIR/defense/METHOD/``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..defenses.base import DefenseError
from ..metrics import der, round_value
from .app import SPEED_OPTIONS, app, friendly_errors, parse_params, speed_params


def defense_names() -> list[str]:
    from .. import defenses

    return defenses.list()


def summary_line(record: dict[str, Any], out: Path | None = None) -> str:
    """One line: method, ACC/ASR/RA before → after, DER (percent, computed from before/after, so
    that an older record whose "der" is a fraction in [0, 1] reads the same), seconds."""
    b, a = record["before"], record["after"]
    line = (f"{record['method']}: ACC {b['acc']:.2f}→{a['acc']:.2f}  ASR {b['asr']:.2f}→{a['asr']:.2f}  "
            f"RA {b['ra']:.2f}→{a['ra']:.2f}  DER {der(b, a):.2f}  {record['seconds']:.1f}s  "
            f"(retain {record['retain']['size']})")
    return line + (f"  → {out}" if out is not None else "")


@app.command()
@friendly_errors
def defend(
    method: str = typer.Argument(..., metavar="METHOD", help=f"Defense: {', '.join(defense_names())} "
                                                              "(`distox methods METHOD`: its parameters)."),
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="An attack run directory (from `distox attack`)."),
    ratio: Optional[float] = typer.Option(None, help="Retain set = this fraction of the clean training set "
                                                     "(default 0.05)."),
    count: Optional[int] = typer.Option(None, help="Retain set of exactly this many images (instead of --ratio)."),
    epochs: Optional[int] = typer.Option(None, help="Defense epochs (default: the method's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the method's)."),
    seed: int = typer.Option(0, help="Seed of the retain choice and of the defense."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", metavar="KEY=VALUE",
                                              help="Defense parameter (JSON values), repeatable; "
                                                   "`distox methods METHOD` lists them."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default RUN_DIR/defense/METHOD); "
                                       "a finished result of the same arguments is returned, an interrupted one resumed."),
    force: bool = typer.Option(False, "--force", help="Replace a result or interrupted run of other arguments."),
    no_track: bool = typer.Option(False, "--no-track", help="Skip per-epoch ACC/ASR/RA evaluation."),
    eval_every: int = typer.Option(1, "--eval-every", min=1, help="Evaluate ACC/ASR/RA every N epochs (and after "
                                   "the last) into history.csv."),
    precision: str = SPEED_OPTIONS["precision"],
    channels_last: bool = SPEED_OPTIONS["channels_last"],
    compile: bool = SPEED_OPTIONS["compile"],
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print defense.json's metrics as JSON instead."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no warnings; errors only."),
) -> None:
    """Purify RUN_DIR's backdoored model with METHOD on a seeded retain set and print a one-line
    summary (ACC/ASR/RA before→after in %, DER in %, seconds)."""
    from ..experiment import DefenseSpec, run_defense

    if ratio is not None and count is not None:
        raise DefenseError("give either --ratio or --count, not both")
    spec = DefenseSpec(method=method, ratio=0.05 if ratio is None and count is None else ratio, count=count,
                       epochs=epochs, batch_size=batch_size, seed=seed,
                       params=speed_params(parse_params(param), precision, channels_last, compile))
    record = run_defense(run_dir, spec, out, force=force, device=device, progress=not quiet,
                         track_epochs=not no_track, eval_every=eval_every)
    if json_out:
        keys = ("method", "before", "after", "der", "seconds", "retain")
        shown = {k: record[k] for k in keys}
        shown["retain"] = {k: v for k, v in record["retain"].items() if k != "indices"}
        shown["der"] = round_value(der(record["before"], record["after"]), percent=True)  # see summary_line
        typer.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    target = Path(out) if out is not None else Path(run_dir) / "defense" / record["method"]
    typer.echo(summary_line(record, target))
