"""NAD — Neural Attention Distillation (Li et al., "Neural Attention Distillation: Erasing
Backdoor Triggers from Deep Neural Networks", ICLR 2021), with BackdoorBench's
``defense/nad.py`` defaults.

1. **Teacher**: the suspect model fine-tuned on the retain set with
   :class:`~distox.defenses.ft.FT` (``teacher_epochs`` 10, SGD lr 0.01, momentum 0.9, wd 5e-4,
   batch 256, augmentation, cosine with the reference's T_max = 100, so the lr barely decays in
   10 epochs). It is then frozen in eval mode.
2. **Student**: the suspect model trained on the retain set for ``epochs`` (10) at a constant
   lr 0.01 (the reference's ``adjust_learning_rate`` at lr 0.01) on

       CE(student(x), y) + Σ_k β_k · MSE(A(s_k), A(t_k)),

   with s_k, t_k the student's and teacher's feature maps at stage k (teacher detached) and the
   attention map (paper Eq. 1-2, Zagoruyko & Komodakis' attention transfer)

       A(f) = a / (‖a‖₂ + 1e-6),   a = flatten(mean_c |f_c|^p),   p = 2,

   of shape (N, H·W); the MSE averages over N·H·W, as the reference's ``F.mse_loss``.

**Which stages.** The reference slices ``model.children()`` and distils layer3 (β 500), layer4
(β 1000) and the avg-pooled 1×1 map (β 1000), which only fits PreAct-ResNet18: a 1×1 map
normalises to ≈ 1 for any model, so that term is always ≈ 0, and every other architecture gets
only such a degenerate term (there BackdoorBench's NAD is plain fine-tuning). distox finds
stages on any CNN from forward hooks on a probe batch: a *stage output* is, for each spatial
size on the network's downsampling path (sizes in the order they first appear, each smaller
than all before it; a map enlarged again, such as VGG's adaptive pooling of a 1×1 map to 7×7,
is a copy and is skipped), the output of the outermost module producing that size (the last
one to return among equally deep ones). Maps of size 1×1 are skipped. The last
``len(betas)`` stages are distilled, the last with the last β. With the default
``betas=(500, 1000)`` this is exactly the reference's effective loss on PreAct-ResNet18
(layer3 at 500, layer4 at 1000) and the outputs of the last two resolutions elsewhere (e.g.
layer2/layer3 of a torchvision ResNet-18 at 32 px, the 4×4 and 2×2 blocks of VGG19-BN).
``stages=[names]`` chooses modules by name instead. A model with no spatial feature map
(an MLP) is refused with a :class:`DefenseError`; on a ViT the only one is the patch
embedding's grid, which is then the one stage distilled.

Other differences from the reference, on purpose: the student runs one forward pass per step
(the reference runs four, updating BatchNorm statistics four times); distillation uses the
same precision as every distox training run.

Example:
    >>> result = NAD()(suspect_model, retain_split)
    >>> result.config["stages_resolved"]    # {module name: beta}
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..data.core import ImageSplit
from ..metrics import Evaluator
from ..training import Checkpoint, TrainState, train
from .base import Defense, DefenseError
from .ft import FT
from .probe import FeatureTap, module_outputs
from .registry import register

log = logging.getLogger(__name__)

#: The reference's cosine period (epochs) for the teacher's fine-tuning.
TEACHER_T_MAX = 100


def attention_map(fmap: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """A(f): the channel-wise mean of |f|^p, flattened, divided by its L2 norm + ``eps``.

    Shapes: (N, C, H, W) → (N, H·W), in float32.
    """
    a = fmap.float().abs().pow(p).mean(1).flatten(1)
    return a / (a.norm(dim=1, keepdim=True) + eps)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the two attention maps (teacher detached)."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher.detach(), p))


def _spatial(out: Any) -> int | None:
    """H·W of a 4-D tensor output, else None."""
    return int(out.shape[2] * out.shape[3]) if isinstance(out, torch.Tensor) and out.ndim == 4 else None


def find_stages(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Stage outputs of ``model`` in forward order (module docstring): per spatial size on the
    downsampling path with H·W > 1, the outermost module producing it (the last to return
    among equally deep ones, each module counted at its last call)."""
    fired = module_outputs(model, example)
    path: list[int] = []
    for _, out in fired:
        size = _spatial(out)
        if size is not None and (not path or size < path[-1]):
            path.append(size)
    last: dict[str, tuple[int, int | None]] = {}
    for i, (name, out) in enumerate(fired):
        last[name] = (i, _spatial(out))
    stages = []
    for size in path:
        if size <= 1:
            continue
        found = [(-name.count("."), i, name) for name, (i, s) in last.items() if s == size]
        if found:
            stages.append(max(found)[2])
    return stages


