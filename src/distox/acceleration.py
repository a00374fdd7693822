"""How fast the shared training loop runs: numeric precision, memory format, compilation.

Three options of :class:`distox.training.LoopConfig`, also taken by every defense
(:class:`distox.defenses.base.Defense`) and attack run (:class:`distox.experiment.AttackSpec`):

* ``precision``:

  - ``"auto"`` (default): bf16 autocast on CUDA, fp32 on CPU — what the loop always did, so
    default results stay bit-identical;
  - ``"fp32"``: no autocast anywhere;
  - ``"bf16"``: bf16 autocast (matmuls and convolutions in bf16, reductions and losses in
    fp32; the weights stay fp32). On a CPU only where it is native — an x86 CPU with
    AVX512-BF16 or AMX (:func:`cpu_has_native_bf16`); elsewhere it is **refused** with a
    :class:`PrecisionError` rather than silently run in fp32 or emulated (slower than fp32),
    so that a run recorded as bf16 was trained in bf16;
  - ``"fp16"``: fp16 autocast with dynamic loss scaling (``torch.amp.GradScaler``), for GPUs
    without bf16; CUDA only (refused on CPU).

* ``channels_last``: convolution weights and input batches in NHWC memory order
  (``torch.channels_last``), which CPU (oneDNN) and GPU convolution kernels run faster on;
  the model is put back in the standard order when training ends.
* ``compile``: train through ``torch.compile(model)``. Where the compiler is missing or fails
  on the model, training goes on eagerly from the same state with a logged warning
  (:func:`compile_model`; the loop also retries its first step eagerly).

What each costs or saves is measured in BENCHMARKS.md ("Precision, memory format and
evaluation cadence"); none is on by default. A run records an option, and counts it in its
identity (bench cell keys, checkpoint identities, run specs), only when it differs from its
default (:func:`non_default`), so results computed before these options existed keep theirs.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import DistoxError, first_line

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The options and their defaults (the loop's behaviour before they existed).
DEFAULTS: dict[str, Any] = {"precision": "auto", "channels_last": False, "compile": False}


class PrecisionError(DistoxError):
    """A precision this device cannot run (fp16 on a CPU, bf16 on a CPU without native bf16)."""


def check_options(precision: str = "auto", channels_last: bool = False, compile: bool = False) -> dict[str, Any]:
    """Validated options as ``{"precision", "channels_last", "compile"}``; raises
    :class:`DistoxError` naming a bad value."""
    if precision not in PRECISIONS:
        raise DistoxError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    for name, value in (("channels_last", channels_last), ("compile", compile)):
        if not isinstance(value, bool):
            raise DistoxError(f"{name} must be true or false; got {value!r}")
    return {"precision": precision, "channels_last": channels_last, "compile": compile}


def non_default(options: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that are :data:`DEFAULTS` keys with a non-default value."""
    return {k: options[k] for k in DEFAULTS if k in options and options[k] != DEFAULTS[k]}


def drop_defaults(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without the :data:`DEFAULTS` keys that hold their default (what identifies a
    run: a spec dict, a defense's parameters)."""
    return {k: v for k, v in record.items() if not (k in DEFAULTS and v == DEFAULTS[k])}


def cpu_has_native_bf16() -> bool:
    """True on an x86 CPU with AVX512-BF16 or AMX-BF16 instructions (Intel Cooper Lake /
    Sapphire Rapids and later, AMD Zen 4 and later), where bf16 matmuls and convolutions run
    natively; bf16 elsewhere is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:  # pragma: no cover - a torch built without the CPU probes
            continue
    return False


@dataclass(frozen=True)
class Plan:
    """A resolved precision: ``name`` (fp32, bf16 or fp16), the autocast ``dtype`` (None: no
    autocast) and whether gradients are loss-scaled."""

    name: str
    dtype: torch.dtype | None
    scaled: bool
    device_type: str

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast context (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh loss scaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.scaled else None


def resolve_precision(precision: str, device: torch.device, amp: bool = True) -> Plan:
    """The :class:`Plan` of ``precision`` on ``device`` (``amp=False`` turns ``"auto"`` into
    fp32 on CUDA too: the loop's older switch, kept for callers that set it); raises
    :class:`PrecisionError` where the device cannot run it (see the module docstring)."""
    check_options(precision)
    kind = device.type
    if precision == "auto":
        precision = "bf16" if amp and kind == "cuda" else "fp32"
        if precision == "bf16":  # exactly the loop's old behaviour: no capability check
            return Plan("bf16", torch.bfloat16, False, kind)
    if precision == "fp32":
        return Plan("fp32", None, False, kind)
    if kind not in ("cpu", "cuda"):
        raise PrecisionError(f"precision {precision!r} is supported on cpu and cuda devices; got {kind!r} "
                             "(use precision 'fp32')")
    if precision == "fp16":
        if kind != "cuda":
            raise PrecisionError("precision 'fp16' (float16 with loss scaling) needs a CUDA GPU; on a CPU use "
                                 "'fp32', or 'bf16' where the CPU has native bf16")
        return Plan("fp16", torch.float16, True, kind)
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionError("this GPU has no bf16 support; use precision 'fp16' (with loss scaling) or 'fp32'")
    if kind == "cpu" and not cpu_has_native_bf16():
        raise PrecisionError("this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 would be emulated "
                             "and slower than fp32; use precision 'fp32' (or 'auto')")
    return Plan("bf16", torch.bfloat16, False, kind)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d batch in channels-last memory order; any other tensor unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, or ``model`` itself (with a logged warning) when compiling
    cannot even start (no TorchDynamo for this Python, a torch built without it). Compilation
    itself is lazy: a compiler that fails on the first batch is caught by the training loop,
    which then trains eagerly."""
    try:
        return torch.compile(model)
    except Exception as exc:  # any failure means: run eagerly
        log.warning("torch.compile is unavailable here (%s); training without compilation", first_line(exc))
        return model
