"""What to try when a purification cost too much clean accuracy: one warning for ``distox
purify``, ``distox defend`` and :func:`distox.purify`.

Every suggestion is one the project measured to reduce the accuracy cost, with where the
measurement is (BENCHMARKS.md, section "A default that purifies any model"); a suggestion is left
out when the run already uses it (a larger λ when λ is already that large, the ``paper`` preset
when it already ran). Methods without a measured remedy get none, and the warning says so
rather than guessing.

Example: ``accuracy_warning(90.0, 80.0, 2.0, "d3", {"preset": "default", "lmd": 10.0}, 3000)``
is "accuracy fell by 10.00 points (90.00% -> 80.00%), more than the tolerance of 2; measured to
help (...): preset='paper' (...); a larger lmd, e.g. lmd=40 (...)".
"""
from __future__ import annotations

from typing import Any

#: Points of clean accuracy a purification may lose before the warning (every entry point).
DEFAULT_TOLERANCE = 2.0
#: Where the measurements behind the advice are.
SOURCE = 'BENCHMARKS.md, "A default that purifies any model"'
#: λ measured to cost less accuracy than the default's 10 (3,000 images, the all-layer distance with the overlay,
#: "Fifth round").
LARGER_LMD = 40.0
#: the copies' radius suggested where the default's (0.03) left a backdoor ("Twenty-fourth round")
LARGER_SHARED_RADIUS = 0.05
#: Retain size of the study's main tables; fewer images were measured to cost more accuracy.
STUDY_RETAIN = 3000


class AccuracyWarning(UserWarning):
    """The purified model's clean accuracy fell by more than the tolerance."""


#: ASR (%) above which a purification given the attack warns that the backdoor remains. A model that never saw
#: the trigger sends some triggered images to the target too, and a purification knows no clean model: the clean
#: twins of twelve study and user models sent 0.13–9.69 % there, except a SAM-trained VGG's (28.56 %) and a
#: MobileNetV3-Small's with a stripe trigger (19.72 %) (BENCHMARKS.md "Twenty-second round").
DEFAULT_ASR_TOLERANCE = 10.0


class BackdoorWarning(UserWarning):
    """The purified model still sends more than the ASR tolerance of triggered images to the target."""


def accuracy_advice(method: str, config: dict[str, Any], retain_size: int) -> list[str]:
    """Measured suggestions for ``method`` run with the resolved ``config`` on ``retain_size``
    clean images (empty when none was measured to help)."""
    tips: list[str] = []
    if method == "d3":
        preset = config.get("preset")
        lmd = config.get("lmd")
        if retain_size < STUDY_RETAIN and preset == "default":
            tips.append(f"more clean images (you gave {retain_size}; the default's mean ACC change on eleven "
                        "development models without BatchNorm, at one retain draw, was -5.80 points with 500 images, "
                        "-3.40 with 1,000 and -1.24 with 3,000, \"Thirtieth round\"; on four with BatchNorm -6.90, "
                        "-5.18 and -3.14, \"Thirty-first round\")")
        elif retain_size < STUDY_RETAIN:
            tips.append(f"more clean images (you gave {retain_size}; the all-layers preset's worst ACC change on the "
                        "eight earlier study models, at three retain draws, was -12.25 points with 500 images, -9.55 "
                        "with 1,000 and -5.85 with 3,000)")
        if float(config.get("blend") or 0) > 0:
            tips.append("blend=0, no overlay augmentation (with the default, on models with BatchNorm: mean ACC "
                        "change -0.77 against -1.28 on 20 check cells and -1.42 against -1.75 on 11 development cells, "
                        "as many cells under the ASR bar, but a MobileNetV3-Small's backdoor stayed at 44-72 % where "
                        "the default cleared it, \"Twenty-seventh round\"; the all-layers preset without it and "
                        "without its BatchNorm rule: mean ACC change -0.35 against -2.16 with the overlay on 20 study "
                        "cells, worst -5.35 against -9.75; it left the backdoor above the ASR bar in 6 of 20 cells "
                        "against 1 of 20)")
        if preset == "all-layers":
            tips.append("preset='default' (the distance on the classifier and the bound also on adversarial copies: "
                        "on 26 cells of study and user models, mean ACC change -2.11 against this preset's -3.06 on the "
                        "same, and 24 cells under the ASR bar against 21, \"Twenty-fifth round\")")
            tips.append("preset='reference' (on 20 study cells: mean ACC change -1.08 against this preset's "
                        "-1.25, worst -6.40 against -5.85; 17 of 20 cells under the ASR bar against 19; on four "
                        "LeNet-5s, \"Ninth round\": -2.25 against -4.47, 9 of 12 cells under the bar each; but on the tutorial "
                        "CNN of PyTorch's MNIST example, \"Tenth round\": -3.92 against -1.89, 12 of 12 cells against 11)")
        if preset == "reference":
            tips.append("preset='all-layers' with blend=0 (mean ACC change -0.35 against the reference preset's -1.08 "
                        "on 20 study cells, worst -5.35 against -6.40; 14 of 20 cells under the ASR bar against 17)")
        if preset != "paper":
            tips.append("preset='paper' (distance on the final classifier only, no adversarial copies; on 20 study "
                        "cells: mean ACC change +1.39, worst -2.45, against the all-layers preset's -1.25 and -5.85; it "
                        "leaves more backdoors in: 11 of 20 cells under the ASR bar against 19)")
        if isinstance(lmd, (int, float)) and lmd < LARGER_LMD:
            tips.append(f"a larger lmd, e.g. lmd={LARGER_LMD:g} (with the all-layer distance and the overlay, before "
                        "its BatchNorm "
                        "rule, on the three study models that lost most: mean ACC change -2.66 against -5.92 at lmd "
                        "10; it removes less: 6 of 9 cells under the ASR bar against 8 of 9)")
    elif method == "ft-sam":
        tips.append("method 'd3' (its all-layers preset on 20 study cells: mean ACC change -1.25 against FT-SAM's "
                    "-2.42, worst -5.85 against -11.40, and 19 of 20 cells under the ASR bar against 8; its default, "
                    "\"Twenty-fifth round\", cost 0.95 points less than all-layers on 26 study and user cells)")
    return tips


