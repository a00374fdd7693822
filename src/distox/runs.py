"""Run directories: safetensors weights and JSON records, written atomically.

A reader never sees a half-written file: every write goes to a temporary file in the same
directory and is moved into place with :func:`os.replace`. Files get the permissions any new
file of the user gets (0666 less the umask), not the temporary file's private 0600.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import DistoxError, first_line

#: Version of the run-directory format (``attack.json``/``defense.json`` "format_version").
FORMAT_VERSION = 1


class RunError(DistoxError):
    """A run directory that is missing, incomplete or of an unknown format."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place with the
    user's default file mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text + "\n")

    _atomic(Path(path), write)


def _json_default(o: Any) -> Any:
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON: {exc}") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save named tensors as safetensors, atomically (tensors made contiguous, on CPU)."""
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(clean, tmp, metadata=metadata))


def save_model(path: str | os.PathLike, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Save a model's state dict (parameters and buffers) as safetensors, atomically (with
    ``metadata``, string pairs stored in the file's header)."""
    state = model.state_dict()
    seen: dict[int, str] = {}
    tensors = {}
    for k, v in state.items():  # safetensors refuses shared storage: clone aliases
        key = v.data_ptr()
        tensors[k] = v.clone() if key in seen and v.numel() else v
        seen.setdefault(key, k)
    save_tensors(path, tensors, metadata=metadata)


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string pairs in a ``.safetensors`` file's header (``{}`` for any other file, or one
    without them); reading them loads no tensor."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}  # load_state reports a corrupt file with its own message


#: Keys under which checkpoints commonly nest their state dict (``torch.save({"model_state_dict":
#: model.state_dict(), "epoch": 3, ...})``); :func:`load_state` unwraps the first that holds one.
STATE_WRAPPERS = ("state_dict", "model_state_dict", "model")


def load_state(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors``, or from a ``.pt``/``.pth`` file with
    ``torch.load(weights_only=True)``. Full unpickling needs ``trust_pickle=True``: a pickle
    from an untrusted party can execute arbitrary code.

    A checkpoint dict holding the state dict under one of :data:`STATE_WRAPPERS` (next to
    ``epoch``, ``optimizer``, ...) is unwrapped; ``module.`` prefixes (DataParallel) are dropped.
    Raises :class:`RunError` with one message per case: missing, empty, corrupt safetensors, a
    file that is no PyTorch checkpoint at all, a corrupt one, pickled objects without
    ``trust_pickle``, or a dict without tensors (its keys listed).
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise RunError(f"weights file {path} is empty")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise RunError(f"{path} is not a readable safetensors file (corrupt or truncated?): {exc}") from None
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in STATE_WRAPPERS if k in obj and _is_tensor_dict(_as_state(obj[k]))), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:12])) + (", ..." if len(obj) > 12 else "")
            raise RunError(f"{path} holds a dict with keys {keys}, not a state dict of tensors; distox looks for "
                           f"one at the top level or under {', '.join(map(repr, STATE_WRAPPERS))}")
        obj = _as_state(inner)
    if not isinstance(obj, dict) or not obj:
        raise RunError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _as_state(obj: Any) -> Any:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


#: First bytes of what ``torch.save`` writes: a zip archive, or (old format) a pickle.
_ZIP_MAGIC, _PICKLE_PROTO = b"PK\x03\x04", 0x80


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    """``torch.load`` with a message that says what is wrong with the file."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if not (head.startswith(_ZIP_MAGIC) or (len(head) > 1 and head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5)):
        hint = " (it looks like safetensors: rename it to .safetensors)" if head[8:9] == b"{" else ""
        raise RunError(f"{path} is not a PyTorch checkpoint (neither the zip archive nor the pickle that "
                       f"torch.save writes): the file is corrupt or of another format{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "global" in str(exc).lower():
            raise RunError(
                f"{path} is not a plain tensor state dict: it contains pickled Python objects, which can "
                "execute code when loaded. Convert it to safetensors, or pass trust_pickle=True "
                "(CLI: --trust-pickle) only if you trust its source."
            ) from None
        raise RunError(f"{path} is a corrupt PyTorch checkpoint: {first_line(exc).split('. ')[0]}") from None
    except Exception as exc:  # truncated archive, unreadable record, ...
        raise RunError(f"{path} is a corrupt or truncated PyTorch checkpoint: {first_line(exc).split('. ')[0]}") from None


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> nn.Module:
    """``load_state_dict(strict=True)`` with a readable report of missing/unexpected keys and
    shape mismatches. A state without PyTorch's per-module version metadata (safetensors keeps
    none) loads with the model's own: some modules read it (torchvision's MnasNet refuses a state
    without a version)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
        if wrong:
            parts.append("shape mismatches: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:8]))
        raise RunError(f"{source} do not match the model architecture: " + "; ".join(parts))
    if getattr(state, "_metadata", None) is None and getattr(own, "_metadata", None) is not None:
        state = OrderedDict(state)
        state._metadata = own._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state)
    return model
