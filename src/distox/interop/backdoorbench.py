"""BackdoorBench interop: import an ``attack_result.pt`` as a distox run directory, export a
distox defense result as a ``defense_result.pt``.

BackdoorBench (the platform the D3 paper was evaluated on) saves an attack as
``record/<run>/attack_result.pt``: a *pickled* dict (it holds numpy arrays, so it cannot be
read with ``torch.load(weights_only=True)``) with the keys ``model_name``, ``num_classes``,
``model`` (state dict), ``data_path``, ``img_size`` (H, W, C), ``clean_data`` (dataset name),
``bd_train`` and ``bd_test``. The two bd entries are ``retrieve_state()`` dicts:
``original_index_array`` (visible indices), ``poison_indicator`` (one flag per dataset
sample), ``bd_data_container.data_dict`` = ``{idx: {"path": ".../bd_test_dataset/<y>/<idx>.png",
"other_info": [bd_label, original_label]}}`` — the poisoned images are PNG files next to the
.pt (notes: ``reference/backdoorbench-attacks.md`` §3). Clean data are not stored: they come
from distox's own dataset of the same name.

:func:`import_record` writes a run directory that :func:`distox.experiment.load_run`,
``distox defend``, ``distox evaluate`` and ``distox bench`` accept::

    out/model.safetensors               the classifier, wrapped in distox's Normalized with
                                        BackdoorBench's normalisation for that dataset
    out/attack_resources.safetensors    the stored poisoned test images (uint8) + labels
    out/attack.json, spec.json, metrics.json

Its attack is :class:`distox.attacks.imported.ImportedAttack`; the backdoor test set is the
stored PNGs, so ASR/RA are measured on exactly BackdoorBench's poisoned images.

Unpickling runs code from the file, so :func:`import_record` refuses unless
``trust_pickle=True`` (CLI ``--trust-pickle``). :func:`export_defense` writes only plain
tensors, numbers and strings with ``torch.save`` (loadable with ``weights_only=True``).

Example:
    >>> import_record("record/badnet_0_1", "runs/bb_badnet", trust_pickle=True)
    >>> # distox defend d3 runs/bb_badnet ; then
    >>> export_defense("runs/bb_badnet/defense/d3", "record/badnet_0_1/defense/d3")
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DistoxError
from ..metrics import der, round_metrics, round_value
from ..runs import FORMAT_VERSION, RunError, _atomic, load_state, read_json, save_model, save_tensors, write_json

log = logging.getLogger(__name__)

RESULT_FILE = "attack_result.pt"
DEFENSE_RESULT_FILE = "defense_result.pt"
REQUIRED_KEYS = ("model_name", "num_classes", "model", "data_path", "img_size", "clean_data", "bd_train", "bd_test")

#: BackdoorBench dataset name → distox dataset name.
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "gtsrb": "gtsrb", "tiny": "tiny-imagenet",
            "mnist": "mnist"}
#: BackdoorBench model name → distox model name (others: ``torchvision:<name>`` when it exists).
MODELS = {"preactresnet18": "preactresnet18", "vgg19_bn": "vgg19_bn"}
#: BackdoorBench's Normalize(mean, std) per dataset (its models expect normalised inputs).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "gtsrb": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "tiny": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "mnist": ((0.5,), (0.5,)),
}


class InteropError(DistoxError):
    """A BackdoorBench record or defense result that cannot be converted."""


PICKLE_REFUSAL = (
    "{path} is a pickle (BackdoorBench saves numpy arrays in it): loading it can execute arbitrary "
    "code from whoever made the file. Pass --trust-pickle (trust_pickle=True) only if you trust its source."
)


def read_attack_result(record_dir: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Load ``record_dir/attack_result.pt`` (refused without ``trust_pickle``) and check its keys."""
    record_dir = Path(record_dir)
    path = record_dir / RESULT_FILE if record_dir.is_dir() else record_dir
    if not path.is_file():
        raise InteropError(f"no BackdoorBench {RESULT_FILE} at {path}")
    if not trust_pickle:
        raise InteropError(PICKLE_REFUSAL.format(path=path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling error
        raise InteropError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise InteropError(f"{path} does not hold a dict (got {type(obj).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise InteropError(f"{path} is not a BackdoorBench attack result: missing keys {missing}")
    return obj


def _resolve_png(record_dir: Path, raw: str, folder: str) -> Path:
    """A data_dict path such as ``./record/<run>/bd_test_dataset/3/17.png`` → a file under
    ``record_dir`` (BackdoorBench stores paths relative to its repository root)."""
    p = Path(raw)
    candidates = [p] if p.is_absolute() else []
    parts = p.parts
    if folder in parts:
        candidates.append(record_dir.joinpath(*parts[parts.index(folder):]))
    candidates += [record_dir / p, record_dir.parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c
    raise InteropError(f"poisoned image {raw!r} not found (looked in {', '.join(str(c) for c in candidates[:3])})")


def read_bd_dataset(state: dict[str, Any], record_dir: Path, channels: int,
                    folder: str = "bd_test_dataset") -> dict[str, torch.Tensor]:
    """Read a ``retrieve_state()`` dict: the visible poisoned samples as uint8 images
    (N, C, H, W) with their backdoor labels, original labels and original indices."""
    from PIL import Image

    try:
        visible = np.asarray(state["original_index_array"]).astype(np.int64)
        indicator = np.asarray(state["poison_indicator"])
        data_dict = state["bd_data_container"]["data_dict"]
    except (KeyError, TypeError) as exc:
        raise InteropError(f"bd dataset state lacks {exc}") from None
    xs, targets, trues, index = [], [], [], []
    for idx in visible.tolist():
        if idx >= len(indicator) or not indicator[idx]:
            continue  # a clean sample: BackdoorBench reads it from the raw dataset
        entry = data_dict.get(idx, data_dict.get(str(idx)))
        if entry is None:
            raise InteropError(f"poisoned index {idx} has no entry in bd_data_container.data_dict")
        with Image.open(_resolve_png(record_dir, str(entry["path"]), folder)) as im:
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
        xs.append(torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1))
        bd_label, original = entry["other_info"][0], entry["other_info"][1]
        targets.append(int(bd_label))
        trues.append(int(original))
        index.append(int(idx))
    if not xs:
        raise InteropError("the bd test set holds no poisoned samples")
    return {"bd_x": torch.stack(xs).contiguous(), "bd_target": torch.tensor(targets), "bd_true": torch.tensor(trues),
            "bd_index": torch.tensor(index)}


def _map_model(name: str) -> str:
    if name in MODELS:
        return MODELS[name]
    try:
        import torchvision

        if name in torchvision.models.list_models():
            return f"torchvision:{name}"
    except Exception:  # noqa: BLE001
        pass
    raise InteropError(f"BackdoorBench model '{name}' has no distox equivalent; pass --model NAME "
                       "(a distox model name) with --model-kwarg as needed")


def _remap_keys(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.``; when names still differ but count and shapes agree in order, remap
    positionally (as BackdoorBench's loader does)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if set(state) == set(own) or len(state) != len(own):
        return state
    pairs = list(zip(state.items(), own.items()))
    if all(v.shape == w.shape for (_, v), (_, w) in pairs):
        log.warning("state-dict names differ from the distox model's; remapping %d tensors by position", len(pairs))
        return {k_own: v for (_, v), (k_own, _) in pairs}
    return state


def import_record(record_dir: str | Path, out: str | Path, *, trust_pickle: bool = False,
                  model: str | None = None, model_kwargs: dict[str, Any] | None = None,
                  dataset: str | None = None, data_root: str | None = None, device: str = "cpu",
                  force: bool = False) -> dict[str, Any]:
    """Convert a BackdoorBench record folder into a distox run directory ``out``.

    Args:
        record_dir: folder holding ``attack_result.pt`` and its ``bd_test_dataset/`` PNGs.
        out: the run directory to write (must not hold a run unless ``force``).
        trust_pickle: required: the .pt is a pickle (False refuses with an explanation).
        model: distox model name overriding the mapping of ``model_name`` (None).
        model_kwargs: its extra arguments, e.g. ``{"width": 0.5}`` ({}).
        dataset: distox dataset name overriding the mapping of ``clean_data`` (None).
        data_root: where the clean dataset is looked up (None: defaults).
        device: for the metrics computed at import.
        force: overwrite an existing run in ``out`` (False).

    Returns the metrics (ACC on the clean test set, ASR/RA on the stored poisoned images).
    """
    from ..experiment import (ATTACK_RECORD, METRICS_FILE, MODEL_FILE, RESOURCES_FILE, SPEC_FILE, AttackSpec,
                              library_versions, load_spec_data, model_factory, tensor_digest)
    from ..metrics import evaluate
    from ..runs import load_into

    record_dir, out = Path(record_dir), Path(out)
    if (out / ATTACK_RECORD).exists() and not force:
        raise RunError(f"{out} already holds a run; pass --force to overwrite it or choose another --out")
    raw = read_attack_result(record_dir, trust_pickle=trust_pickle)
    bb_data = str(raw["clean_data"])
    ds_name = dataset or DATASETS.get(bb_data, bb_data)
    model_name = model or _map_model(str(raw["model_name"]))
    spec = AttackSpec(attack="imported", dataset=ds_name, model=model_name, model_kwargs=dict(model_kwargs or {}),
                      attack_kwargs={"source": "backdoorbench", "original_attack": record_dir.name},
                      data_root=data_root)
    data, data_record = load_spec_data(spec)
    if int(raw["num_classes"]) != data.num_classes:
        raise InteropError(f"the record has {raw['num_classes']} classes but distox's '{ds_name}' has "
                           f"{data.num_classes}; pass --dataset")
    if raw["bd_test"] is None:
        raise InteropError("the record has no bd_test set: nothing to measure the backdoor with")
    bd = read_bd_dataset(raw["bd_test"], record_dir, data.in_channels, "bd_test_dataset")
    if tuple(bd["bd_x"].shape[1:]) != data.image_shape:
        raise InteropError(f"stored poisoned images are {tuple(bd['bd_x'].shape[1:])} (C, H, W) but distox's "
                           f"'{ds_name}' images are {data.image_shape}")
    targets = torch.unique(bd["bd_target"])
    mode = "all2one" if len(targets) == 1 else "all2all"
    target = int(targets[0]) if mode == "all2one" else 0
    shift = 1
    if mode == "all2all":
        shifts = torch.unique((bd["bd_target"] - bd["bd_true"]) % data.num_classes)
        shift = int(shifts[0]) if len(shifts) == 1 else 1
    bd_train = raw.get("bd_train")
    poison_rate = 0.1
    if isinstance(bd_train, dict) and "poison_indicator" in bd_train:
        ind = np.asarray(bd_train["poison_indicator"])
        poison_rate = float(ind.mean()) if len(ind) and ind.mean() > 0 else 0.1
    spec.target, spec.mode, spec.poison_rate = target, mode, poison_rate
    spec.attack_kwargs["shift"] = shift

    from ..attacks.imported import ImportedAttack

    attack = ImportedAttack(target=target, mode=mode, poison_rate=poison_rate, shift=shift,
                            source="backdoorbench", original_attack=record_dir.name)
    attack.load_resources(bd)
    attack.check_data(data)

    net_model = model_factory(spec, data)()
    inner = net_model.net
    state = _remap_keys({k: v for k, v in raw["model"].items() if isinstance(v, torch.Tensor)}, inner.state_dict())
    load_into(inner, state, source=f"the model in {record_dir / RESULT_FILE}")
    mean, std = NORMALIZATION.get(bb_data, (data.mean, data.std))
    if len(mean) == data.in_channels:
        net_model.mean.copy_(torch.tensor(mean).view(1, -1, 1, 1))
        net_model.std.copy_(torch.tensor(std).view(1, -1, 1, 1))
    net_model.eval()
    backdoor = attack.backdoor_test_set(data.test)
    metrics = round_metrics(evaluate(net_model, data.test.x, data.test.y, backdoor, device=device))
    resources = attack.resources()
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "attack",
        "spec": spec.to_dict(),
        "attack": attack.params(),
        "attack_class": f"{type(attack).__module__}.{type(attack).__qualname__}",
        "attack_kind": attack.kind,
        "dataset": data_record,
        "model": {"name": model_name, "kwargs": spec.model_kwargs,
                  "parameters": sum(p.numel() for p in net_model.parameters()),
                  "normalization": {"mean": list(mean), "std": list(std)}},
        "resources": {"file": RESOURCES_FILE, "names": sorted(resources),
                      "sha256": tensor_digest(*(resources[k] for k in sorted(resources)))},
        "backdoor_test": {"size": len(backdoor),
                          "sha256": tensor_digest(backdoor.x, backdoor.target, backdoor.true)},
        "imported": {"from": "backdoorbench", "record_dir": str(record_dir.resolve()),
                     "model_name": str(raw["model_name"]), "clean_data": bb_data,
                     "img_size": [int(v) for v in raw["img_size"]], "data_path": str(raw["data_path"]),
                     "bd_train_poisoned": None if not isinstance(bd_train, dict) else
                     int(np.asarray(bd_train.get("poison_indicator", [])).sum())},
        "metrics": metrics,
        "versions": library_versions(),
        "created": __import__("time").strftime("%Y-%m-%dT%H:%M:%SZ", __import__("time").gmtime()),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SPEC_FILE, spec.to_dict())
    save_tensors(out / RESOURCES_FILE, resources, metadata={"attack": "imported"})
    save_model(out / MODEL_FILE, net_model)
    write_json(out / ATTACK_RECORD, record)
    write_json(out / METRICS_FILE, metrics)
    return metrics


def export_defense(defense_dir: str | Path, out: str | Path) -> Path:
    """Write a distox defense result (``RUN_DIR/defense/METHOD``) as BackdoorBench's
    ``defense_result.pt``: ``{"model_name", "num_classes", "model": state_dict}`` (the bare
    network, normalisation stripped — BackdoorBench normalises in its transforms) plus
    distox's metrics (``clean_acc``, ``asr``, ``ra``, before/after and DER, all in percent; method).
    Only tensors, numbers and strings are saved, so ``torch.load(weights_only=True)`` reads it.
    Returns the written file's path."""
    from ..experiment import ATTACK_RECORD, DEFENSE_RECORD, MODEL_FILE

    defense_dir, out = Path(defense_dir), Path(out)
    if not (defense_dir / DEFENSE_RECORD).is_file():
        raise RunError(f"{defense_dir} is not a distox defense result ({DEFENSE_RECORD} missing); "
                       "expected RUN_DIR/defense/METHOD")
    rec = read_json(defense_dir / DEFENSE_RECORD)
    run_dir = Path(rec.get("run_dir") or defense_dir.parent.parent)
    if not (run_dir / ATTACK_RECORD).is_file():
        run_dir = defense_dir.parent.parent
    attack_rec = read_json(run_dir / ATTACK_RECORD) if (run_dir / ATTACK_RECORD).is_file() else {}
    state = load_state(defense_dir / MODEL_FILE)
    if all(k.startswith("net.") or k in ("mean", "std") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    model_name = attack_rec.get("imported", {}).get("model_name") or attack_rec.get("spec", {}).get("model", "unknown")
    num_classes = attack_rec.get("dataset", {}).get("num_classes")
    result: dict[str, Any] = {
        "model_name": str(model_name),
        "num_classes": int(num_classes) if num_classes is not None else int(list(state.values())[-1].shape[0]),
        "model": {k: v.detach().cpu().clone() for k, v in state.items()},
        "defense": str(rec.get("method", defense_dir.name)),
        "clean_acc": float(rec["after"]["acc"]), "asr": float(rec["after"].get("asr", float("nan"))),
        "ra": float(rec["after"].get("ra", float("nan"))),
        "before": {k: float(v) for k, v in rec.get("before", {}).items()},
        "der": (round_value(der(rec["before"], rec["after"]), percent=True)
                if "asr" in rec.get("before", {}) and "asr" in rec["after"]
                else float("nan")),  # percent, from before/after (older records held a fraction)
    }
    path = out / DEFENSE_RESULT_FILE
    _atomic(path, lambda tmp: torch.save(result, tmp))
    write_json(out / "distox_defense.json", {k: v for k, v in rec.items() if k != "retain"} |
               {"retain": {k: v for k, v in rec.get("retain", {}).items() if k != "indices"}})
    return path