def with_advice(head: str, tips: list[str], none: str) -> str:
    """A warning's text: ``head``, then the measured ``tips`` with where they were measured, or
    ``none`` (what to say when nothing was measured to help)."""
    if not tips:
        return f"{head}; {none} ({SOURCE})"
    return f"{head}; measured to help ({SOURCE}): " + "; ".join(tips)


#: The distance weight the ``default`` preset's backdoor advice suggests below its own λ (the reference code's).
SMALLER_LMD = 0.5


def backdoor_advice(method: str, config: dict[str, Any], retain_size: int) -> list[str]:
    """Measured suggestions for ``method`` (run with the resolved ``config`` on ``retain_size``
    clean images) when the backdoor survived it; empty when none was measured to help. The D3
    ones were measured where the default left it: torchvision ResNet-18s trained as users train them."""
    tips: list[str] = []
    if method == "d3":
        preset = config.get("preset")
        if retain_size < 4000:
            tips.append(f"more clean images (you gave {retain_size}; a torchvision ResNet-18 whose backdoor the "
                        "default left at 21 % with 3,000 images and 31-54 % with 800 was cleared with 4,000, "
                        "\"Nineteenth round\")")
        if preset != "reference":
            tips.append("preset='reference', epochs=12, batch_size=32, augment=False (on user ResNet-18s: 4 of 5 cells "
                        "cleared at 3,000 images at +0.3 to +2.2 ACC points, and 2.26 % with 800 images where the "
                        "default left 13.91 %; it removed nothing on a MobileNetV3-Small, \"Twenty-first round\")")
        if preset == "all-layers" and config.get("layer_weighting", "sum") != "size-median":
            tips.append("layer_weighting='size-median' (on user ResNet-18s: 4 of 4 cells cleared at 3,000 images, "
                        "at -1.4 to -3.4 ACC points; it costs MobileNets about 2 points more, \"Twenty-first round\")")
        if preset == "all-layers" and not config.get("shared_radius") and not config.get("universal_radius"):
            tips.append("preset='default' (this preset's settings with the distance on the classifier and the "
                        "clean-loss bound also on adversarial copies of the retain images crafted once against the "
                        "suspect: 24 of 26 cells under the ASR bar against this preset's 21, the five it left among "
                        "them, at 0.95 ACC points less on average, \"Twenty-fifth round\"); or shared_radius=0.03, "
                        "shared_schedule='once', shared_steps=5 with this preset's all-layer distance (20 of 20 cells, "
                        "0.9 ACC points more than without, \"Twenty-fourth round\")")
        ran_all = config.get("layers_resolved", {}).get("layers") == "all"  # a model with no classifier
        if preset == "default" and config.get("layers", "auto") == "auto" and not ran_all:
            tips.append("preset='all-layers', shared_radius=0.03, shared_schedule='once', shared_steps=5 (the same "
                        "copies with the distance over every Linear and Conv2d weight: 20 of 20 cells, the five where "
                        "all-layers alone left a backdoor among them, at 0.9 ACC points more than all-layers on average "
                        "and 1.7 more than the default on the cells both ran, \"Twenty-fourth round\")")
        by_rule = (config.get("norm_rule_resolved") or {}).get("changed") or {}  # what the default's rule set
        if preset == "default" and by_rule.get("distill"):
            tips.append("distill=0 (the default without the suspect's soft targets, the preset 'copies': with 500 "
                        "images it left 1 of 11 development backdoors without BatchNorm above the bar where the soft "
                        "targets left 2, and at 3,000 images it cleared a ViT Blended with label smoothing (2.11 % "
                        "against 2.06) and a VGG BadNets trained with augmentation (5.54 % against 3.94) that the "
                        "soft targets left, at 0.25 to 2.06 accuracy points less on average, \"Thirtieth round\", "
                        "\"Thirty-first round\")")
        ran = {**config, **by_rule}  # the rule's values won
        if preset == "default" and ran.get("distill") and ran.get("distill_on") == "copies" and ran.get("shared_radius"):
            tips.append("distill_on='both' (the suspect's soft targets on the plain images too, as the default of the "
                        "thirty-third and thirty-fourth rounds ran them, the preset 'soft-lr03': on a ConvMixer whose "
                        "frame backdoor the default leaves at 2.30 and 2.41 % against a floor of 2.00 with 3,000 images "
                        "it cleared both draws, 0.24 and 0.31 %, at 0.4 ACC points less, \"Thirty-fourth round\")")
        lmd = config.get("lmd")
        if preset == "default" and isinstance(lmd, (int, float)) and lmd > SMALLER_LMD:
            tips.append(f"lmd={SMALLER_LMD:g} (the reference code's λ: on a ConvMixer with BatchNorm whose frame trigger "
                        "the default of the time (lr 0.01 there, the preset 'soft' now) left at 4.96 and 19.01 % with "
                        "3,000 images it cleared both draws (0.01 and 0.00 %) at 2.0 and 1.3 ACC points more; on four "
                        "study models with BatchNorm it cost 2.1 to 2.8 points more, \"Thirty-second round\")")
        if preset == "default" and 0 < float(config.get("shared_radius") or 0) < LARGER_SHARED_RADIUS:
            tips.append(f"shared_radius={LARGER_SHARED_RADIUS} (copies at a larger radius: with the all-layer distance "
                        "they left less than those at 0.03 in 9 of 12 cells, at 0.8 points more, \"Twenty-fourth round\")")
        if not config.get("universal_radius") and not config.get("shared_radius"):
            tips.append("universal_radius=0.1 (on user ResNet-18s: 4 of 4 cells cleared at 3,000 images, at -2.1 to "
                        "-4.3 ACC points; on other models it cost 1.7 points more than the default, "
                        "\"Twenty-second round\")")
        if preset == "paper":
            tips.append("preset='default' (the paper's distance on the classifier with the bound also on adversarial "
                        "copies: 24 of 26 study and user cells under the ASR bar, \"Twenty-fifth round\"; the "
                        "all-layers preset "
                        "19 of 20 study cells against the paper preset's 11)")
    elif method in ("ft", "ft-sam", "sau"):
        tips.append("method 'd3' (its all-layers preset left the backdoor of the eight study models at seed 0 under "
                    "the ASR bar in 8, FT-SAM in 3, SAU in 2, \"SAU on the study models\"; plain FT in 3 of 8, "
                    "\"Final\"; its default 24 of 26 study and user cells, \"Twenty-fifth round\")")
    return tips


