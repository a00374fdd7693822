"""What a spec builds: its dataset with seeded subsets, its attack or defense object, its model."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import attacks as attack_registry
from .. import defenses as defense_registry
from ..attacks.base import Attack, AttackError
from ..data import DatasetBundle, ImageSplit, load_dataset
from ..defenses.base import Defense, DefenseError
from ..errors import DistoxError
from ..models import check_model_kwargs, create_model
from ..registry import keyword_names
from ..runs import RunError
from .rundir import tensor_digest
from .specs import AttackSpec, DefenseSpec


def subset_indices(n: int, k: int | None, seed: int) -> torch.Tensor | None:
    """Seeded uniform choice of ``k`` of ``n`` indices (sorted); None when ``k`` is None or ≥ n."""
    if k is None or int(k) >= n:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[: int(k)].sort().values


#: Offsets that keep the train- and test-subset draws independent for the same seed.
_TRAIN_SUBSET_OFFSET, _TEST_SUBSET_OFFSET = 0, 1


def load_spec_data(spec: AttackSpec) -> tuple[DatasetBundle, dict[str, Any]]:
    """Load the spec's dataset with its seeded subsets; returns the bundle and its record."""
    full = load_dataset(spec.dataset, spec.data_root)
    record: dict[str, Any] = {
        "name": full.name, "source": full.source, "num_classes": full.num_classes,
        "image_shape": list(full.image_shape), "mean": list(full.mean), "std": list(full.std),
        "train_size": len(full.train), "test_size": len(full.test),
    }
    splits = {}
    for split, k, offset in (("train", spec.train_subset, _TRAIN_SUBSET_OFFSET),
                             ("test", spec.test_subset, _TEST_SUBSET_OFFSET)):
        data: ImageSplit = getattr(full, split)
        seed = int(spec.seed) + offset
        idx = subset_indices(len(data), k, seed)
        splits[split] = data if idx is None else data.subset(idx)
        record[f"{split}_subset"] = {
            "size": len(splits[split]), "seed": seed, "method": "sorted(randperm(n, seed)[:size])",
            "indices_sha256": None if idx is None else tensor_digest(idx),
        }
    bundle = dataclasses.replace(full, train=splits["train"], test=splits["test"])
    record["train_labels_sha256"] = tensor_digest(bundle.train.y)
    record["test_sha256"] = tensor_digest(bundle.test.x, bundle.test.y)
    return bundle, record


def construct(registry, name: str, kwargs: dict[str, Any], error: type, what: str):
    """``registry.create(name, **kwargs)`` with a clear error for unknown arguments."""
    cls = registry.get(name)
    accepted = keyword_names(cls)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise error(f"{what} '{cls.name}' has no parameter(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(accepted))}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise error(f"bad parameters for {what} '{cls.name}': {exc}") from None
    except DistoxError:
        raise
    except ValueError as exc:
        raise error(f"{what} '{cls.name}': {exc}") from None


def build_attack(spec: AttackSpec) -> Attack:
    """The spec's attack object (not yet prepared)."""
    base = {"target": int(spec.target), "mode": spec.mode, "poison_rate": float(spec.poison_rate),
            "seed": int(spec.seed)}
    clash = sorted(set(base) & set(spec.attack_kwargs))
    if clash:
        raise AttackError(f"set {', '.join(clash)} through the spec's own fields (CLI: "
                          f"{', '.join('--' + k.replace('_', '-') for k in clash)}), not as attack parameters")
    kwargs = {**base, **spec.attack_kwargs}
    attack = construct(attack_registry, spec.attack, kwargs, AttackError, "attack")
    if spec.label_smoothing and type(attack).train_model is not Attack.train_model:
        raise AttackError(f"{spec.attack} trains with an objective of its own; label smoothing applies to the "
                          "plain cross-entropy the other attacks train with")
    return attack


def build_defense(spec: DefenseSpec) -> Defense:
    """The spec's defense object: its ``params`` plus the spec's epochs, batch size and seed."""
    kwargs = dict(spec.params)
    if spec.epochs is not None:
        kwargs["epochs"] = int(spec.epochs)
    if spec.batch_size is not None:
        kwargs["batch_size"] = int(spec.batch_size)
    kwargs.setdefault("seed", int(spec.seed))
    return construct(defense_registry, spec.method, kwargs, DefenseError, "defense")


def attack_from_params(params: dict[str, Any]) -> Attack:
    """Rebuild an attack from its recorded :meth:`Attack.params` (informational keys dropped)."""
    cls = attack_registry.get(params["name"])
    accepted = keyword_names(cls)
    kwargs = {k: v for k, v in params.items() if k != "name" and (accepted is None or k in accepted)}
    return construct(attack_registry, params["name"], kwargs, AttackError, "attack")


def model_factory(spec: AttackSpec, data: DatasetBundle) -> Callable[[], nn.Module]:
    """A function building a fresh model of the spec's architecture for ``data``; an unknown
    model option fails here, before any data preparation or training."""
    try:
        check_model_kwargs(spec.model, spec.model_kwargs)
    except ValueError as exc:
        raise RunError(str(exc)) from None

    def make() -> nn.Module:
        try:
            return create_model(spec.model, data.num_classes, data.in_channels, data.mean, data.std,
                                **spec.model_kwargs)
        except TypeError as exc:
            raise RunError(f"bad model arguments for '{spec.model}': {exc}") from None
        except DistoxError:
            raise
        except ValueError as exc:
            raise RunError(str(exc)) from None

    return make
