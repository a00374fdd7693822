"""Models whose forward does not return a plain logits tensor, seen through one that does.

Every defense trains on ``(N, num_classes)`` logits (or log-probabilities). Models found in the
wild often return more:

- a Hugging Face ``ModelOutput`` or a dict with a ``"logits"`` entry, or any object with a
  ``logits`` attribute;
- a tuple or list whose first element is the logits (``return_dict=False`` in Hugging Face,
  ``(logits, features)`` in many research codes), or a named tuple with a ``logits`` field —
  torchvision's GoogLeNet and Inception-v3 return one **in training mode only**, with their
  auxiliary classifiers' outputs beside it;
- probabilities from a final softmax.

:func:`logits_view` measures what ``model`` returns for two images, in evaluation and in training
mode (the second without changing BatchNorm statistics or the global random state), and wraps it
in :class:`LogitsOnly` only when needed; :func:`unwrap` gives the caller's model back, trained in
place. ``distox.purify`` does both, so the purified model returns what the suspect returned.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..utils import caller_rng_kept

log = logging.getLogger(__name__)

#: Smallest probability taken to the log when a model returns probabilities (log 0 is -inf).
TINY_PROBABILITY = 1e-12


def logits_tensor(out: Any) -> torch.Tensor | None:
    """The logits inside a model output (see the module docstring), or None when there are none
    to find: a tensor as it is; ``out["logits"]`` or ``out.logits``; a tuple's or list's first
    element when that is a tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        found = out.get("logits")
        return found if isinstance(found, torch.Tensor) else None
    found = getattr(out, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def are_probabilities(out: torch.Tensor) -> bool:
    """Rows that are non-negative and sum to 1 (a final softmax), for more than one class."""
    return (out.ndim == 2 and out.shape[1] > 1 and bool((out >= 0).all())
            and torch.allclose(out.detach().float().sum(1), torch.ones(len(out), device=out.device), atol=1e-4))


class LogitsOnly(nn.Module):
    """``model`` with a forward that returns only its logits (:func:`logits_tensor`), and the
    log of its probabilities when it returns probabilities (``log_probs``). The wrapped model is
    ``self.model``: its weights are trained in place."""

    def __init__(self, model: nn.Module, log_probs: bool = False) -> None:
        super().__init__()
        self.model = model
        self.log_probs = log_probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = logits_tensor(self.model(x))
        if out is None:
            raise TypeError(f"{type(self.model).__name__} returned no logits tensor")
        return out.clamp_min(TINY_PROBABILITY).log() if self.log_probs else out


def _output_in_mode(model: nn.Module, example: torch.Tensor, train: bool) -> Any:
    """``model(example)`` in training or evaluation mode, with no trace left: the mode, every
    buffer (BatchNorm's running statistics) and the global random state are restored."""
    was_training = model.training
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        with caller_rng_kept(example.device), torch.no_grad():
            model.train(train)
            return model(example)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)


def logits_view(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` itself when it returns a logits tensor in both modes, else :class:`LogitsOnly`
    around it (logged). A structured output without a tensor to take is left as it is, for
    :func:`~distox.defenses.base.check_retain` to refuse with its message, as is an output the
    model cannot produce for ``example`` (the same check reports the model's own error). A model
    already wrapped (``distox purify`` wraps before its checks, then calls ``distox.purify``) is
    returned as it is, without probing it again."""
    if isinstance(model, LogitsOnly):
        return model
    try:
        outputs = [_output_in_mode(model, example, train) for train in (False, True)]
    except Exception:  # the model rejects the images: check_retain says so, with hints
        return model
    found = [logits_tensor(out) for out in outputs]
    structured = [type(out).__name__ for out in outputs if not isinstance(out, torch.Tensor)]
    probabilities = found[0] is not None and are_probabilities(found[0])
    if any(f is None for f in found) or not (structured or probabilities):
        return model
    what = []
    if structured:
        what.append(f"its logits from the {structured[0]} it returns"
                    + (" in training mode" if isinstance(outputs[0], torch.Tensor) else ""))
    if probabilities:
        what.append("the log of the probabilities it returns (a final softmax)")
    log.info("distox trains the model on %s; the purified model returns what the suspect did", " and ".join(what))
    return LogitsOnly(model, log_probs=probabilities)


def unwrap(model: nn.Module) -> nn.Module:
    """The caller's model inside a :class:`LogitsOnly` (any other model as it is)."""
    return model.model if isinstance(model, LogitsOnly) else model
