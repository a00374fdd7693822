"""Training runs: :func:`run_attack` (a backdoored model), :func:`run_clean` (its clean
reference), and scoring them (:func:`score_clean_model`, :func:`evaluate_run`)."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..attacks.base import PreparedContext
from ..data import DatasetBundle
from ..metrics import BackdoorTestSet, Evaluator, eval_due, evaluate
from ..runs import FORMAT_VERSION, RunError, load_into, load_state, read_json, save_model, save_tensors, write_json
from ..training import train
from ..utils import resolve_device
from .bn_check import batchnorm_check, drift_message
from .factories import build_attack, load_spec_data, model_factory
from .loading import load_run
from .rundir import (ATTACK_RECORD, CHECKPOINT_FILE, CLEAN_DIR, CLEAN_RECORD, HISTORY_FILE, METRICS_FILE, MODEL_FILE,
                     RESOURCES_FILE, SPEC_FILE, check_out_dir, library_versions, round_metrics, tensor_digest,
                     train_guarded, write_history)
from .specs import AttackSpec, clean_recipe, jsonable

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where attack resources are cached: ``$DISTOX_CACHE`` or ``~/.cache/distox``."""
    return Path(os.environ.get("DISTOX_CACHE") or Path.home() / ".cache" / "distox").expanduser()


# ---------------------------------------------------------------------------- clean reference
def run_clean(spec: AttackSpec, out: Path, *, device: str | torch.device = "auto", progress: bool = True,
              data: DatasetBundle | None = None) -> dict[str, float]:
    """Train a clean model exactly as :func:`run_attack` would train the backdoored one
    (same data subset, architecture, loop and seed; no poisoning) and write
    ``out/model.safetensors``, ``out/clean.json`` and ``out/metrics.json`` (``{"acc"}``).
    Cached and resumable like :func:`run_attack`. Returns the metrics.

    Example:
        >>> run_clean(AttackSpec("badnets", epochs=5, train_subset=10_000), Path("runs/clean"))["acc"]
    """
    out = Path(out)
    spec_dict = spec.to_dict()
    spec_dict_clean = clean_recipe(spec_dict)
    check_out_dir(out, spec_dict_clean, False, "clean")
    if (out / METRICS_FILE).exists() and (out / MODEL_FILE).exists() and (out / CLEAN_RECORD).exists():
        return read_json(out / METRICS_FILE)
    write_json(out / SPEC_FILE, spec_dict_clean)
    dev = resolve_device(device)
    if data is None:
        data, _ = load_spec_data(spec)
    torch.manual_seed(int(spec.seed))
    model = model_factory(spec, data)()
    config = spec.loop_config(data.image_shape[-1])
    state = train_guarded(lambda: train(model, data.train.x, data.train.y, config, device=dev, progress=progress,
                                        checkpoint=out / CHECKPOINT_FILE, desc="clean"), "clean training")
    model.eval()
    metrics = round_metrics(evaluate(model, data.test.x, data.test.y, device=dev))
    save_model(out / MODEL_FILE, model)
    write_history(out / HISTORY_FILE, state.history)
    write_json(out / CLEAN_RECORD, {"format_version": FORMAT_VERSION, "kind": "clean", "spec": spec_dict_clean,
                                    "training": config.to_dict(), "seconds": round(state.seconds, 3),
                                    "versions": library_versions(), "device": str(dev)})
    write_json(out / METRICS_FILE, metrics)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return metrics


