"""Defense runs: :func:`run_defense` purifies a loaded attack run's model on its seeded retain
set and writes the scored result under ``RUN_DIR/defense/METHOD/``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .. import defenses as defense_registry
from ..defenses.base import DefenseError
from ..metrics import Evaluator, der, evaluate, round_value
from ..runs import FORMAT_VERSION, RunError, save_model, write_json
from ..utils import resolve_device
from .factories import construct
from .loading import load_run
from .rundir import (DEFENSE_RECORD, HISTORY_FILE, MODEL_FILE, library_versions, round_metrics, tensor_digest,
                     train_guarded, write_history)
from .specs import DefenseSpec, jsonable


def run_defense(run_dir: Path, spec: DefenseSpec, out: Path | None = None, *, force: bool = False,
                device: str | torch.device = "auto", progress: bool = True, track_epochs: bool = True) -> dict[str, Any]:
    """Apply a defense to an attack run and score it (SPEC §2, §4).

    Args:
        run_dir: an attack run directory (:func:`run_attack`).
        spec: the defense and its retain set.
        out: output directory (default ``run_dir/defense/<method>``).
        force: overwrite an existing result there (False: :class:`RunError`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: tqdm progress bars.
        track_epochs: ACC/ASR/RA after every epoch into ``history.csv`` (True).

    Returns:
        The ``defense.json`` record: before/after ACC/ASR/RA, DER, retain set, resolved
        defense configuration, seconds.
    """
    run_dir = Path(run_dir)
    method = defense_registry.get(spec.method).name  # unknown method: clear error first
    out = Path(out) if out is not None else run_dir / "defense" / method
    if (out / DEFENSE_RECORD).exists() and not force:
        raise RunError(f"{out / DEFENSE_RECORD} already exists; pass --force (force=True) to overwrite it "
                       "or --out to write elsewhere")
    kwargs = dict(spec.params)
    if spec.epochs is not None:
        kwargs["epochs"] = int(spec.epochs)
    if spec.batch_size is not None:
        kwargs["batch_size"] = int(spec.batch_size)
    kwargs.setdefault("seed", int(spec.seed))
    defense = construct(defense_registry, method, kwargs, DefenseError, "defense")

    dev = resolve_device(device)
    run = load_run(run_dir, device=dev)
    idx = run.retain_indices(spec.ratio, spec.count, spec.seed)
    retain = run.data.train.subset(idx)
    backdoor = run.backdoor_test_set()
    test = run.data.test
    before = round_metrics(evaluate(run.model, test.x, test.y, backdoor, device=dev))
    evaluator = Evaluator(test.x, test.y, backdoor, device=dev) if track_epochs else None
    t0 = time.perf_counter()
    result = train_guarded(lambda: defense(run.model, retain, evaluator=evaluator, device=dev, progress=progress),
                           f"defense {method}")
    seconds = time.perf_counter() - t0
    after = round_metrics(evaluate(result.model, test.x, test.y, backdoor, device=dev))
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "defense",
        "method": method,
        "spec": spec.to_dict(),
        "run_dir": str(run_dir),
        "attack": run.record.get("attack", {}).get("name"),
        "attack_spec": run.record.get("spec"),
        "retain": {"seed": int(spec.seed), "ratio": spec.ratio, "count": spec.count, "size": len(idx),
                   "of": len(run.data.train), "indices_sha256": tensor_digest(idx), "indices": idx.tolist(),
                   "source": "clean training data of the run (after its train subset)"},
        "config": jsonable(result.config),
        "before": before,
        "after": after,
        "der": round_value(der(before, after), percent=True),
        "seconds": round(seconds, 3),
        "epochs": len(result.history),
        "device": str(dev),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_model(out / MODEL_FILE, result.model)
    write_history(out / HISTORY_FILE, result.history)
    write_json(out / DEFENSE_RECORD, record)  # last: marks a finished result
    return record
