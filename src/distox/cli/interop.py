"""``distox import-backdoorbench`` / ``distox export-backdoorbench``: BackdoorBench records in
and out (see :mod:`distox.interop.backdoorbench`)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import app, friendly_errors
from .app import parse_params


@app.command("import-backdoorbench")
@friendly_errors
def import_backdoorbench(
    record_dir: Path = typer.Argument(..., metavar="RECORD_DIR", help="BackdoorBench record folder (attack_result.pt + bd_test_dataset/)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Required: attack_result.pt is a pickle, which can execute code when loaded."),
    out: Path | None = typer.Option(None, "--out", "-o", help="distox run directory to write (default RECORD_DIR/distox)."),
    model: str | None = typer.Option(None, "--model", help="distox model name overriding the record's model_name."),
    model_kwarg: list[str] | None = typer.Option(None, "--model-kwarg", metavar="KEY=VALUE", help="Model argument, repeatable (e.g. width=0.5)."),
    dataset: str | None = typer.Option(None, "--dataset", help="distox dataset name overriding the record's clean_data."),
    data_root: str | None = typer.Option(None, "--data-root", help="Where the clean dataset is looked up."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run in --out."),
    device: str = typer.Option("auto", help="auto, cpu or cuda: device for the metrics computed at import."),
) -> None:
    """Convert a BackdoorBench attack_result.pt into a distox run directory, so that
    `distox defend`, `distox evaluate` and `distox bench` work on it. The poisoned test set is
    BackdoorBench's stored PNGs; the clean data come from distox's dataset of the same name."""
    from ..interop.backdoorbench import import_record

    target = out if out is not None else record_dir / "distox"
    metrics = import_record(record_dir, target, trust_pickle=trust_pickle, model=model,
                            model_kwargs=parse_params(model_kwarg, "--model-kwarg"), dataset=dataset,
                            data_root=data_root, device=device, force=force)
    typer.echo(f"imported {record_dir} → {target}: " + json.dumps(metrics))


@app.command("export-backdoorbench")
@friendly_errors
def export_backdoorbench(
    defense_dir: Path = typer.Argument(..., metavar="DEFENSE_DIR", help="A distox defense result: RUN_DIR/defense/METHOD."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write defense_result.pt into."),
) -> None:
    """Write a distox defense result in BackdoorBench's layout (defense_result.pt: model_name,
    num_classes, model state dict, metrics; plain tensors and numbers only)."""
    from ..interop.backdoorbench import export_defense

    typer.echo(f"wrote {export_defense(defense_dir, out)}")