def backdoor_warning(asr_after: float, tolerance: float | None, method: str, config: dict[str, Any],
                     retain_size: int, floor: bool = False) -> str | None:
    """The warning text when the purified model's ASR is above ``tolerance`` % (None otherwise or
    when ``tolerance`` is None). ``floor``: ``tolerance`` is the attack's own floor, max(2, the clean
    model's ASR + 2), not a guess (``distox defend`` on a run with a clean reference)."""
    if tolerance is None or not float(asr_after) > float(tolerance):
        return None
    bar = (f"above the floor of {tolerance:.2f}% (max(2, the clean model's ASR + 2))" if floor else
           f"more than the ASR tolerance of {tolerance:g}% (a model that never saw the trigger may send some there "
           "too; compare with a clean model's ASR when you have one)")
    head = f"the backdoor remains: {float(asr_after):.2f}% of the triggered test images still go to the target, {bar}"
    return with_advice(head, backdoor_advice(method, config, retain_size), f"no setting of {method} was measured to "
                       "remove more")


def accuracy_warning(before_acc: float, after_acc: float, tolerance: float | None, method: str,
                     config: dict[str, Any], retain_size: int, what: str = "accuracy") -> str | None:
    """The warning text when ``what`` fell by more than ``tolerance`` points (None otherwise or
    when ``tolerance`` is None)."""
    drop = float(before_acc) - float(after_acc)
    if tolerance is None or not drop > float(tolerance):
        return None
    head = (f"{what} fell by {drop:.2f} points ({before_acc:.2f}% -> {after_acc:.2f}%), "
            f"more than the tolerance of {tolerance:g}")
    return with_advice(head, accuracy_advice(method, config, retain_size), f"no setting of {method} was measured "
                       "to reduce that cost")
