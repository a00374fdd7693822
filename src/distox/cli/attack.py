"""``distox attack NAME ...`` (train a backdoored model into a run directory) and
``distox evaluate RUN_DIR`` (recompute its ACC/ASR/RA), SPEC §2–3."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from .app import SPEED_OPTIONS, ParamError, app, friendly_errors, parse_params  # noqa: F401 (re-exported)


def attack_names() -> list[str]:
    from .. import attacks

    return attacks.list()


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


@app.command()
@friendly_errors
def attack(
    name: str = typer.Argument(..., metavar="NAME", help=f"Attack name: {', '.join(attack_names())} "
                                                          "(`distox methods NAME`: its parameters)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write (resumed if interrupted)."),
    dataset: str = typer.Option("fashion-mnist", help="Dataset name (fashion-mnist, mnist, digits, ...)."),
    model: str = typer.Option("small_cnn", help="Model architecture (small_cnn, preactresnet18, vgg19_bn, ...)."),
    epochs: int = typer.Option(100, help="Training epochs."),
    train_subset: Optional[int] = typer.Option(None, help="Seeded subset of the training set (default: all)."),
    test_subset: Optional[int] = typer.Option(None, help="Seeded subset of the test set (default: all)."),
    poison_rate: float = typer.Option(0.1, help="Fraction of the training set poisoned, in (0, 1]."),
    target: int = typer.Option(0, help="Target label."),
    mode: str = typer.Option("all2one", help="all2one or all2all."),
    sam_rho: Optional[float] = typer.Option(None, help="Train with SAM of this radius (adaptive attack)."),
    seed: int = typer.Option(0, help="Seed of subsets, poisoning, initialisation and shuffling."),
    batch_size: int = typer.Option(128, help="Training batch size."),
    lr: float = typer.Option(0.01, help="Learning rate (cosine annealed)."),
    optimizer: str = typer.Option("sgd", help="sgd (momentum 0.9) or adam."),
    weight_decay: float = typer.Option(5e-4, help="Weight decay."),
    label_smoothing: float = typer.Option(0.0, help="Train against labels smoothed by this much, in [0, 1)."),
    width: Optional[float] = typer.Option(None, help="Model width (small_cnn/small_vgg base channels; small_vit token width; resnet/vgg multiplier)."),
    model_kwarg: Optional[list[str]] = typer.Option(None, "--model-kwarg", metavar="KEY=VALUE",
                                                     help="Model option (JSON values), repeatable, e.g. "
                                                          "norm=none for small_cnn without BatchNorm."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", metavar="KEY=VALUE",
                                              help="Attack parameter (JSON values), repeatable; "
                                                   "`distox methods NAME` lists them."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Disable random crop (+ flip, CIFAR-10 only)."),
    clean_reference: bool = typer.Option(False, "--clean-reference",
                                         help="Also train a clean model the same way; report its ACC and its ASR/RA on this attack's triggers (clean_acc, clean_asr, clean_ra)."),
    track_epochs: bool = typer.Option(False, "--track-epochs", help="ACC/ASR/RA per epoch in history.csv."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", min=1, help="ACC/ASR/RA every N epochs (and "
                                             "after the last) in history.csv (implies --track-epochs)."),
    precision: str = SPEED_OPTIONS["precision"],
    channels_last: bool = SPEED_OPTIONS["channels_last"],
    compile: bool = SPEED_OPTIONS["compile"],
    data_root: Optional[Path] = typer.Option(None, help="Directory holding the dataset."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace a different run already in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no warnings; errors only."),
) -> None:
    """Train a backdoored model; writes model.safetensors, attack.json, metrics.json to --out
    and prints the metrics (ACC, ASR, RA in %) as JSON."""
    from ..experiment import AttackSpec, run_attack

    model_kwargs: dict[str, Any] = parse_params(model_kwarg, "--model-kwarg")
    if width is not None:
        model_kwargs["width"] = int(width) if float(width).is_integer() else width
    spec = AttackSpec(attack=name, dataset=dataset, model=model, model_kwargs=model_kwargs,
                      attack_kwargs=parse_params(param), epochs=epochs, batch_size=batch_size, lr=lr,
                      train_subset=train_subset, test_subset=test_subset, poison_rate=poison_rate,
                      target=target, mode=mode, sam_rho=sam_rho, augment=not no_augment, seed=seed,
                      data_root=None if data_root is None else str(data_root), clean_reference=clean_reference,
                      precision=precision, channels_last=channels_last, compile=compile,
                      optimizer=optimizer, weight_decay=weight_decay, label_smoothing=label_smoothing)
    metrics = run_attack(spec, out, device=device, progress=not quiet, force=force,
                         track_epochs=track_epochs or eval_every is not None, eval_every=eval_every or 1)
    echo_json(metrics)


@app.command()
@friendly_errors
def evaluate(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="An attack run directory (from `distox attack`) or a defense "
                                             "directory (from `distox defend`)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Recompute ACC, ASR and RA of an attack run's model, or of a defense directory's purified
    model (poisoned test set rebuilt from the attack run's attack.json), and print them as JSON."""
    from ..experiment import DEFENSE_RECORD, evaluate_defense, evaluate_run

    if (run_dir / DEFENSE_RECORD).is_file():
        echo_json(evaluate_defense(run_dir, device=device))
    else:
        echo_json(evaluate_run(run_dir, device=device))
