"""A check on a freshly trained backdoored model's BatchNorm running statistics.

A BatchNorm layer answers in evaluation mode with the running mean and variance it gathered while
training. On a narrow network trained at a learning rate that is still high late in training, those
statistics can lag behind the weights' last steps far enough that the model, evaluated, sends most
clean images to one class: a PreAct-ResNet18 at width 0.125 trained with WaNet on Fashion-MNIST came
out at 12.20 % clean accuracy in evaluation mode, against 89.35 % for its clean twin and 87.25 % once
its statistics were gathered again over 2,000 clean training images. Too few training steps for a
layer's momentum leave the same mismatch (statistics still near their initial zero mean and unit
variance). Such a suspect is not what its recipe means to produce, and a defense's accuracy change
measured from it says nothing.

:func:`batchnorm_check` runs only where that failure is plausible (the model has BatchNorm layers
that track statistics, its clean reference is known, and its accuracy is more than :data:`GAP` points
below the reference's); it gathers the statistics again on a copy (the returned model is never
changed: an attack's result stays what its recipe trained) and reports both accuracies, so the run
record says what happened and the user is warned.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..defenses.bn_stats import reestimate_batchnorm
from ..metrics import evaluate
from ..utils import batchnorm_modules

#: Accuracy points below the clean reference's under which the statistics are checked, and by which
#: re-gathered statistics must do better for the check to report drift.
GAP = 10.0
#: Clean training images the statistics are gathered over (a seeded random subset).
CHECK_IMAGES = 2000


def batchnorm_check(model: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    acc: float, clean_acc: float | None, device: torch.device | str = "cpu",
                    seed: int = 0) -> dict[str, Any] | None:
    """Whether ``model``'s BatchNorm running statistics drifted in training (module docstring).

    Args:
        model: the trained model (left unchanged).
        train_x: clean training images (the statistics are gathered over :data:`CHECK_IMAGES` of them).
        test_x, test_y: the clean test set ``acc`` was measured on.
        acc: the model's clean test accuracy (percent) in evaluation mode.
        clean_acc: its clean reference's (percent), or None when there is none (no check).
        device: where to run.
        seed: picks the training images.

    Returns:
        None when nothing was checked or the re-gathered statistics do not gain more than
        :data:`GAP` points; otherwise ``{"acc", "clean_acc", "acc_reestimated", "images"}``.
    """
    tracked = any(m.track_running_stats and m.running_mean is not None for _, m in batchnorm_modules(model))
    if not tracked or clean_acc is None or acc >= clean_acc - GAP:
        return None
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train_x), generator=gen)[:CHECK_IMAGES]
    probe = copy.deepcopy(model)
    reestimate_batchnorm(probe, train_x[pick], device=device)
    again = evaluate(probe, test_x, test_y, device=device)["acc"]
    if again - acc <= GAP:
        return None
    return {"acc": round(acc, 2), "clean_acc": round(clean_acc, 2), "acc_reestimated": round(again, 2),
            "images": len(pick)}


def drift_message(check: dict[str, Any]) -> str:
    """The warning :func:`batchnorm_check`'s finding gives the user."""
    return (f"the backdoored model's clean accuracy in evaluation mode ({check['acc']:.2f} %) is far below its "
            f"clean reference's ({check['clean_acc']:.2f} %), and its BatchNorm running statistics gathered again "
            f"over {check['images']} clean training images give {check['acc_reestimated']:.2f} %: the statistics do "
            "not match the weights (too few training steps for the layers' momentum, a narrow model, or a learning "
            "rate still high at the end). The model is saved as trained; a defense's accuracy change measured from "
            "it means little: train longer, or with another seed or a lower final learning rate")
