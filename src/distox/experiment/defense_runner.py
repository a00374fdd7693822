"""Defense runs: :func:`run_defense` purifies a loaded attack run's model on its seeded retain
set and writes the scored result under ``RUN_DIR/defense/METHOD/``.

Like an attack run, a defense run saves ``checkpoint.pt`` after every epoch and resumes from it
when called again with the same arguments (deleted once ``defense.json`` is written); a
finished result with the same arguments is returned as it is; a result or checkpoint of other
arguments is replaced only with ``force``."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from .. import defenses as defense_registry
from ..guidance import DEFAULT_ASR_TOLERANCE, DEFAULT_TOLERANCE, accuracy_warning, backdoor_warning
from ..metrics import Evaluator, der, evaluate, round_value
from ..runs import FORMAT_VERSION, RunError, load_into, load_state, read_json, save_model, write_json
from ..training import saved_identity
from ..utils import resolve_device
from .factories import build_defense, model_factory
from .loading import load_run
from .rundir import (ATTACK_RECORD, CHECKPOINT_FILE, DEFENSE_RECORD, HISTORY_FILE, METRICS_FILE, MODEL_FILE,
                     differing_keys, library_versions, read_record, round_metrics, tensor_digest, train_guarded,
                     write_history)
from .specs import DefenseSpec, jsonable

log = logging.getLogger(__name__)
#: ``distox defend`` warns when test accuracy falls by more than this many points.
ACC_TOLERANCE = DEFAULT_TOLERANCE


def asr_bar(run_dir: Path, clean_asr: float | None = None) -> tuple[float, bool]:
    """The ASR (%) a defended model of ``run_dir`` should stay under, and whether it is the attack's
    own floor: max(2, clean-model ASR + 2) when the clean model's ASR is known — ``clean_asr`` when
    given (``distox bench`` scores a shared clean cell on the attack cell's triggers and keeps it in
    the cell's record), else the attack run's own ``metrics.json`` when it trained its clean
    reference (``--clean-reference``); :func:`distox.bench.summary.asr_floor`, the rule ``distox
    report`` judges by — else :data:`distox.guidance.DEFAULT_ASR_TOLERANCE`."""
    from ..bench.summary import asr_floor  # the bench package imports this module

    clean = clean_asr
    if clean is None:
        try:
            clean = read_json(Path(run_dir) / METRICS_FILE).get("clean_asr")
        except (OSError, ValueError, RunError, AttributeError):
            clean = None
    if isinstance(clean, (int, float)) and not isinstance(clean, bool):
        return asr_floor(clean), True
    return DEFAULT_ASR_TOLERANCE, False


def run_defense(run_dir: Path, spec: DefenseSpec, out: Path | None = None, *, force: bool = False,
                device: str | torch.device = "auto", progress: bool = True, track_epochs: bool = True,
                eval_every: int = 1, warn: bool = True, clean_asr: float | None = None) -> dict[str, Any]:
    """Apply a defense to an attack run and score it (SPEC §2, §4).

    Args:
        run_dir: an attack run directory (:func:`run_attack`).
        spec: the defense and its retain set.
        out: output directory (default ``run_dir/defense/<method>``). A finished result of the
            same arguments there is returned without recomputing; an interrupted one resumes
            from its ``checkpoint.pt``.
        force: replace a result or checkpoint of *other* arguments there (False: :class:`RunError`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: tqdm progress bars.
        track_epochs: ACC/ASR/RA per epoch into ``history.csv`` (True).
        eval_every: with ``track_epochs``, evaluate every this many epochs and after the last (1).
        warn: log the accuracy warning (:mod:`distox.guidance`) when test accuracy fell by more
            than :data:`ACC_TOLERANCE` (True); it is in the record either way (bench cells: False).
        clean_asr: the ASR (%) of the attack's clean reference model when the caller knows it and
            the run directory may not (``distox bench``'s shared clean cells): the backdoor
            warning then judges by the floor (:func:`asr_bar`).

    Returns:
        The ``defense.json`` record: before/after ACC/ASR/RA, DER, retain set, resolved
        defense configuration, seconds, and ``info`` (``Result.info``) when the defense
        reports what it found.
    """
    run_dir = Path(run_dir)
    if int(eval_every) < 1:
        raise RunError(f"eval_every must be >= 1; got {eval_every}")
    method = defense_registry.get(spec.method).name  # unknown method: clear error first
    out = Path(out) if out is not None else run_dir / "defense" / method
    if out.resolve() == run_dir.resolve():
        raise RunError(f"--out {out} is the attack run directory itself; choose a directory for the defense")
    finished = _finished_result(run_dir, spec, out, force)
    if finished is not None:
        return finished
    defense = build_defense(spec)

    dev = resolve_device(device)
    run = load_run(run_dir, device=dev)
    idx = run.retain_indices(spec.ratio, spec.count, spec.seed)
    retain = run.data.train.subset(idx)
    backdoor = run.backdoor_test_set()
    test = run.data.test
    before = round_metrics(evaluate(run.model, test.x, test.y, backdoor, device=dev))
    evaluator = (Evaluator(test.x, test.y, backdoor, device=dev, every=eval_every, last=defense.epochs_for(retain, run.model))
                 if track_epochs else None)
    checkpoint = out / CHECKPOINT_FILE
    if checkpoint.exists() and saved_identity(checkpoint) != defense.identity(run.model, retain, track_epochs,
                                                                               eval_every):
        if not force:
            raise RunError(f"{checkpoint} holds an interrupted defense run with other arguments or data; rerun "
                           "that command to resume it, or pass --force (force=True) to discard it and start over")
        checkpoint.unlink()
    t0 = time.perf_counter()
    result = train_guarded(lambda: defense(run.model, retain, evaluator=evaluator, device=dev, progress=progress,
                                           checkpoint=checkpoint), f"defense {method}")
    seconds = time.perf_counter() - t0
    after = round_metrics(evaluate(result.model, test.x, test.y, backdoor, device=dev))
    warning = accuracy_warning(before["acc"], after["acc"], ACC_TOLERANCE, method, result.config, len(idx),
                               what="test accuracy")
    if warning and warn:
        log.warning(warning)
    bar, is_floor = asr_bar(run_dir, clean_asr)
    remains = backdoor_warning(after["asr"], bar, method, result.config, len(idx), floor=is_floor)
    if remains and warn:
        log.warning(remains)
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
        "warning": warning,
        "backdoor_warning": remains,
        "asr_bar": {"percent": round(bar, 2), "source": "floor" if is_floor else "default tolerance"},
        "seconds": round(seconds, 3),
        "epochs": len(result.history),
        "resumed_from_epoch": result.resumed_from_epoch,
        **({"info": jsonable(result.info)} if result.info else {}),  # what the defense found (e.g. NC's flags)
        "device": str(dev),
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_model(out / MODEL_FILE, result.model)
    write_history(out / HISTORY_FILE, result.history)
    write_json(out / DEFENSE_RECORD, record)  # last: marks a finished result
    checkpoint.unlink(missing_ok=True)
    return record


def _finished_result(run_dir: Path, spec: DefenseSpec, out: Path, force: bool) -> dict[str, Any] | None:
    """The finished record in ``out`` when it holds these arguments applied to this attack run;
    None when there is none (or ``force`` removed one of other arguments); else :class:`RunError`."""
    path = out / DEFENSE_RECORD
    if not path.exists():
        return None
    old = read_json(path)
    attack = read_json(run_dir / ATTACK_RECORD).get("spec") if (run_dir / ATTACK_RECORD).is_file() else None

    def where_free(attack_spec: Any) -> Any:  # the data's location on this machine does not count
        return {k: v for k, v in attack_spec.items() if k != "data_root"} if isinstance(attack_spec, dict) else None

    changed = differing_keys({**old.get("spec", {}), "attack run": where_free(old.get("attack_spec"))},
                             {**spec.to_dict(), "attack run": where_free(attack)})
    if not changed:
        return old
    if not force:
        raise RunError(f"{out} holds a defense result of other arguments (differs in: {', '.join(changed)}); "
                       "choose another --out or pass --force (force=True) to replace it")
    for name in (DEFENSE_RECORD, MODEL_FILE, HISTORY_FILE, CHECKPOINT_FILE):
        (out / name).unlink(missing_ok=True)
    return None


def evaluate_defense(defense_dir: Path, device: str | torch.device = "auto") -> dict[str, float]:
    """Recompute ACC, ASR and RA of a defense result's purified model on its attack run's test
    sets. The attack run is the one recorded in ``defense.json`` or, when that path no longer
    holds it (e.g. the directories moved), the directory two levels up
    (``RUN_DIR/defense/METHOD``)."""
    defense_dir = Path(defense_dir)
    record = read_record(defense_dir, DEFENSE_RECORD)
    candidates = [Path(record["run_dir"])] if record.get("run_dir") else []
    candidates.append(defense_dir.resolve().parent.parent)
    run_dir = next((c for c in candidates if (c / ATTACK_RECORD).is_file()), None)
    if run_dir is None:
        raise RunError(f"{defense_dir}: its attack run ({', '.join(map(str, candidates))}) was not found")
    run = load_run(run_dir, device=device)
    model = model_factory(run.spec, run.data)()
    load_into(model, load_state(defense_dir / MODEL_FILE), source=str(defense_dir / MODEL_FILE))
    return run.evaluate(model.to(resolve_device(device)).eval(), device=device)
