"""ACC, ASR, RA and DER (SPEC §2), all in percent like the paper's tables.

- ACC: accuracy on the clean test set.
- ASR: on poisoned test images whose true label differs from the target (all-to-one; all
  images for all-to-all), the fraction predicted as the attack's target label t(y).
- RA: on the same poisoned images, the fraction predicted as the true label.
- DER = (max(0, ASR_before − ASR_after) − max(0, ACC_before − ACC_after) + 100) / 2, in
  percent (the paper's (… + 1) / 2 on fractions, times 100).

Files hold them as printed: :func:`round_metrics` (two decimals for percentages).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import DistoxError
from .utils import eval_mode, resolve_device


@dataclass
class BackdoorTestSet:
    """Poisoned test images with the attack's target labels and the images' true labels."""

    x: torch.Tensor
    target: torch.Tensor
    true: torch.Tensor

    def __len__(self) -> int:
        return int(self.true.shape[0])


#: Evaluation batch on a CPU: measured fastest (BENCHMARKS.md, "Precision, memory format and
#: evaluation cadence": 128 images per batch beat 512-4096, whose activations overflow the caches).
CPU_EVAL_BATCH = 128
#: First evaluation batch tried on a GPU; halved while it runs out of memory.
GPU_EVAL_BATCH = 4096


def eval_batch_size(device: str | torch.device = "auto") -> int:
    """The default evaluation batch on ``device``: :data:`CPU_EVAL_BATCH` or :data:`GPU_EVAL_BATCH`."""
    return GPU_EVAL_BATCH if resolve_device(device).type == "cuda" else CPU_EVAL_BATCH


def logits(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
           device: str | torch.device = "auto") -> torch.Tensor:
    """Outputs (N, classes) of ``model`` in eval mode under ``torch.inference_mode``, as float32
    on the CPU (the model's mode is restored after). ``batch_size`` None: :func:`eval_batch_size`;
    a batch that runs out of GPU memory is retried at half the size."""
    dev = resolve_device(device)
    bs = int(batch_size) if batch_size is not None else eval_batch_size(dev)
    model.to(dev)
    with eval_mode(model):
        while True:
            try:
                with torch.inference_mode():
                    outs = [model(x[i:i + bs].to(dev)).float().cpu() for i in range(0, len(x), bs)]
                break
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    return torch.cat(outs) if outs else torch.empty(0, 0)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int | None = None,
            device: str | torch.device = "auto") -> torch.Tensor:
    """Arg-max predictions of ``model`` (:func:`logits`: eval mode, inference mode, batched)."""
    out = logits(model, x, batch_size, device)
    return out.argmax(1) if out.numel() else torch.empty(0, dtype=torch.long)


def percent(correct: torch.Tensor) -> float:
    """Mean of a boolean tensor, in percent (0 for an empty tensor)."""
    return 100.0 * float(correct.float().mean()) if correct.numel() else 0.0


def evaluate(model: nn.Module, clean_x: torch.Tensor, clean_y: torch.Tensor,
             backdoor: BackdoorTestSet | None = None, *, batch_size: int | None = None,
             device: str | torch.device = "auto") -> dict[str, float]:
    """Return ``{"acc": ..}`` plus ``"asr"`` and ``"ra"`` when a backdoor test set is given."""
    out = {"acc": percent(predict(model, clean_x, batch_size, device) == clean_y.cpu())}
    if backdoor is not None:
        pred = predict(model, backdoor.x, batch_size, device)
        out["asr"] = percent(pred == backdoor.target.cpu())
        out["ra"] = percent(pred == backdoor.true.cpu())
    return out


def der(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """Defense effectiveness rating in percent (0–100; 50: no change) from percent ACC/ASR
    before and after."""
    asr_drop = max(0.0, before["asr"] - after["asr"])
    acc_drop = max(0.0, before["acc"] - after["acc"])
    return (asr_drop - acc_drop + 100.0) / 2.0


def fmt(value: float) -> str:
    """Two decimals, as in the paper's tables."""
    return f"{value:.2f}"


#: Keys whose values are percentages (or percentage points): written with two decimals.
PERCENT_KEYS = frozenset({"acc", "asr", "ra", "der", "clean_acc", "clean_asr", "clean_ra", "acc_drop", "floor"})
#: Significant digits kept of any other float written to a file (losses, learning rates, distances).
SIGNIFICANT = 6


def round_value(value: float, percent: bool = False) -> float:
    """``value`` as written to files: two decimals when ``percent``, else :data:`SIGNIFICANT`
    significant digits (no ``16.509999334812164``)."""
    value = float(value)
    if percent:
        return round(value, 2)
    return float(f"{value:.{SIGNIFICANT}g}")


def round_metrics(obj: Any) -> Any:
    """Floats of a record, recursively through dicts and lists, rounded by :func:`round_value`:
    values under a :data:`PERCENT_KEYS` key to two decimals, other floats to
    :data:`SIGNIFICANT` significant digits; everything else unchanged."""
    if isinstance(obj, Mapping):
        return {k: round_value(v, k in PERCENT_KEYS) if _is_float(v) else round_metrics(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_metrics(v) for v in obj]
    return round_value(obj) if _is_float(obj) else obj


def _is_float(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def eval_due(epoch: int, every: int = 1, last: int | None = None) -> bool:
    """Whether a run evaluating every ``every`` epochs and at its final epoch ``last``
    evaluates after epoch ``epoch`` (1-based)."""
    if int(every) < 1:
        raise DistoxError(f"eval_every must be >= 1; got {every}")
    return epoch % int(every) == 0 or epoch == last


class Evaluator:
    """ACC/ASR/RA as the training loop's ``on_epoch_end`` callback, every ``every`` epochs
    and at epoch ``last`` (the run's final one, when given); other epochs add nothing to the
    history row. Evaluation runs under ``torch.inference_mode`` (:func:`predict`)."""

    def __init__(self, clean_x: torch.Tensor, clean_y: torch.Tensor,
                 backdoor: BackdoorTestSet | None = None, *, batch_size: int | None = None,
                 device: str | torch.device = "auto", every: int = 1, last: int | None = None) -> None:
        if int(every) < 1:
            raise DistoxError(f"eval_every must be >= 1; got {every}")
        self.clean_x, self.clean_y, self.backdoor = clean_x, clean_y, backdoor
        self.batch_size, self.device = batch_size, device
        self.every, self.last = int(every), last

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) is evaluated (:func:`eval_due`)."""
        return eval_due(epoch, self.every, self.last)

    def __call__(self, epoch: int, model: nn.Module) -> dict[str, float]:
        if not self.due(epoch):
            return {}
        return evaluate(model, self.clean_x, self.clean_y, self.backdoor,
                        batch_size=self.batch_size, device=self.device)
