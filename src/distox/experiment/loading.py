"""Loading a finished attack run back: spec, data with the same subsets, attack with its
resources, backdoored model; the poisoned test set and retain sets rebuilt from the record."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..attacks.base import Attack
from ..data import DatasetBundle, ImageSplit, select_retain
from ..defenses.base import DefenseError
from ..errors import DistoxError
from ..metrics import BackdoorTestSet, evaluate
from ..runs import RunError, load_into, load_state
from ..utils import resolve_device
from .factories import attack_from_params, load_spec_data, model_factory
from .rundir import ATTACK_RECORD, MODEL_FILE, RESOURCES_FILE, SPEC_FILE, read_record, round_metrics, tensor_digest
from .specs import AttackSpec

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """An attack run loaded back: record, spec, attack (resources loaded), data, model."""

    run_dir: Path
    record: dict
    spec: AttackSpec
    attack: Attack
    data: DatasetBundle
    model: nn.Module

    def backdoor_test_set(self) -> BackdoorTestSet:
        """The poisoned test set, rebuilt from the record (a warning if its digest differs
        from the one recorded at attack time, e.g. a generator run on another device)."""
        bd = self.attack.backdoor_test_set(self.data.test)
        want = self.record.get("backdoor_test", {}).get("sha256")
        if want and tensor_digest(bd.x, bd.target, bd.true) != want:
            log.warning("%s: the rebuilt poisoned test set differs from the one at attack time", self.run_dir)
        return bd

    def retain_indices(self, ratio: float | None = None, count: int | None = None, seed: int = 0) -> torch.Tensor:
        """Seeded indices of the retain set within the run's clean training data."""
        if ratio is None and count is None:
            ratio = 0.05
        try:
            return select_retain(len(self.data.train), ratio=ratio, count=count, seed=seed)
        except DistoxError:
            raise
        except ValueError as exc:
            raise DefenseError(str(exc)) from None

    def retain(self, ratio: float | None = None, count: int | None = None, seed: int = 0) -> ImageSplit:
        """The retain set: a seeded uniform choice from the clean training data (SPEC §1)."""
        return self.data.train.subset(self.retain_indices(ratio, count, seed))

    def evaluate(self, model: nn.Module | None = None, device: str | torch.device = "cpu") -> dict[str, float]:
        """ACC/ASR/RA of ``model`` (default: the backdoored one) on this run's test sets."""
        return round_metrics(evaluate(model or self.model, self.data.test.x, self.data.test.y, self.backdoor_test_set(),
                                     device=device))


def load_run(run_dir: Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Load an attack run: spec, dataset with the same subsets, attack with its resources and
    the backdoored model (eval mode, on ``device``).

    Raises :class:`RunError` for a missing directory, model or record, a record with a newer
    ``format_version``, or data that differ from the ones the run used; :class:`DataError`
    when the dataset is missing on this machine.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    if not (run_dir / ATTACK_RECORD).is_file():
        hint = " (training did not finish; rerun the same `distox attack` command to resume)" \
            if (run_dir / SPEC_FILE).exists() else ""
        raise RunError(f"{run_dir} is not a finished attack run: {ATTACK_RECORD} is missing{hint}")
    record = read_record(run_dir, ATTACK_RECORD)
    if not (run_dir / MODEL_FILE).is_file():
        raise RunError(f"{run_dir} has no {MODEL_FILE}: the backdoored model is missing")
    try:
        spec = AttackSpec.from_dict(record["spec"])
        params = record["attack"]
    except (KeyError, TypeError) as exc:
        raise RunError(f"{run_dir / ATTACK_RECORD} is incomplete: {exc}") from None
    data, data_record = load_spec_data(spec)
    saved = record.get("dataset", {})
    for key, what in (("train_labels_sha256", "training labels"), ("test_sha256", "test images")):
        if saved.get(key) and saved[key] != data_record[key]:
            raise RunError(f"the {spec.dataset} {what} on this machine differ from the ones this run used "
                           f"(source then: {saved.get('source')}; now: {data_record['source']}); the poisoned "
                           "test set cannot be rebuilt exactly")
    attack = attack_from_params(params)
    attack.check_data(data)
    names = record.get("resources", {}).get("names") or []
    res_path = run_dir / RESOURCES_FILE
    if names and not res_path.is_file():
        raise RunError(f"{run_dir} has no {RESOURCES_FILE}, needed to rebuild the {params['name']} trigger")
    if res_path.is_file():
        attack.load_resources(load_state(res_path))
    model = model_factory(spec, data)()
    load_into(model, load_state(run_dir / MODEL_FILE), source=str(run_dir / MODEL_FILE))
    dev = resolve_device(device)
    model.to(dev).eval()
    return LoadedRun(run_dir=run_dir, record=record, spec=spec, attack=attack, data=data, model=model)
