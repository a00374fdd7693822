"""Reproducible attack runs and defense runs, each a directory of safetensors + JSON records.

An *attack run* (:func:`run_attack`) trains a backdoored model from an :class:`AttackSpec`
(SPEC §3: SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine, batch 128, random crop and a
flip on CIFAR-10 only as the reference, all-to-one target 0, poison rate 10 %; optionally SAM
of radius ρ for the paper's adaptive attack) and writes::

    out/spec.json                       the spec, written first (guards resuming)
    out/model.safetensors               backdoored weights (written atomically, once complete)
    out/attack_resources.safetensors    attack.resources(): pattern, warp field, generator, ...
    out/attack.json                     format_version, spec, attack.params(), dataset + subset
                                        seeds and digests, training config, library versions
    out/history.csv                     per-epoch loss / lr (and ACC/ASR/RA when tracked)
    out/metrics.json                    {"acc", "asr", "ra"} (+ "clean_acc", "clean_asr", "clean_ra"), written last

Everything needed to rebuild the poisoned test set bit-identically is in ``attack.json`` plus
the resources file; :func:`load_run` does it and checks the digests recorded at attack time.
While training, ``out/checkpoint.pt`` is saved every epoch; rerunning the same spec resumes
from it, and it is deleted after success.

A *defense run* (:func:`run_defense`) loads an attack run, draws a seeded retain set from
the clean (possibly subset) training data (SPEC §1: 5 % uniformly at random, seed recorded),
purifies with any registered defense, tracks ACC/ASR/RA per epoch and writes
``defense.json`` (before/after metrics, DER per SPEC §2), ``model.safetensors`` and
``history.csv`` under ``RUN_DIR/defense/METHOD/``; it checkpoints every epoch and resumes
like an attack run, and :func:`evaluate_defense` rescores its model.

The package is split by job: ``specs`` (:class:`AttackSpec`, :class:`DefenseSpec`), ``rundir``
(file names, records, histories, digests), ``factories`` (a spec's data, attack and model),
``loading`` (:func:`load_run`), ``attack_runner`` (:func:`run_attack`, :func:`run_clean` and their
scoring) and ``defense_runner`` (:func:`run_defense`).

Example:
    >>> metrics = run_attack(AttackSpec("badnets", epochs=5, train_subset=10_000), Path("runs/bn"))
    >>> record = run_defense(Path("runs/bn"), DefenseSpec("d3", epochs=20))
"""
from __future__ import annotations

from .attack_runner import cache_dir, evaluate_run, run_attack, run_clean, score_clean_model
from .defense_runner import evaluate_defense, run_defense
from .factories import attack_from_params, build_attack, build_defense, load_spec_data, model_factory, subset_indices
from .loading import LoadedRun, load_run
from .rundir import (ATTACK_RECORD, CHECKPOINT_FILE, CLEAN_DIR, CLEAN_RECORD, DEFENSE_RECORD, HISTORY_FILE,
                     METRICS_FILE, MODEL_FILE, RESOURCES_FILE, SPEC_FILE, library_versions, read_history, read_record,
                     tensor_digest, write_history)
from .specs import ATTACK_ONLY_FIELDS, AttackSpec, DefenseSpec, clean_recipe

__all__ = [
    "ATTACK_ONLY_FIELDS", "AttackSpec", "DefenseSpec", "LoadedRun", "clean_recipe", "evaluate_defense", "evaluate_run", "library_versions", "load_run",
    "load_spec_data", "read_history", "run_attack", "run_clean", "run_defense", "tensor_digest",
]
