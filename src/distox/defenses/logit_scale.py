"""How confident a suspect model is, and bringing it to a common confidence before D3 (distox's
``logit_scale`` option; the faithful presets never use it).

D3's hinge bounds each retain image's cross-entropy by ε (0.1) and its norm constraint keeps
every selected weight at its starting norm. Both read the *scale* of the logits, which the
predictions do not: a model trained with label smoothing has small logits (at smoothing 0.2 no
clean loss can fall below 0.1: the hinge is never slack), one trained long without weight decay
large ones, and a classifier whose weight and bias are multiplied by c predicts exactly the same
classes. Measured on the study's models (BENCHMARKS.md "Sixteenth round"), the default's result
moves with c.

The scale a model's logits have is measured as in temperature scaling (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017): the temperature T that minimises the mean
cross-entropy of logits / T on the retain images. Dividing the final classifier's weight and bias
by T gives the same predictions at the confidence the retain data support; D3 then runs from
there, and the classifier is multiplied back by T afterwards, so the returned model keeps the
suspect's scale. :func:`fit_temperature` reads the model's outputs and the retain labels only.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..metrics import logits as model_outputs

#: Temperatures beyond this factor either way are not a scale but a model whose outputs do not
#: predict the labels (no finite T minimises the loss of one worse than uniform): left as they are.
TEMPERATURE_LIMIT = 100.0


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The temperature T > 0 minimising mean CE(logits / T, y): Newton steps on log T (the loss is
    smooth and, in log T, has one minimum), deterministic, kept within 1/TEMPERATURE_LIMIT to
    TEMPERATURE_LIMIT (outputs that predict the labels worse than uniform guessing reach the upper
    end). Logits that are all equal give 1."""
    logits, y = logits.detach().double().clone(), y.long()  # clone: not an inference-mode tensor
    if float(logits.std()) == 0.0:
        return 1.0
    bound = math.log(TEMPERATURE_LIMIT)
    log_t = torch.zeros((), dtype=torch.float64)
    with torch.enable_grad():  # also when called under no_grad
        for _ in range(100):
            log_t.requires_grad_(True)
            loss = F.cross_entropy(logits * torch.exp(-log_t), y)
            (grad,) = torch.autograd.grad(loss, log_t, create_graph=True)
            (hess,) = torch.autograd.grad(grad, log_t)
            grad, hess = grad.detach(), hess.detach()
            step = (grad / hess if float(hess) > 0 else grad.sign() * 0.5).clamp(-1.0, 1.0)
            log_t = (log_t.detach() - step).clamp(-bound, bound)
            if abs(float(step)) < 1e-10:
                break
    return min(TEMPERATURE_LIMIT, max(1.0 / TEMPERATURE_LIMIT, math.exp(float(log_t))))


@torch.no_grad()
def scale_classifier(head: nn.Module, factor: float) -> None:
    """Multiply the classifier's weight and bias by ``factor`` (> 0), in place."""
    head.weight.mul_(factor)
    if getattr(head, "bias", None) is not None:
        head.bias.mul_(factor)


def scales_logits(model: nn.Module, head: nn.Module, x: torch.Tensor, device: torch.device | str,
                  factor: float = 2.0) -> bool:
    """Whether multiplying ``head``'s weight and bias by ``factor`` multiplies the model's logits
    on ``x`` by it, up to a shift per image (the class probabilities are those of the logits times
    ``factor``: so for a model that returns ``log_softmax`` of them too). False where something
    after the classifier is not positively homogeneous, e.g. a normalisation. The model is left as
    it was."""
    before = model_outputs(model, x, device=device)
    scale_classifier(head, factor)
    try:
        after = model_outputs(model, x, device=device)
    finally:
        scale_classifier(head, 1.0 / factor)
    expected, got = F.log_softmax(before * factor, 1), F.log_softmax(after, 1)
    return bool(torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()) + 1e-6))
