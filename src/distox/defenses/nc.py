"""NC — Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor
Attacks in Neural Networks", IEEE S&P 2019), as BackdoorBench runs it (``defense/nc.py``, ported
from VinAI's PyTorch version, ``config/defense/nc/config.yaml``).

1. **Reverse-engineering**, for every class t = 0 … K−1: a mask m ∈ [0, 1]^(H×W) shared by all
   channels and a pattern p ∈ [0, 1]^(C×H×W), parameterised as m = tanh(m')/(2 + 1e-7) + 0.5
   (likewise p) with m' = p' = 1 at the start, stamp the retain images as x' = (1 − m)·x + m·p and
   minimise CE(f(x'), t) + cost·a·‖m‖₁ over the frozen model f (eval mode) with Adam (lr 0.1,
   betas (0.5, 0.9)), one epoch over the (augmented) retain set at a time, up to ``nc_epochs`` (80).
   After each epoch, with ``asr`` the epoch's attack success (%) and ``reg`` its mean ‖m‖₁:

   - *best mask*: when asr ≥ 98 and reg < the best so far, the mask and pattern of that moment
     are kept;
   - *early stop*: once a best mask exists, a counter counts epochs whose best improved by less
     than 1 % (best ≥ 0.99 × the previous best) and is reset otherwise; the class stops when it
     reaches 25 and the cost has been both raised and lowered at least once;
   - *cost schedule*: starting at ``init_cost`` (1e-3), after 5 (``patience``) epochs in a row
     with asr ≥ 98 the cost is multiplied by 2 (``cost_multiplier``), after 5 in a row below it
     divided by 2^1.5.

2. **Detection**: with l_t = ‖m_t‖₁ (summed over H×W), the anomaly index of class t is
   |l_t − median(l)| / (1.4826 · median(|l − median(l)|)); a class is flagged when its index
   exceeds 2 (``anomaly_threshold``) *and* its mask is no larger than the median (a backdoor is a
   shortcut: its trigger is small). Flagged classes are listed by ascending mask norm.

3. **Unlearning**, only when a class is flagged: the retain set, seeded-shuffled, keeps its first
   80 % clean; the other 20 % (``unlearning_ratio``) are stamped with the reversed trigger of each
   flagged class, one copy per flagged class, **with their true labels**; the model is then
   fine-tuned on that set with FT's settings and the shared training loop (SGD lr 0.01, momentum
   0.9, weight decay 5e-4, cosine, batch 256, 100 epochs, random crop (+ flip as the reference
   for the dataset)). When nothing is flagged the model is returned **untouched** (no
   fine-tuning, an empty history), as in the reference.

What was found is in ``Result.info`` (and ``defense.json``'s ``info``): ``flagged`` (classes,
ascending mask norm), ``mask_norms`` and ``anomaly_index`` (lists indexed by class; an index
is None where the MAD is 0 and the norm is off the median), ``median``, ``mad``,
``attack_success`` (% of the kept mask on the retain set, per class), ``reverse_epochs`` (epochs
run per class), ``unlearned`` and ``unlearning_size``.

Differences from the reference, on purpose:

- **The fine-tuned model is returned.** The reference fine-tunes one model object but saves
  another, freshly loaded from the backdoored weights, so its checkpoint is the un-fine-tuned model.
- **Mask-size penalty scaled with image area**: the penalty is cost·‖m‖₁·(32·32)/(H·W), so
  ``init_cost`` means at any resolution what 1e-3 means at 32×32 in the reference (the
  reference's sum over H×W weighs a 64×64 mask 4× more, an 8×8 one 16× less);
  ``scale_cost=False`` restores the reference's unscaled sum.
- **Triggers stay float tensors in memory**: the reference writes them to PNG with min-max
  stretching, reads them back (8-bit, stretched) and stamps in uint8 with wrap-around on
  overflow; distox stamps x·(1 − m) + m·p with the reversed m and p themselves, in [0, 1].
- **The real median** (mean of the two middle values for an even K, as the original NC's
  ``np.median``), where the reference's ``torch.median`` takes the lower one; a MAD of 0 gives
  an index of 0 at the median and ∞ elsewhere instead of a division by zero.
- **No successful mask**: the last epoch's mask is kept, as in the original NC (the
  reference's port keeps the first epoch's).
- **One retain set**: the unlearning set is drawn from the same retain images (the defender
  holds no other), where the reference draws a second random 5 % of the training set; the
  pattern lives in [0, 1] pixel space since distox models normalise internally (the reference
  blends in normalised space with CIFAR-10 statistics even on CIFAR-100).
- Attack success and mask norm per epoch are means over images rather than over batches.

Cost: K × up to ``nc_epochs`` epochs of reverse-engineering (Adam steps on the mask and
pattern only), plus the fine-tuning when a class is flagged. With a ``checkpoint`` the
fine-tuning resumes; the reverse-engineering (deterministic for a seed) is recomputed. The budget
is counted in epochs, as in the reference, so a small retain set gets few Adam steps per class
(67 images at batch 256: one per epoch, 80 in all, against 800 on CIFAR-10's 2,500): on such
sets a real trigger may not shrink enough to be flagged; a smaller ``batch_size`` or a larger
``nc_epochs`` gives it more steps.

Example:
    >>> result = NC(nc_epochs=20, epochs=20)(suspect_model, retain_split)
    >>> result.info["flagged"], result.info["anomaly_index"]
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..progress import progress_bar
from ..training import Checkpoint, TrainState, train
from .base import DefenseError, check_retain
from .ft import FT
from .registry import register

#: Image area (32×32) at which the reference's ``init_cost`` was set; with ``scale_cost`` the
#: mask-size penalty is multiplied by REFERENCE_AREA / (H·W).
REFERENCE_AREA = 32 * 32
#: Consistency constant of the MAD for normally distributed norms.
MAD_CONSISTENCY = 1.4826
#: The reference's tanh squashing: tanh(·)/(2 + EPSILON) + 0.5 stays strictly inside (0, 1).
EPSILON = 1e-7


def squash(t: torch.Tensor) -> torch.Tensor:
    """Unconstrained → (0, 1): tanh(t)/(2 + 1e-7) + 0.5 (the reference's parameterisation)."""
    return torch.tanh(t) / (2 + EPSILON) + 0.5


def mask_penalty(mask: torch.Tensor, scale_cost: bool = True) -> torch.Tensor:
    """‖m‖₁ of a mask (…, H, W), times (32·32)/(H·W) with ``scale_cost``: a mask covering the same
    fraction of the image costs the same at any resolution, and at 32×32 it is the reference's sum."""
    h, w = mask.shape[-2:]
    return mask.sum() * (REFERENCE_AREA / (h * w) if scale_cost else 1.0)


@dataclass
class Trigger:
    """A reversed trigger for ``target``: ``mask`` (1, 1, H, W) and ``pattern`` (1, C, H, W),
    both in [0, 1]; ``norm`` = ‖mask‖₁, ``attack_success`` (%) on the retain set when kept,
    ``epochs`` run."""

    target: int
    mask: torch.Tensor
    pattern: torch.Tensor
    norm: float
    attack_success: float
    epochs: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp images ``x`` (N, C, H, W) in [0, 1]: (1 − m)·x + m·p, clipped to [0, 1]."""
        m, p = self.mask.to(x.device, x.dtype), self.pattern.to(x.device, x.dtype)
        return ((1 - m) * x + m * p).clamp(0.0, 1.0)


class TriggerModel(nn.Module):
    """The frozen classifier behind a learnable mask and pattern (the only trained parameters).

    Training mode never reaches the classifier: it stays in eval mode (BatchNorm statistics and
    dropout frozen), as the reference's frozen copy does.
    """

    def __init__(self, classifier: nn.Module, shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = shape
        self.classifier = classifier.eval().requires_grad_(False)
        self.mask_tanh = nn.Parameter(torch.ones(1, 1, h, w))
        self.pattern_tanh = nn.Parameter(torch.ones(1, c, h, w))

    def train(self, mode: bool = True) -> "TriggerModel":
        super().train(mode)
        self.classifier.eval()
        return self

    def mask(self) -> torch.Tensor:
        return squash(self.mask_tanh)

    def pattern(self) -> torch.Tensor:
        return squash(self.pattern_tanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask()
        return self.classifier((1 - m) * x + m * self.pattern())


@dataclass
class CostSchedule:
    """The reference's per-epoch bookkeeping for one class: best mask, early stop and cost.

    :meth:`update` takes the epoch's attack success (%) and mean mask norm and returns whether
    the current mask is the new best; :attr:`stop` tells when to stop.
    """

    cost: float
    success_threshold: float = 98.0
    patience: int = 5
    multiplier: float = 2.0
    early_stop: bool = True
    early_stop_threshold: float = 0.99
    early_stop_patience: int = 25
    best_reg: float = math.inf
    _early_best: float = math.inf
    _early_counter: int = 0
    _up: int = 0
    _down: int = 0
    raised: bool = False
    lowered: bool = False
    stop: bool = False

    def update(self, success: float, reg: float) -> bool:
        improved = success >= self.success_threshold and reg < self.best_reg
        if improved:
            self.best_reg = reg
        if self.early_stop:
            if self.best_reg < math.inf:  # counts only once a successful mask exists
                worse = self.best_reg >= self.early_stop_threshold * self._early_best
                self._early_counter = self._early_counter + 1 if worse else 0
            self._early_best = min(self.best_reg, self._early_best)
            if self.raised and self.lowered and self._early_counter >= self.early_stop_patience:
                self.stop = True
        if success >= self.success_threshold:
            self._up, self._down = self._up + 1, 0
        else:
            self._up, self._down = 0, self._down + 1
        if self._up >= self.patience:
            self._up, self.cost, self.raised = 0, self.cost * self.multiplier, True
        elif self._down >= self.patience:
            self._down, self.cost, self.lowered = 0, self.cost / self.multiplier ** 1.5, True
        return improved


def anomaly_indices(norms: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(anomaly index per class, median, MAD) of the mask norms: |l − median| / MAD with
    MAD = 1.4826·median(|l − median|) and the real median (two middle values averaged). A MAD
    of 0 gives 0 at the median and ∞ elsewhere."""
    norms = norms.double()
    median = torch.quantile(norms, 0.5)
    dev = (norms - median).abs()
    mad = MAD_CONSISTENCY * torch.quantile(dev, 0.5)
    if mad > 0:
        index = dev / mad
    else:
        index = torch.where(dev > 0, torch.full_like(dev, math.inf), torch.zeros_like(dev))
    return index, float(median), float(mad)


def flag_classes(norms: torch.Tensor, threshold: float = 2.0) -> list[int]:
    """Classes whose anomaly index exceeds ``threshold`` and whose mask norm is at most the
    median (only small masks betray a backdoor), by ascending norm."""
    index, median, _ = anomaly_indices(norms)
    flagged = [t for t in range(len(norms)) if float(norms[t]) <= median and float(index[t]) > threshold]
    return sorted(flagged, key=lambda t: (float(norms[t]), t))


def unlearning_set(retain: ImageSplit, triggers: list[Trigger], ratio: float, seed: int) -> ImageSplit:
    """The unlearning data: a seeded shuffle of ``retain`` keeps its first ⌊N·(1 − ratio)⌋
    images clean; the rest are stamped with each trigger in turn (one copy per trigger), all
    with their true labels."""
    order = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed))
    n_clean = int(len(retain) * (1 - ratio))
    clean, stamped = order[:n_clean], order[n_clean:]
    xs, ys = [retain.x[clean]], [retain.y[clean]]
    for trig in triggers:
        xs.append(trig.apply(retain.x[stamped]))
        ys.append(retain.y[stamped])
    return ImageSplit(torch.cat(xs), torch.cat(ys), retain.dataset)


