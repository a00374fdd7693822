"""Small shared helpers: device resolution, seeding, logging setup."""
from __future__ import annotations

import hashlib
import logging
import platform
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

log = logging.getLogger("distox")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return dev


def batchnorm_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every BatchNorm layer of ``model`` — 1d/2d/3d, SyncBatchNorm, lazy ones:
    what distox treats as BatchNorm (frozen statistics, SAM's second pass, ANP's neurons, D3's
    norm rule)."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has any BatchNorm layer (:func:`batchnorm_modules`)."""
    return next(batchnorm_modules(model), None) is not None


@torch.no_grad()
def copy_state_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a snapshot of ``model.state_dict()`` (same keys) back into the model's own tensors.
    Unlike ``load_state_dict`` it needs none of PyTorch's per-module version metadata, which a
    ``{k: v.clone()}`` snapshot drops (torchvision's MnasNet refuses a state without it)."""
    for k, v in model.state_dict().items():
        v.copy_(state[k])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 over the dtype, shape and bytes of CPU tensors (bit-identity fingerprint)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: any dtype (bf16 too)
    return h.hexdigest()


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put every module of ``models`` in eval mode for the block and restore each module's own
    flag after (a model whose BatchNorm layers were set to eval on purpose keeps them so)."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


@contextmanager
def on_device(model: nn.Module, device: str | torch.device) -> Iterator[nn.Module]:
    """Move ``model`` to ``device`` for the block and back to the device its first parameter (or
    buffer) was on after: an analysis that runs a caller's model elsewhere leaves it where it was."""
    home = next(iter([*model.parameters(), *model.buffers()]), None)
    try:
        yield model.to(device)
    finally:
        if home is not None:
            model.to(home.device)


@contextmanager
def caller_rng_kept(device: torch.device) -> Iterator[None]:
    """Run code that draws random numbers (training, a training-mode forward with dropout) without
    touching the caller's global random state: torch's generator — and ``device``'s CUDA one — is
    forked here and restored after, so code that runs after ``purify`` draws the numbers it would
    have drawn anyway."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: leave them), restoring the count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_vendor() -> str:
    """The CPU vendor (``GenuineIntel``, ``AuthenticAMD``, ...; ``platform.machine()`` where
    /proc/cpuinfo names none). Float kernels (oneDNN, MKL) take other code paths on other CPU
    vendors, so weights after training match bit for bit only on the same vendor: results pinned
    exactly (tests, the README's demo table) are pinned per vendor."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