# ---------------------------------------------------------------------------- attack runs
def run_attack(spec: AttackSpec, out: Path, *, device: str | torch.device = "auto", progress: bool = True,
               force: bool = False, track_epochs: bool = False, eval_every: int = 1,
               on_epoch_end: Callable[[int, nn.Module], dict[str, float] | None] | None = None) -> dict[str, float]:
    """Train the backdoored model of ``spec`` into run directory ``out``; return its metrics.

    Args:
        spec: the attack run's definition.
        out: run directory (created). A finished run with the same spec is returned from
            ``metrics.json`` without recomputing; an interrupted one resumes from
            ``checkpoint.pt``; one with a different spec is an error unless ``force``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
        progress: tqdm progress bars.
        force: replace a run of a different spec in ``out`` (False).
        track_epochs: evaluate ACC/ASR/RA per epoch into ``history.csv`` (False).
        eval_every: with ``track_epochs``, every this many epochs and after the last (1).
        on_epoch_end: extra ``(epoch, model) -> dict | None`` callback (its dict joins the history).

    Returns:
        ``{"acc", "asr", "ra"}`` in percent, plus ``"clean_acc"``, ``"clean_asr"`` and
        ``"clean_ra"`` with ``spec.clean_reference`` (see :func:`score_clean_model`).
    """
    out = Path(out)
    if int(eval_every) < 1:
        raise RunError(f"eval_every must be >= 1; got {eval_every}")
    spec_dict = spec.to_dict()
    check_out_dir(out, spec_dict, force, "attack")
    if all((out / f).exists() for f in (METRICS_FILE, MODEL_FILE, ATTACK_RECORD)):
        log.info("%s: finished run with the same spec; returning its metrics", out)
        return read_json(out / METRICS_FILE)

    dev = resolve_device(device)
    attack = build_attack(spec)  # parameter errors before any data is loaded
    data, data_record = load_spec_data(spec)
    attack.check_data(data)  # target outside the classes, image too small
    make_model = model_factory(spec, data)
    make_model()  # architecture errors before anything is written
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC_FILE, spec_dict)

    t0 = time.perf_counter()
    torch.manual_seed(int(spec.seed))
    attack.prepare(PreparedContext(data=data, model_factory=make_model, device=dev, cache_dir=cache_dir(),
                                   progress=progress))
    prepare_seconds = time.perf_counter() - t0

    torch.manual_seed(int(spec.seed))
    model = make_model()
    config = spec.loop_config(data.image_shape[-1])
    # Training-controlled attacks (e.g. Input-aware) learn their trigger while training: rebuild
    # their poisoned test set every epoch; a fixed trigger's is built once.
    fixed_backdoor = attack.backdoor_test_set(data.test) if track_epochs and attack.kind != "training" else None

    def epoch_end(epoch: int, m: nn.Module) -> dict[str, float]:
        row: dict[str, float] = {}
        if track_epochs and eval_due(epoch, eval_every, config.epochs):
            bd = fixed_backdoor if fixed_backdoor is not None else attack.backdoor_test_set(data.test)
            row.update(Evaluator(data.test.x, data.test.y, bd, device=dev)(epoch, m))
        if on_epoch_end is not None:
            row.update(on_epoch_end(epoch, m) or {})
        return row

    state = train_guarded(lambda: attack.train_model(model, data, config, device=dev, progress=progress,
                                                     checkpoint=out / CHECKPOINT_FILE, on_epoch_end=epoch_end),
                          f"attack {spec.attack}")
    model.eval()

    resources = attack.resources()
    backdoor = attack.backdoor_test_set(data.test)
    metrics = round_metrics(evaluate(model, data.test.x, data.test.y, backdoor, device=dev))
    clean_seconds = None
    if spec.clean_reference:
        t1 = time.perf_counter()
        run_clean(spec, out / CLEAN_DIR, device=dev, progress=progress, data=data)
        metrics.update(score_clean_model(out / CLEAN_DIR / MODEL_FILE, spec, data, backdoor, device=dev))
        clean_seconds = round(time.perf_counter() - t1, 3)
    drift = batchnorm_check(model, data.train.x, data.test.x, data.test.y, metrics["acc"], metrics.get("clean_acc"),
                            device=dev, seed=int(spec.seed))
    if drift is not None:
        log.warning("%s: %s", out, drift_message(drift))

    record = {
        "format_version": FORMAT_VERSION,
        "kind": "attack",
        "spec": spec_dict,
        "attack": jsonable(attack.params()),
        "attack_class": f"{type(attack).__module__}.{type(attack).__qualname__}",
        "attack_kind": attack.kind,
        "dataset": data_record,
        "model": {"name": spec.model, "kwargs": spec.model_kwargs,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "training": config.to_dict(),
        "resources": {"file": RESOURCES_FILE, "names": sorted(resources),
                      "sha256": tensor_digest(*(resources[k] for k in sorted(resources))) if resources else None},
        "poisoned_train": len(attack.poison_indices(data.train.y)) if attack.kind != "training" else None,
        "backdoor_test": {"size": len(backdoor), "sha256": tensor_digest(backdoor.x, backdoor.target, backdoor.true)},
        "metrics": metrics,
        "seconds": {"prepare": round(prepare_seconds, 3), "train": round(state.seconds, 3),
                    "total": round(time.perf_counter() - t0, 3), "clean_reference": clean_seconds},
        "resumed_from_epoch": state.resumed_from_epoch,
        "batchnorm_check": drift,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_tensors(out / RESOURCES_FILE, resources, metadata={"attack": spec.attack})
    save_model(out / MODEL_FILE, model)
    write_history(out / HISTORY_FILE, state.history)
    write_json(out / ATTACK_RECORD, record)
    write_json(out / METRICS_FILE, metrics)  # last: its presence marks a finished run
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return metrics


def evaluate_run(run_dir: Path, device: str | torch.device = "auto") -> dict[str, float]:
    """Recompute ``metrics.json`` of an attack run (ACC, ASR, RA; ``clean_acc`` when a clean
    reference model is present)."""
    run = load_run(run_dir, device=device)
    metrics = run.evaluate(device=device)
    clean_model = Path(run_dir) / CLEAN_DIR / MODEL_FILE
    if clean_model.is_file():
        metrics.update(score_clean_model(clean_model, run.spec, run.data, run.backdoor_test_set(), device=device))
    return metrics


def score_clean_model(weights: Path, spec: AttackSpec, data: DatasetBundle, backdoor: BackdoorTestSet,
                      device: str | torch.device = "cpu") -> dict[str, float]:
    """Score a clean reference model (trained like ``spec``, without poison) on an attack's test
    sets: ``clean_acc``, and ``clean_asr`` / ``clean_ra`` on the attack's backdoor test set.

    ``clean_asr`` is the ASR of a model that never saw the trigger: the share of triggered
    images a clean model already sends to the target (e.g. because a strong blend makes a
    Fashion-MNIST image unrecognisable). A defense that merely restores clean behaviour lands
    near it, so it is the yardstick for a fixed ASR threshold (BENCHMARKS.md, cpu.yaml grid).
    """
    model = model_factory(spec, data)()
    load_into(model, load_state(weights), source=str(weights))
    m = round_metrics(evaluate(model, data.test.x, data.test.y, backdoor, device=device))
    return {"clean_acc": m["acc"], "clean_asr": m["asr"], "clean_ra": m["ra"]}
