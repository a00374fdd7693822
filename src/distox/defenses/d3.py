"""D3 — Distance-Driven Detoxification (Wei et al., "Backdoor Mitigation by Distance-Driven
Detoxification", ICCV 2025, arXiv 2411.09585), SPEC §1.

Problem (paper Eq. "constrained form"): max_θ d(θ_s, θ_init,s) s.t. E[ℓ(f_θ(x), y)] ≤ ε,
θ_s ∈ S. Solved, as in the authors' reference code, as the penalised projected problem

    minimise   λ · mean_i relu(CE(f_θ(x_i), y_i) − ε)  −  Σ_{W ∈ θ_s} ‖W − W_init‖_p
    s.t.       ‖W‖_p = ‖W_init‖_p  for every selected W   (projection after every step)

with the total divided by (λ + 1) when λ > 1. Selected weights θ_s are the ``weight`` of
every Linear/Conv2d inside the selected modules (the paper: the final classifier), and the
query/key/value projection ``nn.MultiheadAttention`` keeps outside any Linear under the
whole-network selections (:func:`~distox.models.selection.attention_projections`). Biases and
BatchNorm are trained but not part of the distance.

Presets: ``reference`` and ``paper`` are the reference code's and the paper's settings,
unchanged. ``default`` (distox's, since BENCHMARKS.md "Twenty-fifth round") keeps the paper's distance
on the final classifier and asks the clean-loss bound also of an adversarial copy of every retain image,
crafted once against the suspect before any weight moves (``shared_radius=0.03``,
``shared_schedule="once"``, ``shared_steps=5``: :class:`distox.defenses.universal.CraftedOnceCopies`,
SAU's shared adversarial examples of the run's first step); everything else is ``all-layers``'s. Since
the thirtieth round its restarted classifier also re-fits to the suspect's own outputs on the clean retain
images (:data:`SOFT_TARGETS`; on models without BatchNorm, and since the thirty-first round on every model),
and since the thirty-third round it trains a model with BatchNorm at learning rate 0.03 too (:data:`WITH_BATCHNORM`,
as it has a model without since the sixth round); since the thirty-fifth round the soft targets go to the adversarial
copies only, the plain images on their labels (:data:`SOFT_TARGETS_ON_COPIES`). ``soft-lr03`` is the default of the
thirty-third and thirty-fourth rounds, ``soft`` of the thirty-first and thirty-second, ``copies`` the default as it
was before the thirtieth.
``all-layers`` (the default through the twenty-fourth round, chosen on five architectures, BENCHMARKS.md "A
default that purifies any model") applies the same objective to *every* Linear and Conv2d weight — the
paper's argument that the backdoor loss grows with the distance from the poisoned weights,
applied where a backdoor can live in the features and not only in the classifier — with the
paper's random warm start on the final classifier only, λ 10, ε 0.1, 12 epochs at batch 32, and
each retain image overlaid with another one of its batch at a weight up to 0.3, label kept
(``blend=0.3``, :func:`distox.training.blend_batch`: it made removal reliable across retain
draws, BENCHMARKS.md "Fourth round"; ``blend=0`` is that preset as it was before). On a model
without any BatchNorm layer both keep the distance on the final classifier
at learning rate 0.03 (``norm_rule=True``, :data:`WITHOUT_BATCHNORM`; BENCHMARKS.md "Sixth
round": there the all-layer distance cost accuracy and removed no more). With few retain images
both train at least ``min_steps`` optimiser steps (600; 1,128 on a model without
BatchNorm, "Seventeenth round"): the epochs grow until the run makes that many
(:meth:`D3.epochs_for`; BENCHMARKS.md "Seventh round"). In a model whose
classifier is a convolution (no nn.Linear: a 1×1 conv's class maps, averaged), ``layers="auto"``
and the BatchNorm rule take that conv for the classifier, but the warm start turns an nn.Linear
classifier only (:func:`linear_classifier`; BENCHMARKS.md "Eighth round").

Example:
    >>> result = D3()(suspect_model, retain_split)               # the default preset
    >>> result = D3(preset="paper", epochs=20)(suspect_model, retain_split)
    >>> result.model            # purified copy; result.history: per-epoch loss/distance
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..acceleration import resolve_precision
from ..data.core import ImageSplit
from ..metrics import Evaluator, logits as model_outputs
from ..models.selection import (SelectionError, classifier_name, linear_forward_order, linear_head, owning_module,
                                select_weights)
from ..training import Batches, Checkpoint, LoopConfig, TrainingDiverged, TrainState, make_optimizer, saved_identity, train
from ..utils import copy_state_into, eval_mode, has_batchnorm
from .base import Defense, DefenseError
from .anchor import Anchor
from .bn_stats import STALE_SHARE, reestimate_batchnorm, stale_share
from .d3_auto import auto_eps, auto_or_float, check_auto, fit_auto
from .d3_kernels import fused_distances, fused_project, use_fused
from .fisher_metric import clean_fisher, fisher_metric
from .heldout import EpochChooser, accuracy, resolve_tolerance, split_retain
from .input_prune import prune_inputs
from .logit_scale import TEMPERATURE_LIMIT, fit_temperature, scale_classifier, scales_logits
from .probe import layer_input
from .registry import register
from .self_distill import SuspectTargets, distillation_loss
from .universal import SHARED_SCHEDULES, CraftedOnceCopies, SharedAdversarialCopies, UniversalPerturbation
from .weight_average import WeightAverage, averaging_start

log = logging.getLogger(__name__)

#: Named presets: complete sets of hyper-parameters; an explicit argument overrides its preset.
#: ``reference`` and ``paper`` are the faithful ones (the reference code's defaults and the
#: paper's λ = 10) and stay exactly as they are; ``default`` is distox's own (what
#: ``D3()`` and ``distox.purify`` run): ``all-layers`` (the default through the twenty-fourth round,
#: BENCHMARKS.md "A default that purifies any model", kept so that every earlier result reproduces)
#: with the distance on the final classifier and the clean-loss bound also on adversarial copies of
#: the retain images crafted once against the suspect (BENCHMARKS.md "Twenty-fifth round": on 26 cells of
#: study and user models 24 under the ASR bar against all-layers' 21, at −2.11 ACC points on average against
#: −3.06; 12 of 12 check cells against 11); since the thirtieth round its rule adds the suspect's soft targets
#: (:data:`SOFT_TARGETS`; since the thirty-first round on models with BatchNorm too), since the thirty-fifth on
#: the copies only (:data:`SOFT_TARGETS_ON_COPIES`).
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"lmd": 0.5, "eps": 0.1},
    "paper": {"lmd": 10.0, "eps": 0.1},
    "all-layers": {"lmd": 10.0, "eps": 0.1, "layers": "all", "init": "random", "init_layers": "classifier",
                   "epochs": 12, "batch_size": 32, "augment": False, "blend": 0.3, "norm_rule": True,
                   "min_steps": 600, "input_prune": True, "bn_recalibrate": "auto"},
}
PRESETS["default"] = {**PRESETS["all-layers"], "layers": "auto", "shared_radius": 0.03, "shared_schedule": "once",
                      "shared_steps": 5}
#: ``copies``: the default from the twenty-fifth through the twenty-ninth round (on models with BatchNorm through
#: the thirtieth), kept so that those rounds' results reproduce: the same options, its rule without the soft
#: targets (:data:`RULE_EXTRAS`).
PRESETS["copies"] = dict(PRESETS["default"])
#: ``soft``: the default of the thirty-first and thirty-second rounds, kept so that their results reproduce: the same
#: options and soft targets, on a model with BatchNorm at the preset's lr 0.01 (:data:`BATCHNORM_RULES`).
PRESETS["soft"] = dict(PRESETS["default"])
#: ``soft-lr03``: the default of the thirty-third and thirty-fourth rounds (D3 revision 6), kept so that their results
#: reproduce: ``soft`` at lr 0.03 on a model with BatchNorm (:data:`WITH_BATCHNORM`), the soft targets on the plain
#: retain images and their copies alike.
PRESETS["soft-lr03"] = dict(PRESETS["default"])
#: What ``norm_rule=True`` (the ``default`` preset) runs instead on a model without any
#: BatchNorm layer, for each of these options the caller did not set: the distance on the final
#: classifier only, at learning rate 0.03. Measured (BENCHMARKS.md "Sixth round": two ViTs, a
#: GroupNorm CNN, two CNNs without normalisation): there the all-layer distance cost 0.5–7 accuracy
#: points more and removed no more — a likely reason: a BatchNorm after each turned conv
#: re-normalises what it passes on; without one, turning the weights changes the scale of
#: everything downstream — and at lr 0.01 the classifier, restarted from a random direction, had
#: not re-fitted in 12 epochs (the retain loss ended above plain fine-tuning's); at 0.03 it had.
#: A classifier that is a convolution counts (``layers="auto"``), though the warm start leaves it
#: where it is (:func:`linear_classifier`): on such a model without normalisation the rule kept
#: 2.5 points more at 3,000 images than the all-layer distance (BENCHMARKS.md "Eighth round").
#: If the loss diverges at the larger rate, :meth:`D3.fit` runs again from the same weights at the
#: caller's rate (``norm_rule_resolved["diverged_lr"]``).
#: And a floor of 1,128 optimiser steps instead of the preset's 600 (``min_steps``): the steps the
#: default makes on 3,000 images (12 epochs of 94 batches), so that with fewer images the restarted
#: classifier gets as many steps to re-fit as with 3,000 (BENCHMARKS.md "Seventeenth round": with 500
#: and 1,000 images it kept 1.6–3.9 points more in every development cell and passed 16 of 20 check
#: cells against 11, though 15 of 24 against 17 on six MLPs, LeNet-5s and a CNN run after it was chosen; on
#: BatchNorm models, whose features D3 turns, more steps were a trade).
WITHOUT_BATCHNORM: dict[str, Any] = {"layers": "auto", "lr": 0.03, "min_steps": 1128}
#: What the ``default`` preset's rule runs on every model since the thirty-first round (on models without
#: BatchNorm, beside :data:`WITHOUT_BATCHNORM`, since the thirtieth; ``copies`` and ``all-layers`` keep the rule
#: without it): the suspect's own outputs on the plain retain images as soft targets for the restarted
#: classifier's re-fit, half the per-image clean loss (``distill=0.5``, ``distill_source="retain"``,
#: :mod:`distox.defenses.self_distill`), the half scaled down where a run repeats the images over more epochs
#: than the preset's 12 (``distill_scaled``: 0.5 · 12 / E, so each image is fitted to the suspect's outputs as
#: often as in a 12-epoch run; the steps floor's epochs with few images, or the caller's). Measured (BENCHMARKS.md
#: "Twenty-ninth round", "Thirtieth round"; models without BatchNorm, Fashion-MNIST): at 3,000 images 43 of 47
#: cells under the ASR bar as without it (development and check models at two draws), mean ACC change −1.83
#: against −2.17 and worst −4.45 against −5.80 (1.55 points kept where the rule without it lost most, 0.9 lost
#: where it lost little); with 1,000 images 11 of 11 development cells as before at −3.40 against −4.44 and 13 of 14 check
#: cells as before at −3.93 against −5.87; with 500, 9 of 11 against 10 at −5.80 against −7.14 and 13 of 14
#: against 14 at −6.83 against −8.48. On models with BatchNorm (BENCHMARKS.md "Thirty-first round", where the
#: default's rule changed nothing before): at 3,000 images 18 of 20 cells under the ASR bar against 20 (four
#: development models and six check models, each at two draws: a VGG BadNets trained with augmentation keeps
#: 5.5–5.9 % against 3.94 at both), mean ACC change −1.21 against −2.25, worst −5.45 against −7.65; with 500
#: images 12 of 14 against 11 at −5.90 against −7.79. Not applied beside a ``universal_radius``.
SOFT_TARGETS: dict[str, Any] = {"distill": 0.5, "distill_source": "retain", "distill_scaled": True}
#: What the ``default`` preset's rule runs on every model since the thirty-fifth round: :data:`SOFT_TARGETS` on the
#: adversarial copies only, each copy fitted to the suspect's output on its clean image, the plain retain images to
#: their labels alone (``distill_on="copies"``). Measured (BENCHMARKS.md "Thirty-fourth round", "Thirty-fifth round";
#: 3,000 images): on 26 cells of models with BatchNorm 22 under the ASR bar against 21 at −1.01 ACC points on average
#: against −1.45 (worst −4.10 against −4.75), the check models of the thirty-first and thirty-fourth rounds cleared
#: (12 of 12 cells against 8, a ResNeXt-like network trained on shifted images among them), but the thirty-third
#: round's DenseNet-like check model left at both draws (2.79, 2.11 % against 2.04; 1 of 2 before) and a development
#: ConvMixer at both (2.30, 2.41 % against 2.00); on 47 cells of models without BatchNorm (two draws) 45 against 43 at −1.19 against −1.83
#: (worst −4.30 against −4.45), 28 of 28 check cells against 26, a plain CNN's Blended backdoor left at one draw
#: (7.61 % against 5.64); on the 30 models of the DER bar (seed 0) 30 under the bar against 27, the higher mean DER on
#: five of six architectures against three. With 500 images it passes more (33 of 38 cells against 30) at 0.2–0.8
#: points more lost, with 1,000 too (31 of 32 against 30) at 0.2–0.5 more. Why: the suspect's soft targets cost a copy its label (the copies' error at the last epoch
#: 0.08–0.18 with them on every image, 0.04–0.08 without), so each copy keeps to the suspect's clean answer while
#: the plain images keep to their labels.
SOFT_TARGETS_ON_COPIES: dict[str, Any] = {**SOFT_TARGETS, "distill_on": "copies"}
#: The options a preset's rule sets on every model, with or without BatchNorm (beside :data:`WITHOUT_BATCHNORM`
#: on one without; read when a run starts).
RULE_EXTRAS: dict[str, dict[str, Any]] = {"default": SOFT_TARGETS_ON_COPIES, "soft": SOFT_TARGETS,
                                          "soft-lr03": SOFT_TARGETS}
#: What the ``default`` preset's rule runs on a model with BatchNorm since the thirty-third round, beside the soft
#: targets: the learning rate 0.03 that a model without BatchNorm has run at since the sixth round (the rate the rule
#: gives every model, then). Measured (BENCHMARKS.md "Thirty-third round"): with the classifier distance, the copies
#: and the soft targets, the rate that the sixth round had found to leave a VGG Blended's backdoor under the all-layer
#: distance cleared a ConvMixer's frame backdoor (a user model, 4.96 and 19.01 % left at 0.01) at about the
#: accuracy of 0.01, and kept as much or more on the study's BatchNorm models. The ``soft`` preset keeps 0.01.
WITH_BATCHNORM: dict[str, Any] = {"lr": 0.03}
#: The options a preset's rule sets on a model with BatchNorm (beside :data:`RULE_EXTRAS`).
BATCHNORM_RULES: dict[str, dict[str, Any]] = {"default": WITH_BATCHNORM, "soft-lr03": WITH_BATCHNORM}
DEFAULT_PRESET = "default"
#: What the ``default`` preset ran at earlier D3 revisions, by the revision that changed it: before 4 what ``copies``
#: runs now on every model; before 5 on a model with BatchNorm ``copies`` too (revision 4 gave the soft targets to
#: models without it), before 6 ``soft`` (revision 6 gave such models lr 0.03), before 7 on every model
#: ``soft-lr03`` (revision 7 gave the soft targets to the copies only).
DEFAULT_BEFORE: tuple[tuple[int, bool | None, str], ...] = (
    (4, None, "copies"), (5, True, "copies"), (6, True, "soft"), (7, None, "soft-lr03"))


def preset_now(preset: str, revision: int | None, batchnorm: bool | None) -> str:
    """The preset that runs today what ``preset`` ran at D3 ``revision`` (None: a record from before revisions
    were recorded) on a model with BatchNorm (``batchnorm``; None: not known, then only the change every model
    had counts): ``default`` of revisions before 7 is ``copies``, ``soft`` or ``soft-lr03`` (:data:`DEFAULT_BEFORE`);
    every other preset, and ``default`` of revision 7 on, keeps its name."""
    if preset != "default":
        return preset
    for below, needs_batchnorm, name in DEFAULT_BEFORE:
        if (revision or 0) < below and (needs_batchnorm is None or batchnorm is needs_batchnorm):
            return name
    return preset
#: What a preset leaves unset (the reference code's values).
FALLBACK: dict[str, Any] = {
    "lmd": 0.5, "eps": 0.1, "p": 2.0, "init": "random", "layers": "auto", "freeze_bn": False, "momentum": 0.9,
    "select": "last", "val_fraction": 0.2, "tolerance": "auto", "min_tolerance": 0.5,
    "lmd_control": "constant", "lmd_range": (0.5, 10.0), "init_layers": "selected", "lmd_rate": 0.05,
    "layer_weighting": "sum", "distill": 0.0, "distill_temperature": 4.0, "distill_source": "batch",
    "distill_schedule": "constant", "distill_scaled": False, "distill_on": "both",
    "head_bias": "keep", "norm_rule": False, "min_steps": 0, "input_prune": False, "classifier_lr": None,
    "bn_recalibrate": False,
    "head_warmup": 0, "sam_rho": None, "logit_scale": False, "average": 0.0, "classifier_weight": 1.0,
    "universal_radius": 0.0, "shared_radius": 0.0, "shared_steps": 2, "shared_fraction": 1.0, "shared_schedule": "batch",
    "shared_escalate": 1.0,
    "warmup": 0.0, "anchor": 0.0,
}
#: :class:`Defense` arguments a preset may set (an explicit argument still wins).
LOOP_KEYS = ("epochs", "batch_size", "lr", "augment", "blend")
WARM_STARTS = ("random", "far", "middle", "noise", "near", "means", "means-orthogonal")
SELECTIONS = ("last", "heldout")
LMD_CONTROLS = ("constant", "geometric", "heldout", "loss")
INIT_LAYERS = ("selected", "classifier", "auto", "linear-head")
LAYER_WEIGHTINGS = ("sum", "angle", "fisher", "size", "size-median")
#: ``layer_weighting="size"``: the weight norm below which a weight's distance keeps weight 1 — the
#: median norm of the VGG Blended development model's weights, the largest of the three development
#: models' (BENCHMARKS.md "Twentieth round").
REFERENCE_NORM = 5.06
HEAD_BIASES = ("keep", "zero")
#: ``distill_source``: the suspect scores the images the loop trains on (``"batch"``: overlaid, augmented) or
#: its outputs on the plain retain images are looked up by index (``"retain"``).
DISTILL_SOURCES = ("batch", "retain")
#: ``distill_schedule``: α the same in every epoch (``"constant"``) or falling linearly to 0 by the last epoch
#: (``"decay"``: the run ends on the labels alone).
DISTILL_SCHEDULES = ("constant", "decay")
#: ``distill_on``: with copies, which images get the soft targets (the plain images and copies, or one of them)
DISTILL_ON = ("both", "images", "copies")


def lp_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Entry-wise p-norm of a tensor (p = 2: Frobenius)."""
    return torch.linalg.vector_norm(t.flatten(), ord=p)


