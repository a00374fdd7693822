"""``distox purify``: purify a suspect model of your own architecture from files.

Example::

    distox purify --model torchvision.models:resnet18 --weights suspect.safetensors \\
        --data clean_images/ --normalize imagenet --out purified.safetensors
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import DistoxError
from ..guidance import DEFAULT_TOLERANCE
from .app import SPEED_OPTIONS, app, friendly_errors, parse_params, speed_params


@app.command()
@friendly_errors
def purify(
    model: str = typer.Option(..., "--model", help="Model factory: 'package.module:factory' or 'path/to/file.py:factory'."),
    weights: Path = typer.Option(..., "--weights", help="Suspect weights: .safetensors, or a .pt/.pth state dict."),
    data: str = typer.Option(..., "--data", help="Clean images: a folder with one sub-folder per class, or a dataset name (e.g. digits)."),
    classes: str | None = typer.Option(None, "--classes", help="Label order of the class folders: 'a,b,c' (label i = i-th name) or a JSON file with such a list or a {name: label} object. Default: numeric folder names are the label; other names sorted."),
    num_classes: int | None = typer.Option(None, "--num-classes", help="Passed to the factory as num_classes= (default: classes found in --data)."),
    method: str = typer.Option("d3", "--method", help="Defense to run (`distox methods`: the defenses and their parameters)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Defense epochs (default: the method's; for D3's default preset 12, or enough for 600 optimiser steps on fewer than about 1,600 images)."),
    param: list[str] | None = typer.Option(None, "--param", "-p", metavar="KEY=VALUE", help="Defense hyper-parameter, repeatable (e.g. lmd=10, eps=auto, batch_size=64; `distox methods d3` lists them)."),
    model_kwarg: list[str] | None = typer.Option(None, "--model-kwarg", metavar="KEY=VALUE", help="Extra factory argument, repeatable."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the clean images held out (stratified, seeded) to measure accuracy."),
    tolerance: float = typer.Option(DEFAULT_TOLERANCE, "--tolerance", help="Warn when validation accuracy falls by more than this many points."),
    label_check: str = typer.Option("error", "--label-check", help="Labels the suspect model does not share (near-chance accuracy, swapped classes): error (refuse), warn (purify anyway) or off (no check)."),
    normalize: str = typer.Option("none", "--normalize", help="Input normalisation the model expects: none (images in [0,1]), imagenet, or mean,std."),
    image_size: int | None = typer.Option(None, "--image-size", help="Resize folder images to this side."),
    grayscale: bool | None = typer.Option(None, "--grayscale/--rgb", help="Force 1 or 3 channels for folder images (default: as found)."),
    limit: int | None = typer.Option(None, "--limit", help="Use at most this many clean images (seeded subset)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a .pt file holding pickled Python objects (can execute code!)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Purified weights (.safetensors); a .json report is written beside. Default: <weights>.purified.safetensors"),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the defense."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    eval_every: int | None = typer.Option(None, "--eval-every", min=1, help="Also measure validation accuracy every "
                                          "N epochs into the report's history (default: before and after only)."),
    precision: str = SPEED_OPTIONS["precision"],
    channels_last: bool = SPEED_OPTIONS["channels_last"],
    compile: bool = SPEED_OPTIONS["compile"],
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no warnings; errors only."),
) -> None:
    """Purify a suspect model: import its factory, load its weights, hold out a validation split
    of the clean images, run D3 (or --method), report accuracy before/after and the distance
    travelled, and write the purified weights (safetensors) plus a JSON report.

    The folder→label mapping is printed and saved in the report; when the suspect model scores
    near chance on the clean images (or assigns most classes to other labels) nothing is run:
    fix the labels (--classes) or the preprocessing, or pass --label-check warn to purify
    anyway. Every epoch is checkpointed beside --out;
    after an interruption, rerun the same command to resume.

    Images are fed to the model in [0, 1]; models trained on normalised inputs (torchvision/timm ImageNet models) need --normalize imagenet or --normalize mean,std. The saved weights are those of your own architecture either way.
    """
    from ..practitioner import purify_files

    if out is None:
        out = weights.with_name(weights.stem + ".purified.safetensors")
    if out.suffix != ".safetensors":
        raise DistoxError(f"--out must end in .safetensors; got {out}")
    report = purify_files(
        model, weights, data, num_classes=num_classes, method=method, epochs=epochs,
        params=speed_params(parse_params(param), precision, channels_last, compile),
        model_kwargs=parse_params(model_kwarg, "--model-kwarg"), eval_every=eval_every,
        val_fraction=val_fraction, tolerance=tolerance, label_check=label_check, trust_pickle=trust_pickle, normalize=normalize,
        image_size=image_size, grayscale=grayscale, limit=limit, out=out, seed=seed, device=device,
        progress=not quiet and not json_out, classes=classes,
    )
    if json_out:
        d = report.to_dict()
        d.pop("history", None)
        typer.echo(json.dumps(d, indent=2, default=str))
    else:
        typer.echo(report.text())