@register
class NC(FT):
    """Neural Cleanse: reverse-engineer a trigger per class, flag small outliers by MAD,
    unlearn the flagged triggers; see the module doc.

    Args:
        nc_epochs: reverse-engineering epochs per class at most (80).
        mask_lr: Adam learning rate of the mask and pattern (0.1). mask_betas: (0.5, 0.9).
        init_cost: starting weight of the mask-size penalty (1e-3 at 32×32, see ``scale_cost``).
        cost_multiplier: ×this up, ÷this^1.5 down (2.0). patience: epochs before a cost change (5).
        success_threshold: attack success (%) a mask must reach to be kept (98.0).
        early_stop: stop a class early (True). early_stop_threshold: 0.99 (less than 1 %
            improvement counts). early_stop_patience: 25.
        anomaly_threshold: anomaly index above which a small mask is flagged (2.0).
        unlearning_ratio: fraction of the retain images stamped per flagged class (0.2).
        scale_cost: scale the penalty by (32·32)/(H·W) (True; False: the reference's raw sum).
        momentum, weight_decay: SGD's for the unlearning (0.9, 5e-4), see :class:`FT`.
        epochs, batch_size, lr, augment, flip, seed: see :class:`~distox.defenses.base.Defense`
            (100, 256, 0.01, True, None, 0); ``batch_size`` and ``augment`` also serve the
            reverse-engineering, ``epochs`` and ``lr`` only the unlearning.
    """

    name = "nc"

    def __init__(self, nc_epochs: int = 80, mask_lr: float = 0.1, mask_betas: tuple[float, float] = (0.5, 0.9),
                 init_cost: float = 1e-3, cost_multiplier: float = 2.0, patience: int = 5,
                 success_threshold: float = 98.0, early_stop: bool = True, early_stop_threshold: float = 0.99,
                 early_stop_patience: int = 25, anomaly_threshold: float = 2.0, unlearning_ratio: float = 0.2,
                 scale_cost: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key, val in (("nc_epochs", nc_epochs), ("patience", patience),
                         ("early_stop_patience", early_stop_patience)):
            if int(val) < 1:
                raise DefenseError(f"{key} must be >= 1; got {val}")
        for key, val in (("mask_lr", mask_lr), ("init_cost", init_cost), ("anomaly_threshold", anomaly_threshold)):
            if not val > 0:
                raise DefenseError(f"{key} must be > 0; got {val}")
        if not cost_multiplier > 1:
            raise DefenseError(f"cost_multiplier must be > 1; got {cost_multiplier}")
        if not 0 < success_threshold <= 100:
            raise DefenseError(f"success_threshold is a percentage in (0, 100]; got {success_threshold}")
        if not 0 < early_stop_threshold <= 1:
            raise DefenseError(f"early_stop_threshold must be in (0, 1]; got {early_stop_threshold}")
        if not 0 < unlearning_ratio < 1:
            raise DefenseError(f"unlearning_ratio must be in (0, 1); got {unlearning_ratio}")
        if len(mask_betas) != 2 or not all(0 <= b < 1 for b in mask_betas):
            raise DefenseError(f"mask_betas must be two numbers in [0, 1); got {mask_betas}")
        self.nc_epochs, self.mask_lr = int(nc_epochs), float(mask_lr)
        self.mask_betas = (float(mask_betas[0]), float(mask_betas[1]))
        self.init_cost, self.cost_multiplier, self.patience = float(init_cost), float(cost_multiplier), int(patience)
        self.success_threshold, self.early_stop = float(success_threshold), bool(early_stop)
        self.early_stop_threshold, self.early_stop_patience = float(early_stop_threshold), int(early_stop_patience)
        self.anomaly_threshold, self.unlearning_ratio = float(anomaly_threshold), float(unlearning_ratio)
        self.scale_cost = bool(scale_cost)

    def reverse_engineer(self, model: nn.Module, retain: ImageSplit, target: int,
                         device: torch.device) -> Trigger:
        """The smallest trigger found that sends the retain images to ``target`` (module doc,
        step 1). ``model`` is not modified: a frozen copy is used."""
        net = TriggerModel(copy.deepcopy(model), tuple(retain.x.shape[1:])).to(device)
        schedule = CostSchedule(self.init_cost, self.success_threshold, self.patience, self.cost_multiplier,
                                self.early_stop, self.early_stop_threshold, self.early_stop_patience)
        params = [net.mask_tanh, net.pattern_tanh]
        optimizer = torch.optim.Adam(params, lr=self.mask_lr, betas=self.mask_betas)

        def objective(m: TriggerModel, x: torch.Tensor, y: torch.Tensor):
            logits = m(x)
            goal = torch.full_like(y, target)
            ce = F.cross_entropy(logits, goal)
            mask = m.mask()
            reg = mask.sum()
            loss = ce + schedule.cost * mask_penalty(mask, self.scale_cost)
            success = 100.0 * float((logits.argmax(1) == goal).float().mean())
            return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "asr": success,
                          "reg": float(reg.detach())}

        best: tuple[torch.Tensor, torch.Tensor, float] | None = None
        epoch = 0
        while epoch < self.nc_epochs and not schedule.stop:
            # one epoch through the shared loop; the optimiser (and so Adam's state) persists
            config = self.loop_config(retain, epochs=1, optimizer="adam", lr=self.mask_lr, betas=self.mask_betas,
                                      weight_decay=0.0, scheduler="constant", compile=False,
                                      seed=self.seed * 1_000_003 + target * 1_009 + epoch)
            state = train(net, retain.x, retain.y, config, objective=objective, params=params,
                          optimizer=optimizer, device=device, progress=False, desc=f"nc[{target}]")
            row = state.history[-1]
            epoch += 1
            if schedule.update(row["asr"], row["reg"]):
                best = (net.mask().detach().cpu().clone(), net.pattern().detach().cpu().clone(), row["asr"])
        if best is None:  # no mask reached the threshold: the last one (original NC)
            best = (net.mask().detach().cpu().clone(), net.pattern().detach().cpu().clone(), row["asr"])
        mask, pattern, success = best
        return Trigger(target, mask, pattern, float(mask.sum()), float(success), epoch)

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        k = check_retain(model, retain, device)
        if len(retain) < k:
            raise DefenseError(f"nc needs at least as many retain images as the model has classes: got "
                               f"{len(retain)} image(s) for {k} classes")
        triggers = [self.reverse_engineer(model, retain, t, device)
                    for t in progress_bar(range(k), desc="NC reverse-engineering", unit="class", enabled=progress)]
        norms = torch.tensor([t.norm for t in triggers], dtype=torch.float64)
        index, median, mad = anomaly_indices(norms)
        flagged = flag_classes(norms, self.anomaly_threshold)
        info: dict[str, Any] = {
            "flagged": flagged,
            "mask_norms": [round(t.norm, 4) for t in triggers],
            "anomaly_index": [round(float(i), 4) if math.isfinite(i) else None for i in index.tolist()],
            "median": round(median, 4), "mad": round(mad, 4),
            "attack_success": [round(t.attack_success, 2) for t in triggers],
            "reverse_epochs": [t.epochs for t in triggers],
            "unlearned": bool(flagged), "unlearning_size": 0,
        }
        if not flagged:  # nothing to unlearn: the model is returned as it came (the reference's choice)
            return TrainState(info=info)
        data = unlearning_set(retain, [triggers[t] for t in flagged], self.unlearning_ratio, self.seed)
        info["unlearning_size"] = len(data)
        state = super().fit(model, data, evaluator=evaluator, device=device, progress=progress,
                            checkpoint=checkpoint)
        state.info = {**state.info, **info}
        return state