def d3_loss(logits: torch.Tensor, y: torch.Tensor, weights: Sequence[torch.Tensor],
            init: Sequence[torch.Tensor], lmd: float, eps: float, p: float = 2.0,
            scales: Sequence[float] | None = None, soft: torch.Tensor | None = None,
            alpha: float | torch.Tensor = 0.0,
            temperature: float = 1.0, fused: bool = False, distance_grad: bool = True,
            metric: Sequence[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The D3 objective for one batch (reference code): per-sample hinge relu(CE_i − ε)
    averaged over the batch, minus the summed p-norm distance, scaled by 1/(λ + 1) when λ > 1.
    ``scales`` (optional) weighs each weight's distance (``layer_weighting="angle"``).
    ``soft`` (optional, the suspect's outputs for the batch): the per-sample loss inside the
    hinge becomes (1 − α)·CE_i + α·T²·KL_i (:mod:`distox.defenses.self_distill`; α one number, or one per
    sample). ``fused``
    (p = 2 only): the distances in one fused op (:mod:`distox.defenses.d3_kernels`).
    ``distance_grad=False``: the same value, the distance a constant (its gradient is the clean
    loss's alone: SAM's ascent pass, ``sam_rho``). ``metric`` (optional, one tensor or None per
    weight): each distance taken of ``metric ⊙ (W − W_init)`` (``layer_weighting="fisher"``,
    :mod:`distox.defenses.fisher_metric`; not fused)."""
    ce = F.cross_entropy(logits, y, reduction="none")
    per_sample = ce if soft is None else (1 - alpha) * ce + alpha * distillation_loss(logits, soft, temperature)
    clean = F.relu(per_sample - eps).mean()
    if metric is not None:
        dists = torch.stack([lp_norm(w - w0 if m is None else m * (w - w0), p)
                             for w, w0, m in zip(weights, init, metric)])
    elif fused:
        dists = fused_distances(weights, init)
    else:
        dists = torch.stack([lp_norm(w - w0, p) for w, w0 in zip(weights, init)])
    if not distance_grad:
        dists = dists.detach()
    dist = dists.sum() if scales is None else (dists * torch.as_tensor(scales, dtype=dists.dtype,
                                                                          device=dists.device)).sum()
    loss = lmd * clean - dist
    if lmd > 1:
        loss = loss / (lmd + 1)
    return loss, {"clean_loss": float(clean.detach()), "ce": float(ce.detach().mean()),
                  "loss": float(loss.detach())}


def has_classifier(model: nn.Module, retain: ImageSplit, device: torch.device | str | None = None) -> bool:
    """Whether ``layers="auto"`` finds a final classifier in ``model`` (an nn.Linear, or a convolutional class
    head), found with one retain image on ``device`` (the model's own if None)."""
    if device is None:
        device = next((t.device for t in model.parameters()), torch.device("cpu"))
    try:
        select_weights(model, "auto", retain.x[:1].to(device))
    except SelectionError:
        return False
    return True


@torch.no_grad()
def warm_start(weights: Sequence[torch.Tensor], method: str, p: float, generator: torch.Generator) -> None:
    """Move each selected weight away from its start before training (SPEC §1 ``init``).

    random: U(−0.5, 0.5) rescaled to ‖W_init‖_p; far: −W_init; middle: 0;
    noise: W + N(0, 1)·std(W_init); near: unchanged.
    """
    for w in weights:
        if method == "random":
            r = torch.rand(w.shape, generator=generator, dtype=w.dtype).to(w.device) - 0.5
            w.copy_(r * lp_norm(w, p) / lp_norm(r, p).clamp_min(1e-12))
        elif method == "far":
            w.neg_()
        elif method == "middle":
            w.zero_()
        elif method == "noise":
            n = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
            w.add_(n * w.std())
        elif method.startswith("means"):
            raise DefenseError("init='means' reads the retain images: start_from_class_means, not warm_start")
        elif method != "near":
            raise DefenseError(f"init must be one of {WARM_STARTS}; got {method!r}")


@torch.no_grad()
def start_from_class_means(model: nn.Module, named: dict[str, torch.Tensor], retain: ImageSplit, p: float,
                           device: torch.device, generator: torch.Generator | None = None,
                           batch_size: int = 512, orthogonal: bool = False) -> None:
    """``init="means"``: each selected ``nn.Linear`` with an output per class restarts as the retain
    set's class means of its own input (all read from the suspect model before any weight
    moves), centred over the classes and rescaled to ‖W_init‖_p — a nearest-class-mean
    classifier read off the clean images alone, which classifies from the first step.
    ``orthogonal`` (``init="means-orthogonal"``): the part of those means orthogonal to W_init
    (Frobenius inner product), i.e. the classifier nearest the class means among those at 90°
    from the poisoned one, as far from it as the paper's random start. "An output per class":
    as many outputs as the model has; any other weight (a conv head, a hidden Linear) starts
    from the random direction (``generator``)."""
    with eval_mode(model):
        classes = model(retain.x[:1].to(device)).shape[-1]
    starts: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
    for name in named:
        layer = owning_module(model, name)
        starts[name] = class_means(model, layer, retain, device, batch_size) \
            if isinstance(layer, nn.Linear) and layer.out_features == classes else None
    for name, w in named.items():
        if starts[name] is None:
            warm_start([w], "random", p, generator if generator is not None else torch.Generator().manual_seed(0))
            continue
        means, counts = starts[name]
        centred = (means - means[counts > 0].mean(0)).to(device=w.device, dtype=w.dtype)
        if orthogonal:
            centred = centred - (centred * w).sum() / (w * w).sum().clamp_min(1e-12) * w
        w.copy_(centred * lp_norm(w, p) / lp_norm(centred, p).clamp_min(1e-12))


@torch.no_grad()
def class_means(model: nn.Module, layer: nn.Linear, retain: ImageSplit, device: torch.device,
                batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-output-row mean of ``layer``'s (2-D) input over the retain images of that class (float64,
    rows of absent classes zero) and the class counts; None when the input is not (N, features)."""
    sums = torch.zeros(layer.out_features, layer.in_features, dtype=torch.float64)
    counts = torch.zeros(layer.out_features, dtype=torch.float64)
    for i in range(0, len(retain.x), batch_size):
        f = layer_input(model, layer, retain.x[i:i + batch_size].to(device))
        if f is None or f.dim() != 2:
            return None
        y = retain.y[i:i + batch_size]
        sums.index_add_(0, y, f.double().cpu())
        counts += torch.bincount(y, minlength=layer.out_features).double()
    return sums / counts.clamp_min(1)[:, None], counts


@torch.no_grad()
def project_to_norms(weights: Sequence[torch.Tensor], norms: Sequence[torch.Tensor], p: float) -> None:
    """Projection onto S: W ← W · ‖W_init‖_p / ‖W‖_p for every selected weight."""
    for w, n0 in zip(weights, norms):
        w.mul_(n0 / lp_norm(w, p).clamp_min(1e-12))


def linear_classifier(model: nn.Module, example: torch.Tensor | None = None,
                      whole_head: bool = False) -> dict[str, nn.Parameter]:
    """The final ``nn.Linear`` classifier's weight (name → parameter; empty in a model without an
    ``nn.Linear``): what the ``default`` preset's warm start (``init_layers="classifier"``) turns;
    with ``whole_head``, the weights of every Linear of a convolutional network's fully connected
    head (:func:`distox.models.selection.linear_head`; ``init_layers="linear-head"``).
    A convolutional class head, which ``layers="auto"`` selects in a model without ``nn.Linear``
    (and to which the BatchNorm rule confines the distance there), is left out on purpose: on the
    four conv-head models measured, turning it from a random direction lost more accuracy than
    leaving it where it is in 17 of 18 cells (up to 47 points more; BENCHMARKS.md "Eighth
    round")."""
    order = linear_head(model, example) if whole_head else linear_forward_order(model, example)[-1:]
    return select_weights(model, order, example) if order else {}


@torch.no_grad()
def zero_classifier_bias(model: nn.Module, head: dict[str, nn.Parameter]) -> None:
    """Set the final classifier's bias to zero (``head_bias="zero"``): the warm start discards
    the poisoned classifier's weights, and its bias — which a poisoned training set, with extra
    images labelled as the target, tends to raise for the target class — goes with them."""
    for name in head:
        bias = getattr(owning_module(model, name), "bias", None)
        if bias is not None:
            bias.zero_()


def total_distance(weights: Sequence[torch.Tensor], init: Sequence[torch.Tensor], p: float) -> float:
    """Σ_W ‖W − W_init‖_p over the selected weights."""
    with torch.no_grad():
        return float(sum(lp_norm(w - w0, p) for w, w0 in zip(weights, init)))


def angle_scales(norms: Sequence[torch.Tensor]) -> list[float]:
    """Per-weight distance weights ‖W_init‖ / mean ‖W_init‖ (``layer_weighting="angle"``).

    Under the norm constraint a weight can only turn; the unweighted distance pushes every
    weight with a gradient of norm 1, which turns a weight of norm n by lr/n per step — small
    layers spin fastest. Weighing each distance by its norm turns every weight at the same
    angular rate, whatever its size; the mean keeps the total push comparable."""
    values = [float(n) for n in norms]
    mean = sum(values) / max(len(values), 1)
    return [v / mean if mean > 0 else 1.0 for v in values]


def size_scales(norms: Sequence[torch.Tensor], reference: float = REFERENCE_NORM,
                cap: float | None = None) -> list[float]:
    """Per-weight distance weights max(1, ‖W_init‖ / ``reference``) (``layer_weighting="size"``).

    Under the norm constraint the distance's push, of the same length for every weight, turns a
    weight of norm n by about that length over n: a wide convolution (norm 13–30 in a torchvision
    ResNet-18) turns a third as far as a development model's weight. Weighing its distance by
    n / ``reference`` turns it as one of norm ``reference`` would turn; weights up to that norm keep
    the paper's weight 1.

    ``cap`` (``layer_weighting="size-median"``: the lower median of ``norms``, :func:`median_norm`): a weight
    larger than the cap is weighed as one of norm ``cap``, so no weight is pushed harder than the model's
    median-sized one (BENCHMARKS.md "Twenty-first round": it still costs MobileNets 1.85–2.35 points)."""
    values = [float(n) for n in norms]
    if cap is not None:
        values = [min(v, cap) for v in values]
    return [max(1.0, v / reference) for v in values]


def median_norm(norms: Sequence[torch.Tensor]) -> float:
    """The lower median of the weights' norms (of an even count, the smaller of the two middle ones: always
    the norm of one of the weights)."""
    values = sorted(float(n) for n in norms)
    return values[(len(values) - 1) // 2] if values else 0.0


def track_loss_lmd(lmd: float, ce: float, target: float, rate: float, bounds: tuple[float, float]) -> float:
    """One step of the loss-tracking λ controller (``lmd_control="loss"``): multiplicative dual
    ascent on the paper's constraint E[ℓ] ≤ target — λ ← λ · exp(rate · (ce − target) / target),
    clipped to ``bounds`` — so λ grows while the batch's clean loss is above the suspect model's
    own retain loss and shrinks (the distance weighs more) while it is below."""
    lo, hi = bounds
    step = rate * (ce - target) / max(target, 1e-6)
    return min(hi, max(lo, lmd * float(torch.exp(torch.tensor(step)))))


def control_lmd(lmd: float, within: bool, bounds: tuple[float, float], factor: float = 2.0) -> float:
    """One step of the held-out λ controller: while held-out accuracy is within tolerance, halve λ
    (weight the distance more: travel farther); once it is not, double λ; clipped to ``bounds``."""
    lo, hi = bounds
    return min(hi, max(lo, lmd / factor if within else lmd * factor))


class Lambda:
    """λ as the controller (``lmd_control``) leaves it after each epoch (and the soft targets' α as
    ``distill_schedule="decay"`` does); saved in the loop's checkpoint so that a resumed run continues
    with the value it had reached."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@register
class D3(Defense):
    """Distance-Driven Detoxification.

    Args:
        preset: ``"default"`` (distox's, see :data:`PRESETS`), ``"soft-lr03"`` (distox's default of the
            thirty-third and thirty-fourth rounds), ``"soft"`` (of the thirty-first and thirty-second), ``"copies"`` (distox's default from
            the twenty-fifth through the twenty-ninth round), ``"all-layers"`` (distox's default
            through the twenty-fourth round), ``"reference"`` (the reference code: λ 0.5, ε 0.1) or
            ``"paper"`` (λ 10). A preset fills every argument below left
            at ``None``; an explicit argument overrides it. The faithful presets reproduce the
            reference exactly.
        lmd: λ, weight of the clean-loss penalty (reference 0.5, paper 10).
        eps: ε, the clean-loss bound inside the hinge (0.1).
        p: order of the weight distance and of the norm constraint (2 = Frobenius).
        init: warm start: random | far | middle | noise | near | means | means-orthogonal (random).
            ``means``: the classifier restarts as the retain set's centred class means of its
            input; ``means-orthogonal``: their part at right angles to the suspect's classifier
            (:func:`start_from_class_means`; BENCHMARKS.md "Eleventh round": both worse than random).
        init_layers: which selected weights get the warm start: ``"selected"`` (all of them, the
            paper), ``"classifier"`` (only the final nn.Linear classifier's; the rest start where
            they are; none in a model without nn.Linear), ``"auto"`` (only the weights
            ``layers="auto"`` selects: the nn.Linear classifier, or a convolutional class head) or
            ``"linear-head"`` (a convolutional network's fully connected head,
            :func:`distox.models.selection.linear_head`: LeNet-5's three Linears; elsewhere the
            nn.Linear classifier, as ``"classifier"``).
        layers: ``"auto"`` (final classifier, the paper and ``default``; a last 1×1-conv class head in a
            model without nn.Linear; under ``default``, a model with neither gets ``"all"``:
            :meth:`needs_all_layers`), ``"all-linear"``, ``"all"`` (every Linear and Conv2d, and every
            ``nn.MultiheadAttention``'s own ``in_proj_weight``, a Linear weight in all but name),
            ``"all-but-first"`` (all but the stem, the first layer the input meets),
            ``"batchnorm-fed"`` (those a BatchNorm runs right after, plus the classifier), ``"linear-head"``
            (a convolutional network's fully connected head: its Linears after the last conv; elsewhere
            ``"auto"``), or
            module names / globs (:mod:`distox.models.selection`).
        freeze_bn: keep BatchNorm statistics fixed (reference: BN in train mode, False).
        momentum: SGD momentum (0.9); the D3 optimiser has no weight decay.
        select: ``"last"`` (the paper: keep the last epoch) or ``"heldout"``: hold out
            ``val_fraction`` (0.2) of the retain set and keep the epoch that travelled farthest
            while held-out accuracy stayed within ``tolerance`` points of the suspect model's
            (:mod:`distox.defenses.heldout`; ``"auto"``: one standard error, ≥ ``min_tolerance`` 0.5).
        lmd_control: ``"constant"`` (the paper), ``"geometric"`` (λ from ``lmd_range[0]`` to
            ``lmd_range[1]`` over the run) or ``"heldout"`` (halve λ after an epoch whose held-out
            accuracy is within tolerance, else double it; within ``lmd_range``) or ``"loss"``
            (after every step λ ← λ·exp(``lmd_rate``·(CE − ℓ₀)/ℓ₀) within ``lmd_range``, ℓ₀ the
            suspect model's mean cross-entropy on the retain set: the constraint of the paper's
            constrained form, E[ℓ] ≤ ℓ₀, enforced by dual ascent instead of a fixed penalty).
        lmd_rate: step size of ``lmd_control="loss"`` (0.05).
        layer_weighting: ``"sum"`` (the paper: Σ‖W − W_init‖), ``"angle"`` (each term weighed
            by ‖W_init‖ / mean ‖W_init‖, so every selected weight turns at the same rate),
            ``"fisher"`` (each coordinate's displacement weighed down where the suspect's clean-data
            Fisher information is high: :mod:`distox.defenses.fisher_metric`) or ``"size"`` (each term
            weighed by max(1, ‖W_init‖ / :data:`REFERENCE_NORM`): a weight larger than that turns, by
            the distance's push, as fast as one of that norm; smaller ones as in the paper) or
            ``"size-median"`` (the same with every norm above the model's lower median weight norm taken as
            that median: no weight is pushed harder than a median-sized one).
        distill: weight α of the suspect model's own clean outputs in the clean loss (0: off, the
            paper): per sample (1 − α)·CE + α·T²·KL(suspect ‖ model) at temperature
            ``distill_temperature`` T (4) — :mod:`distox.defenses.self_distill`. ``distill_source``:
            the suspect scores the images the loop trains on (``"batch"``, overlaid and augmented) or
            its outputs on the plain retain images are looked up by index (``"retain"``). BENCHMARKS.md
            "Twenty-ninth round": beside the default's copies, α 0.5 on the plain images kept 0.7–1.1
            points at 3,000 images on models without BatchNorm with every check backdoor removed, but
            with 500 images left 3 of 11; on the overlaid batches it carried Blended backdoors back.
            ``distill_schedule``: α in every epoch (``"constant"``) or α · (1 − k/E) after k of the
            run's E epochs (``"decay"``: the last epochs train on the labels alone; "Thirtieth round":
            it left as many backdoors with 500 images). ``distill_scaled``: where the run makes E epochs,
            more than the preset's E₀ (:attr:`preset_epochs`; E set by ``min_steps`` with few images, or by
            the caller), α · E₀ / E instead of α (recorded in ``distill_resolved``). The ``default``
            preset's rule sets α 0.5, scaled, on the copies, on every model (:data:`SOFT_TARGETS_ON_COPIES`;
            ``soft-lr03`` and ``soft``: on the plain images and the copies, :data:`SOFT_TARGETS`);
            off in every other preset. ``distill_on``: with ``shared_radius``, which images of a batch
            get the (1 − α)·CE + α·T²·KL mix, the rest their labels alone: ``"both"`` (the plain images
            and their perturbed copies, each copy fitted to its image's soft target, as since the
            twenty-ninth round), ``"images"`` (the plain images only: the copies' cross-entropy is not
            diluted) or ``"copies"`` (the copies only: the suspect's clean outputs as a consistency
            target for the perturbed images, the plain images on their labels; the ``default`` preset's
            rule). BENCHMARKS.md "Thirty-fourth round", "Thirty-fifth round".
        head_bias: ``"keep"`` (the paper) or ``"zero"``: also zero the final classifier's bias.
        norm_rule: False (the faithful presets) or True (the ``default`` preset): on a model without
            any BatchNorm layer, the options in :data:`WITHOUT_BATCHNORM` (:meth:`norm_rule_options`), on a
            model with one the preset's :data:`BATCHNORM_RULES` (``default``: :data:`WITH_BATCHNORM`, lr 0.03), and
            on every model the preset's :data:`RULE_EXTRAS` (``default``: :data:`SOFT_TARGETS_ON_COPIES`), that the
            caller did not set take those values (recorded in ``config["norm_rule_resolved"]``); a run that
            diverges at the rule's learning rate runs again at the caller's (``"diverged_lr"``).
        min_steps: 0 (off; the faithful presets) or a floor on the optimiser steps (the
            ``default`` preset: 600, and 1,128 on a model without BatchNorm by its ``norm_rule``
            unless the caller set ``min_steps``): unless the caller set ``epochs``, a retain set too small for
            that many steps in ``epochs`` epochs gets the fewest epochs that make them
            (:meth:`epochs_for`; recorded in ``config["min_steps_resolved"]``). 3,000 images at
            batch 32 make 1,128 steps in 12 epochs, so the floor only acts on smaller sets.
        bn_recalibrate: False (the paper), True: after training, BatchNorm's running statistics
            re-estimated on the plain retain images (:mod:`distox.defenses.bn_stats`), or ``"auto"``
            (the ``default`` preset): only where a BatchNorm layer's momentum is so slow that more than
            1 % of the suspect's statistics would be left after the run's steps (Keras-converted
            models, MnasNet), recorded in ``config["bn_recalibrate_resolved"]``; never with ``freeze_bn``.
            At PyTorch's momentum 0.1 nothing changes.
        head_warmup: 0 (the paper) or a number of epochs in which, after the warm start, only the
            final nn.Linear classifier trains (plain cross-entropy on the retain images, every
            other weight and BatchNorm's statistics fixed) before D3's own epochs
            (BENCHMARKS.md "Eleventh round").
        sam_rho: None (the paper) or the radius ρ of adaptive sharpness-aware minimisation
            (ASAM with T = |w|, as FT-SAM: :mod:`distox.sam`) on every step: the ascent follows the
            gradient of the clean loss alone, the step the full D3 objective's at the perturbed
            weights (BENCHMARKS.md "Fifteenth round").
        classifier_lr: None (one learning rate, ``lr``, for every parameter: the paper) or the
            final classifier's own learning rate (its parameters in an optimiser group of their own).
        input_prune: False (the faithful presets) or True (the ``default`` preset): before the warm
            start, on a model whose first weighted layer is an ``nn.Linear`` (a multi-layer
            perceptron), replace that layer's least-varying inputs by their retain-set means, as
            many as keep retain accuracy within ``tolerance`` (:mod:`distox.defenses.input_prune`;
            recorded in ``config["input_prune_resolved"]``). A model that starts with a
            convolution is left as it is.
        logit_scale: False (every preset) or True: measure the scale of the suspect's logits as
            the temperature T that fits its retain outputs best (temperature scaling), divide the
            final classifier's weight and bias by T before D3 (same predictions, the confidence
            the retain data support) and multiply them back after it
            (:mod:`distox.defenses.logit_scale`; BENCHMARKS.md "Sixteenth round": it makes D3
            blind to the logits' scale, but did not earn a place in the default); recorded in
            ``config["logit_scale_resolved"]``. Skipped, with a warning, where the model's outputs
            do not scale with its classifier's or no temperature fits the retain labels.
        average: 0 (the paper: the last step's weights) or a fraction F in (0, 1]: the model returned
            is the uniform mean of the weights after each of the run's last F of optimiser steps
            (stochastic weight averaging; :mod:`distox.defenses.weight_average`), its selected
            weights projected back onto their starting norms and, in a model with BatchNorm, the
            running statistics re-estimated on the plain retain images. Not with ``select="heldout"``.
        classifier_weight: 1 (the paper: every selected weight's distance counts once in Eq. 3's sum)
            or the factor the final classifier's distance is multiplied by — with ``layers="all"``,
            a push on the classifier as strong as a small λ's while the other weights keep λ's
            (BENCHMARKS.md "Nineteenth round"; an option, off in every preset).
        universal_radius: 0 (the paper) or r in (0, 1): the clean-loss bound also holds on every
            batch under one perturbation δ shared by all images, ‖δ‖∞ ≤ r × the retain pixels'
            range, moved one signed-gradient step up the perturbed batch's loss after each
            optimiser step (:mod:`distox.defenses.universal`; each step trains on the batch and its
            perturbed copy: twice the images per step; BENCHMARKS.md "Twenty-second round"; an
            option, off in every preset). Not with ``distill``.
        shared_radius: 0 (the paper) or r in (0, 1): the clean-loss bound also holds on every
            batch's shared adversarial copy — per image a perturbation, ‖δ‖∞ ≤ r × the retain
            pixels' range, that fools the model and the frozen suspect into the same class (SAU's
            shared adversarial examples, two signed-gradient steps per batch;
            :class:`~distox.defenses.universal.SharedAdversarialCopies`; BENCHMARKS.md
            "Twenty-third round"). The ``default`` preset sets 0.03 with ``shared_schedule="once"`` and
            ``shared_steps=5`` ("Twenty-fifth round"); the other presets leave it off. Not with
            ``universal_radius``; under ``default``, setting it or ``distill`` turns the preset's copies off
            unless ``shared_radius`` is given too (with ``distill``, a copy's soft target is the suspect's
            output on the retain image it was made from).
        shared_steps, shared_fraction: with ``shared_radius``, the crafting's signed-gradient steps per
            batch (2) and the share of each batch that gets a copy (1.0: all of it; a smaller share
            crafts and trains fewer copies, for less time).
        shared_schedule: with ``shared_radius``, ``"batch"`` (each batch's copies crafted against the
            model as it is then) or ``"once"`` (every retain image's copy crafted before any weight
            moves, against the suspect alone, ``shared_steps`` steps; then reused at every step:
            :class:`~distox.defenses.universal.CraftedOnceCopies`, BENCHMARKS.md "Twenty-fourth round"; the
            ``default`` preset's).
        shared_escalate: 1 (one radius for every copy) or the largest radius as a multiple of
            ``shared_radius`` (> 1), with ``shared_schedule="once"``: a copy that does not fool the suspect
            is crafted again at the next radius of ``shared_radius`` × (1, 4/3, 5/3, 2, …) up to that
            multiple (:class:`~distox.defenses.universal.CraftedOnceCopies`; the share fooled after each radius
            is recorded on ``shared_resolved``). An option, off in every preset: on a ConvMixer at 2 × it left
            3.01 and 10.72 % of a backdoor that one radius of 0.05 for every copy cleared (BENCHMARKS.md
            "Thirty-third round").
        warmup: 0 (the paper: the schedule's rate from the first step) or a fraction in [0, 1) of the
            run's optimiser steps over which the rate ramps up linearly to the schedule's
            (:func:`distox.training.warm_up`; BENCHMARKS.md "Twenty-eighth round": on the models without
            BatchNorm whose first epoch at lr 0.03 costs most, it kept no accuracy).
        anchor: 0 (the paper) or α > 0: the weight matrices and kernels outside the distance are
            pulled back toward the suspect's, α · Σ ‖W − W⁰‖² / ‖W⁰‖² added to the loss
            (:class:`~distox.defenses.anchor.Anchor`, L2-SP).
        auto: options of ``lmd="auto"`` / ``eps="auto"``, which choose them from the retain data
            (rules in :mod:`distox.defenses.d3_auto`).
        epochs, batch_size, lr, augment, blend, flip, seed: see :class:`Defense` (100, 256, 0.01,
            True, 0); a preset may set the first five (``default``: 12, 32, 0.01, False, 0.3).

    Shapes: retain images (N, C, H, W) in [0, 1], labels (N,).
    """

    name = "d3"
    #: 2: ``D3()`` without a preset runs the ``default`` preset (it ran ``reference`` before).
    #: 3: ``layers="all"`` (``all-layers``'s) and ``"all-but-first"`` take an ``nn.MultiheadAttention``'s own
    #: ``in_proj_weight`` too (models without one run as before).
    #: 4: the ``default`` preset's BatchNorm rule adds the suspect's soft targets (:data:`SOFT_TARGETS`); the
    #: default as it was is ``copies``.
    #: 5: ... on models with BatchNorm too (:data:`RULE_EXTRAS`; models without BatchNorm run as before).
    #: 6: ... at lr 0.03 on models with BatchNorm too (:data:`WITH_BATCHNORM`; the ``soft`` preset is revision 5's).
    #: 7: the ``default`` preset's soft targets on the adversarial copies only, on every model
    #: (:data:`SOFT_TARGETS_ON_COPIES`; the ``soft-lr03`` preset is revision 6's).
    revision = 7

    def __init__(self, lmd: float | str | None = None, eps: float | str | None = None, p: float | None = None,
                 init: str | None = None, layers: str | Sequence[str] | None = None, freeze_bn: bool | None = None,
                 momentum: float | None = None, preset: str = DEFAULT_PRESET, auto: dict[str, Any] | None = None,
                 select: str | None = None, val_fraction: float | None = None, tolerance: float | str | None = None,
                 min_tolerance: float | None = None, lmd_control: str | None = None,
                 lmd_range: Sequence[float] | None = None, init_layers: str | None = None,
                 lmd_rate: float | None = None, layer_weighting: str | None = None, distill: float | None = None,
                 distill_temperature: float | None = None, distill_source: str | None = None,
                 distill_schedule: str | None = None, distill_scaled: bool | None = None,
                 distill_on: str | None = None, head_bias: str | None = None,
                 norm_rule: bool | None = None, min_steps: int | None = None, input_prune: bool | None = None,
                 classifier_lr: float | None = None, bn_recalibrate: bool | None = None,
                 head_warmup: int | None = None, sam_rho: float | None = None,
                 logit_scale: bool | None = None, average: float | None = None,
                 classifier_weight: float | None = None, universal_radius: float | None = None,
                 shared_radius: float | None = None, shared_steps: int | None = None,
                 shared_fraction: float | None = None, shared_schedule: str | None = None,
                 shared_escalate: float | None = None, warmup: float | None = None, anchor: float | None = None,
                 **kwargs: Any) -> None:
        if preset not in PRESETS:
            raise DefenseError(f"preset must be one of {sorted(PRESETS)}; got {preset!r}")
        chosen = PRESETS[preset]
        kwargs = {k: val for k, val in kwargs.items() if val is not None}  # None: the preset's
        explicit = set(kwargs)
        kwargs = {**{k: chosen[k] for k in LOOP_KEYS if k in chosen}, **kwargs}
        super().__init__(**kwargs)
        given = dict(lmd=lmd, eps=eps, p=p, init=init, layers=layers, freeze_bn=freeze_bn, momentum=momentum,
                     select=select, val_fraction=val_fraction, tolerance=tolerance, min_tolerance=min_tolerance,
                     lmd_control=lmd_control, lmd_range=lmd_range, init_layers=init_layers, lmd_rate=lmd_rate,
                     layer_weighting=layer_weighting, distill=distill, distill_temperature=distill_temperature,
                     distill_source=distill_source, distill_schedule=distill_schedule,
                     distill_scaled=distill_scaled, distill_on=distill_on,
                     head_bias=head_bias, norm_rule=norm_rule, min_steps=min_steps, input_prune=input_prune,
                     classifier_lr=classifier_lr, bn_recalibrate=bn_recalibrate, head_warmup=head_warmup,
                     sam_rho=sam_rho, logit_scale=logit_scale, average=average, classifier_weight=classifier_weight,
                     universal_radius=universal_radius, shared_radius=shared_radius, shared_steps=shared_steps,
                     shared_fraction=shared_fraction, shared_schedule=shared_schedule,
                     shared_escalate=shared_escalate, warmup=warmup, anchor=anchor)
        #: the options the caller set (a model-derived rule never overrides them)
        self._explicit = frozenset(explicit | {k for k, val in given.items() if val is not None})
        v = {k: val if val is not None else chosen.get(k, FALLBACK[k]) for k, val in given.items()}
        self.preset = preset
        self.lmd = auto_or_float("lmd", v["lmd"])
        self.eps = auto_or_float("eps", v["eps"])
        self.auto = check_auto(auto)
        if not float(v["p"]) >= 1:
            raise DefenseError(f"p must be >= 1; got {v['p']}")
        if v["init"] not in WARM_STARTS:
            raise DefenseError(f"init must be one of {WARM_STARTS}; got {v['init']!r}")
        self.p, self.init, self.freeze_bn = float(v["p"]), v["init"], bool(v["freeze_bn"])
        self.momentum = float(v["momentum"])
        self.layers = v["layers"] if isinstance(v["layers"], str) else list(v["layers"])
        if v["select"] not in SELECTIONS:
            raise DefenseError(f"select must be one of {SELECTIONS}; got {v['select']!r}")
        if not 0.0 < float(v["val_fraction"]) < 1.0:
            raise DefenseError(f"val_fraction must be in (0, 1); got {v['val_fraction']}")
        tol = v["tolerance"]
        if tol != "auto" and not (isinstance(tol, (int, float)) and tol >= 0):
            raise DefenseError(f"tolerance must be a number >= 0 or 'auto'; got {tol!r}")
        self.select, self.val_fraction, self.min_tolerance = v["select"], float(v["val_fraction"]), float(v["min_tolerance"])
        self.tolerance = tol if tol == "auto" else float(tol)
        if v["lmd_control"] not in LMD_CONTROLS:
            raise DefenseError(f"lmd_control must be one of {LMD_CONTROLS}; got {v['lmd_control']!r}")
        if v["lmd_control"] == "heldout" and self.select != "heldout":
            raise DefenseError("lmd_control='heldout' needs select='heldout' (it reads the held-out accuracy)")
        lo, hi = (float(x) for x in v["lmd_range"])
        if not 0 < lo <= hi:
            raise DefenseError(f"lmd_range must be (low, high) with 0 < low <= high; got {v['lmd_range']!r}")
        self.lmd_control, self.lmd_range = v["lmd_control"], (lo, hi)
        if not float(v["lmd_rate"]) > 0:
            raise DefenseError(f"lmd_rate must be > 0; got {v['lmd_rate']}")
        self.lmd_rate = float(v["lmd_rate"])
        if v["layer_weighting"] not in LAYER_WEIGHTINGS:
            raise DefenseError(f"layer_weighting must be one of {LAYER_WEIGHTINGS}; got {v['layer_weighting']!r}")
        self.layer_weighting = v["layer_weighting"]
        if v["init_layers"] not in INIT_LAYERS:
            raise DefenseError(f"init_layers must be one of {INIT_LAYERS}; got {v['init_layers']!r}")
        self.init_layers = v["init_layers"]
        if not 0.0 <= float(v["distill"]) <= 1.0:
            raise DefenseError(f"distill must be in [0, 1]; got {v['distill']}")
        if not float(v["distill_temperature"]) > 0:
            raise DefenseError(f"distill_temperature must be > 0; got {v['distill_temperature']}")
        self.distill, self.distill_temperature = float(v["distill"]), float(v["distill_temperature"])
        if v["distill_source"] not in DISTILL_SOURCES:
            raise DefenseError(f"distill_source must be one of {DISTILL_SOURCES}; got {v['distill_source']!r}")
        self.distill_source = v["distill_source"]
        if v["distill_schedule"] not in DISTILL_SCHEDULES:
            raise DefenseError(f"distill_schedule must be one of {DISTILL_SCHEDULES}; got {v['distill_schedule']!r}")
        self.distill_schedule = v["distill_schedule"]
        if not isinstance(v["distill_scaled"], bool):
            raise DefenseError(f"distill_scaled must be true or false; got {v['distill_scaled']!r}")
        self.distill_scaled = v["distill_scaled"]
        if v["distill_on"] not in DISTILL_ON:
            raise DefenseError(f"distill_on must be one of {DISTILL_ON}; got {v['distill_on']!r}")
        self.distill_on = v["distill_on"]
        if v["head_bias"] not in HEAD_BIASES:
            raise DefenseError(f"head_bias must be one of {HEAD_BIASES}; got {v['head_bias']!r}")
        self.head_bias = v["head_bias"]
        if not isinstance(v["norm_rule"], bool):
            raise DefenseError(f"norm_rule must be true or false; got {v['norm_rule']!r}")
        self.norm_rule = v["norm_rule"]
        if isinstance(v["min_steps"], bool) or not isinstance(v["min_steps"], int) or v["min_steps"] < 0:
            raise DefenseError(f"min_steps must be a whole number >= 0; got {v['min_steps']!r}")
        self.min_steps = v["min_steps"]
        if not isinstance(v["input_prune"], bool):
            raise DefenseError(f"input_prune must be true or false; got {v['input_prune']!r}")
        self.input_prune = v["input_prune"]
        if v["classifier_lr"] is not None and not (isinstance(v["classifier_lr"], (int, float))
                                                   and not isinstance(v["classifier_lr"], bool) and v["classifier_lr"] > 0):
            raise DefenseError(f"classifier_lr must be a number > 0 or None; got {v['classifier_lr']!r}")
        self.classifier_lr = None if v["classifier_lr"] is None else float(v["classifier_lr"])
        if not (isinstance(v["bn_recalibrate"], bool) or v["bn_recalibrate"] == "auto"):
            raise DefenseError(f"bn_recalibrate must be true, false or 'auto'; got {v['bn_recalibrate']!r}")
        self.bn_recalibrate = v["bn_recalibrate"]
        if not (isinstance(v["head_warmup"], int) and not isinstance(v["head_warmup"], bool) and v["head_warmup"] >= 0):
            raise DefenseError(f"head_warmup must be a whole number of epochs >= 0; got {v['head_warmup']!r}")
        self.head_warmup = v["head_warmup"]
        if v["sam_rho"] is not None and not (isinstance(v["sam_rho"], (int, float)) and not isinstance(v["sam_rho"], bool)
                                             and v["sam_rho"] > 0):
            raise DefenseError(f"sam_rho must be a number > 0 or None; got {v['sam_rho']!r}")
        self.sam_rho = None if v["sam_rho"] is None else float(v["sam_rho"])
        if not isinstance(v["logit_scale"], bool):
            raise DefenseError(f"logit_scale must be true or false; got {v['logit_scale']!r}")
        self.logit_scale = v["logit_scale"]
        if isinstance(v["average"], bool) or not isinstance(v["average"], (int, float)) or not 0.0 <= v["average"] <= 1.0:
            raise DefenseError(f"average must be a fraction of the run's steps in [0, 1] (0: off); got {v['average']!r}")
        if v["average"] and self.select == "heldout":
            raise DefenseError("average and select='heldout' each choose the weights returned; set one of them")
        self.average = float(v["average"])
        w = v["classifier_weight"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise DefenseError(f"classifier_weight must be a number > 0 (1: every weight's distance counts once); got {w!r}")
        self.classifier_weight = float(w)
        for key in ("universal_radius", "shared_radius"):
            r = v[key]
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
                raise DefenseError(f"{key} must be a fraction of the pixels' range in [0, 1) (0: off); got {r!r}")
        r = v["universal_radius"]
        if r and self.distill:
            raise DefenseError("universal_radius and distill cannot be combined (the suspect's outputs cover the "
                               "retain images only, not their perturbed copies)")
        self.universal_radius = float(r)
        r = v["shared_radius"]
        if r and "shared_radius" not in self._explicit and (self.distill or self.universal_radius):
            r = 0.0  # the preset's copies step aside for the caller's own distill or universal_radius
        if r and self.universal_radius:
            raise DefenseError("shared_radius cannot be combined with universal_radius (each batch has one "
                               "perturbed copy)")
        self.shared_radius = float(r)
        steps, fraction = v["shared_steps"], v["shared_fraction"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise DefenseError(f"shared_steps must be an integer >= 1; got {steps!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise DefenseError(f"shared_fraction must be in (0, 1]; got {fraction!r}")
        self.shared_steps, self.shared_fraction = steps, float(fraction)
        escalate = v["shared_escalate"]
        if isinstance(escalate, bool) or not isinstance(escalate, (int, float)) or not escalate >= 1.0:
            raise DefenseError(f"shared_escalate must be a number >= 1 (1: one radius for every copy); got {escalate!r}")
        self.shared_escalate = float(escalate)
        if v["shared_schedule"] not in SHARED_SCHEDULES:
            raise DefenseError(f"shared_schedule must be one of {SHARED_SCHEDULES}; got {v['shared_schedule']!r}")
        self.shared_schedule = v["shared_schedule"]
        if self.shared_escalate > 1 and self.shared_radius and self.shared_schedule != "once":
            raise DefenseError("shared_escalate needs shared_schedule='once' (it chooses each copy's radius when the "
                               "copies are crafted, before any weight moves)")
        w = v["warmup"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w < 1.0:
            raise DefenseError(f"warmup must be a fraction of the run's steps in [0, 1) (0: off); got {w!r}")
        self.warmup = float(w)
        a = v["anchor"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a < math.inf:
            raise DefenseError(f"anchor must be a strength >= 0 (0: off); got {a!r}")
        self.anchor = float(a)

    def warm_up_classifier(self, model: nn.Module, retain: ImageSplit, example: torch.Tensor,
                           device: torch.device) -> None:
        """``head_warmup``: that many epochs of plain cross-entropy on the retain images through the
        shared loop, the final nn.Linear classifier's parameters the only ones trained and
        BatchNorm's statistics fixed (no overlay, no augmentation)."""
        head = linear_classifier(model, example)
        if not head:
            log.warning("D3: no nn.Linear classifier to warm up (head_warmup); skipped")
            return
        layer = owning_module(model, next(iter(head)))
        config = self.loop_config(retain, epochs=self.head_warmup, augment=False, blend=0.0, bn_eval=True,
                                  momentum=self.momentum, weight_decay=0.0)
        train(model, retain.x, retain.y, config, params=list(layer.parameters()), device=device, progress=False,
              desc="D3 classifier warm-up")

    def warmup_steps(self, retain: ImageSplit) -> int:
        """``warmup``'s optimiser steps: that fraction of the steps the run makes on ``retain``."""
        if not self.warmup:
            return 0
        return max(1, round(self.warmup * self.epochs * self.batches_per_epoch(retain)))

    def get_params(self, retain: ImageSplit | None = None) -> dict[str, Any]:
        """As :meth:`Defense.get_params`, without the distillation settings while ``distill`` is 0
        and without ``head_bias`` while it is ``"keep"`` (so a run without them keeps the record and
        cell key it had before these options existed)."""
        params = super().get_params(retain)
        if not self.distill:
            params.pop("distill", None)
            params.pop("distill_temperature", None)
        # recorded only when they change a run
        for key in ("distill_source", "distill_schedule", "distill_scaled", "distill_on"):
            if not self.distill or getattr(self, key) == FALLBACK[key]:
                params.pop(key, None)
        if self.head_bias == "keep":
            params.pop("head_bias", None)
        if not self.norm_rule:
            params.pop("norm_rule", None)
        if not self.min_steps:
            params.pop("min_steps", None)
        if not self.input_prune:
            params.pop("input_prune", None)
        if self.classifier_lr is None:
            params.pop("classifier_lr", None)
        if not self.bn_recalibrate:
            params.pop("bn_recalibrate", None)
        if not self.head_warmup:
            params.pop("head_warmup", None)
        if self.sam_rho is None:
            params.pop("sam_rho", None)
        if not self.logit_scale:
            params.pop("logit_scale", None)
        if not self.average:
            params.pop("average", None)
        if self.classifier_weight == 1.0:
            params.pop("classifier_weight", None)
        if not self.universal_radius:
            params.pop("universal_radius", None)
        if not self.shared_radius:
            params.pop("shared_radius", None)
        if not self.shared_radius or self.shared_steps == FALLBACK["shared_steps"]:
            params.pop("shared_steps", None)
        if not self.shared_radius or self.shared_fraction == FALLBACK["shared_fraction"]:
            params.pop("shared_fraction", None)
        if not self.shared_radius or self.shared_schedule == FALLBACK["shared_schedule"]:
            params.pop("shared_schedule", None)
        if not self.shared_radius or self.shared_escalate == FALLBACK["shared_escalate"]:
            params.pop("shared_escalate", None)
        if not self.warmup:
            params.pop("warmup", None)
        if not self.anchor:
            params.pop("anchor", None)
        return params

    def fit_adapted(self, adapted: D3, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
                    device: torch.device, progress: bool, checkpoint: Checkpoint | None) -> TrainState:
        """Run ``adapted`` (:meth:`adapted_to`) in this D3's place and take what it resolved into the
        record. The BatchNorm rule's larger learning rate is the one change that can make a run
        diverge: then it runs again from the same start at the caller's rate
        (``norm_rule_resolved["diverged_lr"]``), checkpointed under an identity of its own, so a
        rerun after an interruption goes straight back to it."""
        fallback = adapted.lr != self.lr
        start = {k: v.detach().clone() for k, v in model.state_dict().items()} if fallback else None
        again = None if checkpoint is None else Checkpoint(
            checkpoint.path, f"{checkpoint.identity}|diverged at lr {adapted.lr:g}, again at {self.lr:g}")
        resuming_again = (fallback and again is not None and Path(again.path).exists()
                          and saved_identity(again.path) == again.identity)

        def at_callers_rate() -> tuple[D3, TrainState]:
            copy_state_into(model, start)
            resolved = self.norm_rule_resolved
            self.norm_rule_resolved = {**resolved, "diverged_lr": adapted.lr,
                                       "changed": {k: v for k, v in resolved["changed"].items() if k != "lr"}}
            slower = adapted.with_options(lr=self.lr)
            return slower, slower.fit(model, retain, evaluator=evaluator, device=device, progress=progress,
                                      checkpoint=again)

        if resuming_again:  # the interrupted run was the one at the caller's rate
            adapted, state = at_callers_rate()
        else:
            try:
                state = adapted.fit(model, retain, evaluator=evaluator, device=device, progress=progress,
                                    checkpoint=checkpoint)
            except TrainingDiverged as exc:
                if not fallback:
                    raise
                log.warning("D3: at the learning rate the preset's rule sets (%g) the loss %s; "
                            "running again from the start at lr %g", adapted.lr,
                            str(exc).split("; ")[0].removeprefix("loss "), self.lr)
                if checkpoint is not None:
                    Path(checkpoint.path).unlink(missing_ok=True)  # its epochs are the diverged run's
                adapted, state = at_callers_rate()
        self.record_resolved(adapted)
        return state

    def epochs_for(self, retain: ImageSplit, model: nn.Module | None = None) -> int:
        """The epochs a run on ``retain`` makes: ``epochs``, or under ``min_steps`` (unless the
        caller set ``epochs``) the fewest that make ``min_steps`` optimiser steps over the images
        the loop trains on (less the held-out part with ``select="heldout"``); with ``model``, the
        floor its BatchNorm rule sets (:meth:`batchnorm_rule`). Reads the retain set's size (and
        the model's modules) only."""
        min_steps = self.min_steps
        if model is not None:
            min_steps = self.batchnorm_rule(model, retain).get("min_steps", min_steps)
        return self.epochs_with_floor(retain, min_steps)

    def epochs_with_floor(self, retain: ImageSplit, min_steps: int) -> int:
        """:meth:`epochs_for` with the floor ``min_steps`` given (0: none)."""
        if not min_steps or "epochs" in self._explicit:
            return self.epochs
        return max(self.epochs, math.ceil(min_steps / self.steps_per_epoch(retain)))

    def warn_below_floor(self, retain: ImageSplit, min_steps: int) -> None:
        """Log a warning when the caller's ``epochs`` make fewer optimiser steps over ``retain`` than
        the floor ``min_steps`` the preset (or its BatchNorm rule) would have run: an explicit
        ``epochs`` always wins, but with few images a short run leaves the restarted classifier
        unfitted (BENCHMARKS.md "Seventh round"; "Nineteenth round": ``epochs=5`` on 800 images)."""
        steps = self.epochs * self.steps_per_epoch(retain)
        if steps < min_steps:
            log.warning("D3: epochs=%d make %d optimiser steps on %d retain images, fewer than the %d this preset "
                        "runs at least (min_steps); leave epochs unset to get them", self.epochs, steps,
                        len(retain), min_steps)

    def steps_per_epoch(self, retain: ImageSplit) -> int:
        """Optimiser steps in one epoch over ``retain`` (less the held-out part with ``select="heldout"``),
        counted as the loop batches them (:class:`~distox.training.Batches`: a trailing batch of one
        image joins the one before)."""
        trained = split_retain(retain, self.val_fraction, self.seed)[0] if self.select == "heldout" else retain
        return self.batches_per_epoch(trained)

    def batches_per_epoch(self, trained: ImageSplit) -> int:
        """The batches the loop makes in one epoch over the images it trains on (``trained``, already
        without any held-out part), counted as :class:`~distox.training.Batches` makes them."""
        return len(Batches(trained.y, trained.y, self.batch_size))

    def rule_extras(self) -> dict[str, Any]:
        """The options this preset's rule sets on every model: its :data:`RULE_EXTRAS` (``default``: the
        soft targets on the copies, left out beside a ``universal_radius``, which ``distill`` does not combine with)."""
        extras = RULE_EXTRAS.get(self.preset, {})
        if self.universal_radius:
            extras = {k: v for k, v in extras.items() if not k.startswith("distill")}
        return dict(extras)

    def norm_rule_options(self) -> dict[str, Any]:
        """The options this preset's rule sets on a model without BatchNorm: :data:`WITHOUT_BATCHNORM`
        and :meth:`rule_extras`."""
        return {**WITHOUT_BATCHNORM, **self.rule_extras()}

    def batchnorm_rule(self, model: nn.Module, retain: ImageSplit, device: torch.device | str | None = None
                       ) -> dict[str, Any]:
        """What ``norm_rule`` changes on ``model``, less the options the caller set: on a model without
        BatchNorm that has a final classifier (``layers="auto"``: an nn.Linear, or a convolutional class
        head) :meth:`norm_rule_options`; on a model with BatchNorm the preset's :data:`BATCHNORM_RULES`
        (``default``: lr 0.03) and :meth:`rule_extras`; on any other model :meth:`rule_extras` (``copies``,
        ``all-layers``: nothing); ``{}`` without ``norm_rule``. Reads the model's modules and one retain image (to find the
        classifier)."""
        if not self.norm_rule:
            return {}
        rule = ({**BATCHNORM_RULES.get(self.preset, {}), **self.rule_extras()} if has_batchnorm(model)
                else self.norm_rule_options())
        by_norm = {k: v for k, v in rule.items() if k not in self._explicit}
        if by_norm.get("layers") == "auto" and not has_classifier(model, retain, device):
            by_norm = {k: v for k, v in by_norm.items() if k not in WITHOUT_BATCHNORM}  # no classifier to confine to
        return by_norm

    def needs_all_layers(self, model: nn.Module, retain: ImageSplit, device: torch.device | str | None = None) -> bool:
        """Whether a preset whose own distance is on the classifier (``default``: ``layers="auto"``, the caller
        not having set ``layers``) meets a model without one (no nn.Linear, no convolutional class head): then it
        runs the distance over every Linear and Conv2d weight (``layers="all"``, as ``all-layers``) instead of
        failing. The faithful presets keep failing there, as the reference code does. Reads the model's modules
        and one retain image."""
        if "layers" in self._explicit or self.layers != "auto" or PRESETS[self.preset].get("layers") != "auto":
            return False
        return not has_classifier(model, retain, device)

    def adapted_to(self, model: nn.Module, retain: ImageSplit, device: torch.device | str = "cpu") -> D3:
        """This D3, or a copy with what its model- and data-derived rules change, for every option
        the caller did not set: where the preset's classifier distance finds no classifier, the
        distance over every weight (:meth:`needs_all_layers`; recorded on ``layers_resolved``); under
        ``norm_rule``, on a model without BatchNorm that has a final
        classifier, :data:`WITHOUT_BATCHNORM`, and on every model the preset's :data:`RULE_EXTRAS`
        (:meth:`batchnorm_rule`; recorded on ``norm_rule_resolved``); under ``min_steps`` (or the rule's), the epochs of :meth:`epochs_for`
        (recorded on ``min_steps_resolved``).
        Reads the model's modules and the retain set's size only (one retain image, to find the
        classifier), never labels or evaluation data."""
        changed: dict[str, Any] = {}
        vars(self).pop("layers_resolved", None)  # an earlier model's, when this D3 is reused
        if self.needs_all_layers(model, retain, device):
            changed["layers"] = "all"
            self.layers_resolved = {"layers": "all", "reason": "no classifier"}
        if self.norm_rule:
            by_norm = self.batchnorm_rule(model, retain, device)
            self.norm_rule_resolved = {"batchnorm": has_batchnorm(model), "changed": by_norm}
            changed.update(by_norm)
        min_steps = changed.pop("min_steps", self.min_steps)
        if min_steps and "epochs" in self._explicit:
            self.warn_below_floor(retain, min_steps)
        if min_steps:
            epochs = self.epochs_with_floor(retain, min_steps)
            self.min_steps_resolved = {"epochs": epochs}
            if epochs != self.epochs:
                changed["epochs"] = epochs
        vars(self).pop("distill_resolved", None)
        distill, epochs = changed.get("distill", self.distill), changed.get("epochs", self.epochs)
        if distill and changed.get("distill_scaled", self.distill_scaled) and epochs > self.preset_epochs:
            changed["distill"] = distill * self.preset_epochs / epochs
            changed["distill_scaled"] = False  # scaled once: the copy that runs does not scale again
            self.distill_resolved = {"distill": changed["distill"], "epochs": epochs, "of": self.preset_epochs}
        return self.with_options(**changed, norm_rule=False, min_steps=0) if changed else self

    @property
    def preset_epochs(self) -> int:
        """The epochs this D3's preset runs (``default``: 12; the faithful presets: :class:`Defense`'s 100),
        whatever the caller or the steps floor set: ``distill_scaled`` scales α by it."""
        return int(PRESETS[self.preset].get("epochs", self.default_epochs))

    def classifier_optimizer(self, model: nn.Module, config: LoopConfig, example: torch.Tensor) -> torch.optim.Optimizer | None:
        """With ``classifier_lr``: the loop's optimiser with the final classifier's parameters
        (:func:`~distox.models.selection.classifier_name`) in a group of their own at that
        rate, the rest at ``lr`` (the cosine schedule scales both); None otherwise (the loop's own)."""
        if self.classifier_lr is None:
            return None
        head = list(model.get_submodule(classifier_name(model, example)).parameters())
        ids = {id(p) for p in head}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        return make_optimizer([{"params": rest}, {"params": [p for p in head if p.requires_grad], "lr": self.classifier_lr}],
                              config)

    def with_options(self, **changes: Any) -> D3:
        """A new D3 with this one's options (without what a run resolved) and ``changes`` over them.
        Every option is carried, also those :meth:`get_params` leaves out of the record at their
        off value (``blend=0``): left out, the preset would fill them again (``default``: 0.3)."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_") and not k.endswith("_resolved")}
        return type(self)(**{**params, **changes})

    def record_resolved(self, ran: D3) -> None:
        """Take into this run's record what the copy ``ran`` resolved when it ran in its place
        (held-out epoch, auto λ/ε, input pruning): the ``*_resolved`` attributes."""
        vars(self).update({k: v for k, v in vars(ran).items() if k.endswith("_resolved")})

    def selected(self, model: nn.Module, example: torch.Tensor | None = None) -> dict[str, nn.Parameter]:
        """The selected weights θ_s of ``model`` (name → parameter)."""
        return self.selected_in(model, self.layers, example)

    @staticmethod
    def selected_in(model: nn.Module, layers: str | Sequence[str],
                    example: torch.Tensor | None = None) -> dict[str, nn.Parameter]:
        """The weights of ``model`` that the selection ``layers`` names, as a :class:`DefenseError`
        when it names none."""
        try:
            return select_weights(model, layers, example)
        except SelectionError as exc:
            raise DefenseError(str(exc)) from None

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        adapted = self.adapted_to(model, retain, device)
        if adapted is not self:
            own = self.get_params()
            log.info("D3: the model and retain set call for %s",
                     {k: v for k, v in adapted.get_params().items() if own.get(k) != v})
            return self.fit_adapted(adapted, model, retain, evaluator=evaluator, device=device, progress=progress,
                                    checkpoint=checkpoint)
        if "auto" in (self.lmd, self.eps):  # SPEC §1 "Beyond the paper": resolved in d3_auto
            return fit_auto(self, model, retain, evaluator=evaluator, device=device, progress=progress,
                            checkpoint=checkpoint)
        if self.input_prune:  # before any split, warm start or distance: the start D3 moves from
            pruned = self.input_prune_resolved = prune_inputs(model, retain, self.tolerance, self.min_tolerance, device)
            if pruned["pruned"]:
                log.info("D3: set aside %d of the %d inputs of %s that the retain images barely vary (retain "
                         "accuracy %.2f -> %.2f %%)", pruned["pruned"], pruned["features"], pruned["layer"],
                         pruned["start_acc"], pruned["acc"])
        scaled = self.calibrate_logits(model, retain, device)  # before anything reads the logits
        chooser = None
        if self.select == "heldout":
            retain, held = split_retain(retain, self.val_fraction, self.seed)
            start = accuracy(model, held, device)
            tol = resolve_tolerance(self.tolerance, start, len(held), self.min_tolerance)
            chooser = EpochChooser(held, start, tol, device)
        # lmd_control="loss": the suspect model's own clean loss on the retain data is the bound
        target = auto_eps(model, retain, 0.0, device) if self.lmd_control == "loss" else None
        example = retain.x[:1].to(device)  # finds the forward order of the model's Linear layers
        # shared_radius: a frozen copy of the suspect, or every image's copy crafted against it, before any weight moves
        shared = None
        vars(self).pop("shared_resolved", None)  # an earlier run's, when this D3 is reused
        if self.shared_radius and self.shared_schedule == "once":
            shared = CraftedOnceCopies(model, retain.x, retain.y, self.shared_radius, self.shared_steps,
                                       self.shared_fraction, device, self.seed, self.shared_escalate)
            if self.shared_escalate > 1:
                self.shared_resolved = {"fooled_by_radius": shared.fooled_by_radius}
        elif self.shared_radius:
            shared = SharedAdversarialCopies(model, retain.x, self.shared_radius, self.shared_steps, self.shared_fraction)
        named = self.selected(model, example)
        # the suspect's own clean outputs, taken before any weight moves (distill > 0); scored per
        # batch when the loop changes the images, cached per image otherwise
        # (distill_source "retain": the suspect's outputs on the plain retain images, looked up by index whatever the
        # loop does to the images)
        cache = self.distill_source == "retain" or not self.alters_images
        targets = SuspectTargets(model, retain.x, retain.y, device, cache=cache) if self.distill else None
        weights = list(named.values())
        init = [w.detach().clone() for w in weights]
        norms = [lp_norm(w0, self.p) for w0 in init]
        zero = [name for name, n in zip(named, norms) if float(n) == 0.0]
        if zero:  # the norm constraint (Eq. 2) pins such a weight at zero, and a zero classifier passes no gradient
            log.warning("D3: %s %s all zeros (never trained? torchvision initialises some heads so); the norm "
                        "constraint keeps %s at zero", ", ".join(zero), "is" if len(zero) == 1 else "are",
                        "it" if len(zero) == 1 else "them")
        scales = angle_scales(norms) if self.layer_weighting == "angle" else None
        if self.layer_weighting in ("size", "size-median"):
            scales = size_scales(norms, cap=median_norm(norms) if self.layer_weighting == "size-median" else None)
        if self.classifier_weight != 1.0:  # the final classifier's distance counts classifier_weight times
            head = linear_classifier(model, example) or self.selected_in(model, "auto", example)
            scales = [(1.0 if scales is None else scales[i]) * (self.classifier_weight if name in head else 1.0)
                      for i, name in enumerate(named)]
        metric = None
        if self.layer_weighting == "fisher":  # the suspect's, before the warm start moves anything
            fisher = clean_fisher(model, weights, retain, self.batch_size, device)
        if self.init_layers == "selected":
            started = named
        else:  # only the classifier's (or the head's) weights get the warm start; the rest start where they are
            if self.init_layers == "auto":
                head = self.selected_in(model, "auto", example)
            else:
                head = linear_classifier(model, example, whole_head=self.init_layers == "linear-head")
            if not head:
                log.warning("D3: the model has no nn.Linear classifier to warm-start; every selected "
                            "weight starts where it is (init_layers=%r)", self.init_layers)
            started = {n: w for n, w in named.items() if n in head}
        if self.layer_weighting == "fisher":  # restarted weights keep the plain distance
            metric = fisher_metric(fisher, [n in started for n in named])
        generator = torch.Generator().manual_seed(self.seed)
        if self.init.startswith("means"):
            start_from_class_means(model, started, retain, self.p, device, generator,
                                   orthogonal=self.init == "means-orthogonal")
        else:
            warm_start(list(started.values()), self.init, self.p, generator)
        if self.head_bias == "zero":
            zero_classifier_bias(model, self.selected_in(model, "auto", example))
        if self.head_warmup:
            self.warm_up_classifier(model, retain, example, device)

        lmd = Lambda(self.lmd_range[0] if self.lmd_control == "geometric" else self.lmd)  # changed between epochs
        alpha = Lambda(self.distill)  # distill_schedule "decay": lowered between epochs

        sam = {} if self.sam_rho is None else {"sam_rho": self.sam_rho, "sam_adaptive": True, "sam_eta": 0.0}
        config = self.loop_config(retain, momentum=self.momentum, weight_decay=0.0, bn_eval=self.freeze_bn,
                                  warmup_steps=self.warmup_steps(retain), **sam)
        # bf16/fp16 steps are short enough for the per-weight distance and projection to show:
        # fused there (d3_kernels); fp32 keeps the per-weight code and its exact results
        fused = use_fused(resolve_precision(config.precision, device, config.amp).name, self.p)
        if fused:
            start_norms = torch.stack(norms)
            project = lambda m: fused_project(weights, start_norms)
        else:
            project = lambda m: project_to_norms(weights, norms, self.p)

        # universal_radius: the bound also on the batch under the shared perturbation that raises its loss most;
        # shared_radius: on its per-image perturbations that fool the model and the suspect alike
        universal = (UniversalPerturbation(retain.x, self.universal_radius, device=device)
                     if self.universal_radius else None)
        copies = universal or shared
        # anchor: the weights outside the distance pulled back toward the suspect's (L2-SP), read before any step
        pull = Anchor(model, weights, self.anchor) if self.anchor else None

        def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor, ascent: bool = False):
            soft = None
            if targets is not None:  # y: what targets.loop_y batched (image indices when cached)
                labels, soft = targets(x, y)
                if copies is None or copies.loop_y is None:  # copies looked up by image index keep the indices
                    y = labels
            weight = alpha.value
            if copies is not None:
                x, y = copies.batch_with_perturbed(x, y, m)
                if soft is not None:  # the copies, of the batch's first images, keep their originals' targets
                    plain = len(soft)
                    soft = torch.cat([soft, soft[:len(y) - plain]])
                    if self.distill_on != "both":  # α on one part, 0 (the labels alone) on the other
                        on_images = self.distill_on == "images"
                        weight = torch.cat([torch.full((plain,), weight if on_images else 0.0, device=y.device),
                                            torch.full((len(y) - plain,), 0.0 if on_images else weight,
                                                       device=y.device)])
            logits = m(x)
            loss, stats = d3_loss(logits, y, weights, init, lmd.value, self.eps, self.p, scales,
                                  soft, weight, self.distill_temperature, fused, distance_grad=not ascent,
                                  metric=metric)
            if pull is not None:
                penalty = pull.penalty()
                loss = loss + penalty
                stats["anchor"] = float(penalty.detach())
            if copies is not None:  # the perturbed copies' error rate: how far δ (or the shared copies) still get
                stats[copies.ERROR_KEY] = copies.error_rate(logits, y)
            if target is not None and (ascent or self.sam_rho is None):  # once a step
                lmd.value = track_loss_lmd(lmd.value, stats["ce"], target, self.lmd_rate, self.lmd_range)
            return loss, stats

        def on_epoch_end(epoch: int, m: nn.Module) -> dict[str, float]:
            row = {"distance": total_distance(weights, init, self.p), "lmd": lmd.value}
            if copies is not None:
                row[copies.SIZE_KEY] = copies.size()
            if pull is not None:
                row["anchor_drift"] = pull.drift()
            if chooser is not None:
                row.update(chooser(epoch, m, row["distance"]))
                if self.lmd_control == "heldout":
                    lmd.value = control_lmd(lmd.value, row["heldout_acc"] >= chooser.start_acc - chooser.tolerance,
                                            self.lmd_range)
            if self.distill_schedule == "decay":  # the α the epoch ran with, then the next epoch's
                row["distill_alpha"] = alpha.value
                alpha.value = self.distill * max(0.0, 1.0 - epoch / self.epochs)
            if self.lmd_control == "geometric":
                lo, hi = self.lmd_range
                lmd.value = lo * (hi / lo) ** (epoch / max(self.epochs - 1, 1))
            if evaluator is not None:
                row.update(evaluator(epoch, m))
            return row

        # the weights' start (init, norms, warm start) is recomputed from the suspect model on a
        # resume; what the epochs changed (λ, the chooser's kept epochs) is in the checkpoint
        extra = {"lmd": lmd, **({"chooser": chooser} if chooser is not None else {}),
                 **({"distill_alpha": alpha} if self.distill and self.distill_schedule == "decay" else {}),
                 **({"universal": universal} if universal is not None else {})}
        recalibrate = self.bn_recalibrate is True
        if self.bn_recalibrate == "auto" and not self.freeze_bn:  # read before the run moves the statistics
            share = stale_share(model, self.epochs * self.steps_per_epoch(retain))
            recalibrate = share > STALE_SHARE
            self.bn_recalibrate_resolved = {"stale_share": round(share, 6), "recalibrated": recalibrate}
            if recalibrate:
                log.info("D3: a BatchNorm layer's momentum would leave %.1f %% of the suspect's running statistics "
                         "after this run's steps; re-estimating them on the retain images after training", 100 * share)
        averaged = None
        if self.average:  # the mean of the projected weights after each of the last steps
            trained = [q for q in model.parameters() if q.requires_grad]
            total = config.epochs * len(Batches(retain.x, retain.y, config.batch_size, drop_last=config.drop_last))
            averaged = extra["average"] = WeightAverage(trained, averaging_start(total, self.average))

        def after_step(m: nn.Module) -> None:
            project(m)
            if universal is not None:
                universal.ascend()
            if averaged is not None:
                averaged(m)
        # what the loop batches beside the images: the labels, or image indices where a table is looked up
        loop_y = targets.loop_y if targets is not None else retain.y
        if copies is not None and copies.loop_y is not None:
            loop_y = copies.loop_y
        state = train(model, retain.x, loop_y, config, objective=objective,
                      optimizer=self.classifier_optimizer(model, config, example), after_step=after_step,
                      on_epoch_end=on_epoch_end, checkpoint=checkpoint, extra_state=extra, device=device,
                      perturb_objective=lambda m, x, y: objective(m, x, y, ascent=True), progress=progress, desc="D3")
        if chooser is not None:
            chooser.restore(model)
            self.selection_resolved = chooser.summary()
        if averaged is not None:
            steps = averaged.apply()
            project(model)  # Eq. 2 for the mean, which is shorter than the weights it averages
            self.average_resolved = {"steps": steps, "batchnorm_reestimated": has_batchnorm(model) and not self.freeze_bn}
            recalibrate = recalibrate or self.average_resolved["batchnorm_reestimated"]
        if recalibrate:
            reestimate_batchnorm(model, retain.x, device)
        if scaled is not None:  # the suspect's own scale back
            scale_classifier(*scaled)
        return state

    def calibrate_logits(self, model: nn.Module, retain: ImageSplit, device: torch.device
                         ) -> tuple[nn.Module, float] | None:
        """``logit_scale``: divide the final classifier by the suspect's retain temperature T and
        return ``(classifier, T)`` to multiply it back with; None when nothing was changed. Reads
        the model's outputs on the retain images and their labels only."""
        if not self.logit_scale:
            return None
        example = retain.x[:1].to(device)
        try:
            name = classifier_name(model, example)
        except SelectionError:
            self.logit_scale_resolved = {"temperature": None, "scaled": False, "reason": "no classifier"}
            return None
        head = model.get_submodule(name)
        temperature = fit_temperature(model_outputs(model, retain.x, device=device), retain.y)
        measured = 1 / TEMPERATURE_LIMIT < temperature < TEMPERATURE_LIMIT
        homogeneous = measured and scales_logits(model, head, retain.x[:256], device)
        self.logit_scale_resolved = {"temperature": round(temperature, 4), "classifier": name,
                                     "scaled": homogeneous}
        if not measured:
            log.warning("D3: the suspect's outputs fit the retain labels no better than uniform guessing at any "
                        "scale (temperature %.3g); its logits are left as they are", temperature)
            self.logit_scale_resolved["reason"] = "no temperature fits the retain labels"
        if measured and not homogeneous:
            log.warning("D3: the model's outputs do not scale with its classifier %s's weights; its logits "
                        "(temperature %.3g on the retain images) are left as they are", name, temperature)
            self.logit_scale_resolved["reason"] = "outputs do not scale with the classifier"
        if not homogeneous:
            return None
        log.info("D3: the suspect's logits fit the retain images best divided by %.3g; its classifier %s runs D3 "
                 "at that scale and is scaled back after it", temperature, name)
        scale_classifier(head, 1.0 / temperature)
        return head, temperature