class TeacherFT(FT):
    """The NAD teacher's fine-tuning: :class:`FT` with a fixed cosine period ``t_max``."""

    name = "nad-teacher"

    def __init__(self, t_max: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.t_max = int(t_max)

    def extra_loop_options(self) -> dict[str, Any]:
        return {"cos_t_max": self.t_max}


@register
class NAD(Defense):
    """Neural Attention Distillation (module docstring).

    Args:
        teacher_epochs: fine-tuning epochs of the teacher (10, the reference's ``te_epochs``).
        betas: β per distilled stage, earliest first; their number is the number of stages
            (500, 1000: the reference's live terms).
        p: power of the attention map (2.0).
        stages: module names to distil (None: the last ``len(betas)`` stage outputs found
            automatically; if fewer exist, the last βs are used).
        momentum, weight_decay: SGD's, teacher and student (0.9, 5e-4).
        scheduler: the student's lr schedule, ``"constant"`` (the reference's effective one)
            or ``"cosine"``.
        epochs: student epochs (10, the reference's ``te_epochs``); batch_size (256), lr (0.01),
            augment, flip, seed: see :class:`~distox.defenses.base.Defense`, shared by both phases.
    """

    name = "nad"

    def __init__(self, teacher_epochs: int = 10, betas: Sequence[float] = (500.0, 1000.0), p: float = 2.0,
                 stages: Sequence[str] | None = None, momentum: float = 0.9, weight_decay: float = 5e-4,
                 scheduler: str = "constant", epochs: int = 10, **kwargs: Any) -> None:
        super().__init__(epochs=epochs, **kwargs)
        if int(teacher_epochs) < 1:
            raise DefenseError(f"teacher_epochs must be >= 1; got {teacher_epochs}")
        if isinstance(betas, (int, float)):
            betas = [betas]
        betas = [float(b) for b in betas]
        if not betas or not all(b >= 0 and math.isfinite(b) for b in betas):
            raise DefenseError(f"betas must be one or more numbers >= 0; got {betas}")
        if not (p > 0 and math.isfinite(p)):
            raise DefenseError(f"p must be > 0; got {p}")
        if stages is not None:
            stages = [stages] if isinstance(stages, str) else [str(s) for s in stages]
            if len(stages) != len(betas):
                raise DefenseError(f"stages names {len(stages)} module(s) but betas has {len(betas)} value(s); "
                                   "give one beta per stage")
        if scheduler not in ("constant", "cosine"):
            raise DefenseError(f"scheduler must be 'constant' or 'cosine'; got {scheduler!r}")
        if not momentum >= 0 or not weight_decay >= 0:
            raise DefenseError(f"momentum and weight_decay must be >= 0; got {momentum}, {weight_decay}")
        self.teacher_epochs, self.betas, self.p = int(teacher_epochs), betas, float(p)
        self.stages = stages
        self.momentum, self.weight_decay, self.scheduler = float(momentum), float(weight_decay), scheduler

    def resolve_stages(self, model: nn.Module, example: torch.Tensor) -> dict[str, float]:
        """{module name: β} of the distilled stages (refused with :class:`DefenseError` when there
        are none, or a named one is not a spatial feature map)."""
        if self.stages is None:
            found = find_stages(model, example)
            if not found:
                raise DefenseError("NAD distils attention maps of convolutional feature maps, and this model "
                                   "produces no 4-D (N, C, H, W) feature map larger than 1x1; it cannot run on it")
            chosen = found[-len(self.betas):]
            if len(chosen) < len(self.betas):
                log.warning("NAD: %d stage(s) found for %d betas; using the last %d betas",
                            len(chosen), len(self.betas), len(chosen))
            return dict(zip(chosen, self.betas[-len(chosen):]))
        sizes = {name: _spatial(out) for name, out in module_outputs(model, example)}
        for name in self.stages:
            if name not in sizes:
                raise DefenseError(f"stage {name!r} is not a module of the model that runs in its forward pass")
            if not sizes[name] or sizes[name] <= 1:
                raise DefenseError(f"stage {name!r} does not output a (N, C, H, W) feature map larger than 1x1")
        return dict(zip(self.stages, self.betas))

    def teacher(self, model: nn.Module, retain: ImageSplit, device: torch.device, progress: bool) -> nn.Module:
        """The suspect fine-tuned on the retain set (a new, frozen model in eval mode)."""
        ft = TeacherFT(t_max=max(TEACHER_T_MAX, self.teacher_epochs), epochs=self.teacher_epochs,
                       batch_size=self.batch_size, lr=self.lr, augment=self.augment, flip=self.flip, seed=self.seed,
                       precision=self.precision, channels_last=self.channels_last, compile=self.compile,
                       momentum=self.momentum, weight_decay=self.weight_decay)
        result = ft(model, retain, device=device, progress=progress)
        self.teacher_resolved = result.history[-1] if result.history else {}
        return result.model.eval().requires_grad_(False)  # train() leaves no gradients behind

    def fit(self, model: nn.Module, retain: ImageSplit, *, evaluator: Evaluator | None,
            device: torch.device, progress: bool, checkpoint: Checkpoint | None = None) -> TrainState:
        stages = self.resolve_stages(model, retain.x[:2].to(device))
        self.stages_resolved = stages
        teacher = self.teacher(model, retain, device, progress)  # recomputed (deterministically) on a resume
        names = list(stages)
        student_tap, teacher_tap = FeatureTap(model, names), FeatureTap(teacher, names)

        def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor):
            logits = m(x)
            with torch.no_grad():
                teacher(x)
            ce = F.cross_entropy(logits, y)
            at = sum(beta * attention_loss(student_tap[n], teacher_tap[n], self.p) for n, beta in stages.items())
            loss = ce + at
            return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "at": float(at.detach())}

        config = self.loop_config(retain, momentum=self.momentum, weight_decay=self.weight_decay,
                                  scheduler=self.scheduler)
        try:
            return train(model, retain.x, retain.y, config, objective=objective, on_epoch_end=evaluator,
                         checkpoint=checkpoint, device=device, progress=progress, desc=self.name)
        finally:
            student_tap.remove()
            teacher_tap.remove()
