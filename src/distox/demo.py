"""The 60-second demo on scikit-learn's bundled digits (no download).

1. Train a small CNN on digits with a BadNets patch backdoor (10 % poison, target 0).
2. Draw a seeded 5 % retain set (at least 64 images) from the clean training data.
3. Purify with D3 (distox's default preset, at the demo's budget of 60 epochs) and, for contrast,
   plain fine-tuning with the same budget.
4. Report ACC, ASR, RA, DER and seconds before/after as a table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


from .attacks import create as create_attack
from .data import load_dataset, select_retain
from .defenses import create as create_defense
from .defenses.d3 import PRESETS
from .metrics import Evaluator, der, evaluate
from .models import create_model
from .training import LoopConfig
from .utils import seed_everything, torch_threads


@dataclass
class DemoConfig:
    """Sizes chosen so the whole demo runs in well under a minute on 2 CPU cores."""

    seed: int = 0
    attack: str = "badnets"
    poison_rate: float = 0.1
    target: int = 0
    attack_epochs: int = 30
    attack_batch: int = 64
    attack_lr: float = 0.05
    retain_ratio: float = 0.05
    retain_min: int = 64
    defense_epochs: int = 60
    defense_batch: int = 32
    #: fine-tuning's learning rate; D3 runs at its preset's (the default's rule: 0.03; ``d3_options`` may set one)
    defense_lr: float = 0.01
    preset: str = "default"  # distox's default D3 (the reference λ = 0.5 costs ~30 ACC points here)
    #: other D3 arguments over the preset's, e.g. ``{"init": "noise"}`` (BENCHMARKS.md "Fifth round")
    d3_options: dict[str, Any] = field(default_factory=dict)
    augment: bool = False  # random crops of 8×8 digits destroy them
    width: int = 32
    methods: tuple[str, ...] = ("ft", "d3")
    device: str = "cpu"
    #: torch CPU threads: 1 gives the same numbers on any number of cores (float sums depend on
    #: the thread count) and is the fastest for models this small; None leaves torch's setting.
    threads: int | None = 1


def defense_options(cfg: DemoConfig, method: str) -> dict[str, Any]:
    """The options the demo runs ``method`` with: its loop settings, and for D3 the preset and
    ``d3_options`` over them (e.g. ``{"lr": 0.01}``). The demo's epochs are its budget: a preset's
    steps floor (which explicit epochs override anyway) is off, so that D3 does not warn about the
    180 steps it makes. D3 gets no learning rate but the preset's and its rule's (the default's: 0.03 on every model
    since the thirty-third round, as ``distox.purify`` runs it; BENCHMARKS.md "Thirty-third round"), fine-tuning
    ``defense_lr``."""
    opts: dict[str, Any] = dict(epochs=cfg.defense_epochs, batch_size=cfg.defense_batch, augment=cfg.augment,
                                seed=cfg.seed)
    if method == "d3":
        floor = PRESETS.get(cfg.d3_options.get("preset", cfg.preset), {}).get("min_steps")
        opts.update({"preset": cfg.preset, **({"min_steps": 0} if floor else {}), **cfg.d3_options})
    else:
        opts["lr"] = cfg.defense_lr
    return opts


@dataclass
class DemoReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    retain_size: int = 0
    seconds: float = 0.0

    def row(self, method: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["method"] == method)

    def table(self) -> str:
        head = f"{'method':<12}{'ACC':>8}{'ASR':>8}{'RA':>8}{'DER':>8}{'seconds':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            d = "" if r.get("der") is None else f"{r['der']:.2f}"
            lines.append(f"{r['method']:<12}{r['acc']:>8.2f}{r['asr']:>8.2f}{r['ra']:>8.2f}{d:>8}{r['seconds']:>9.1f}")
        return "\n".join(lines)


def run_demo(config: DemoConfig | None = None, progress: bool = True) -> DemoReport:
    """Run the demo and return its report (ACC/ASR/RA/DER in percent)."""
    cfg = config or DemoConfig()
    with torch_threads(cfg.threads):
        return _run(cfg, progress)


def _run(cfg: DemoConfig, progress: bool) -> DemoReport:
    t_all = time.perf_counter()
    seed_everything(cfg.seed)
    data = load_dataset("digits", seed=cfg.seed)
    attack = create_attack(cfg.attack, target=cfg.target, poison_rate=cfg.poison_rate, seed=cfg.seed)
    attack.check_data(data)
    model = create_model("small_cnn", data.num_classes, data.in_channels, data.mean, data.std, width=cfg.width)
    t0 = time.perf_counter()
    attack.train_model(model, data, LoopConfig(epochs=cfg.attack_epochs, batch_size=cfg.attack_batch,
                                               lr=cfg.attack_lr, seed=cfg.seed),
                       device=cfg.device, progress=progress)
    backdoor = attack.backdoor_test_set(data.test)
    before = evaluate(model, data.test.x, data.test.y, backdoor, device=cfg.device)
    report = DemoReport()
    report.rows.append({"method": "no defense", **before, "der": None, "seconds": time.perf_counter() - t0})

    idx = select_retain(len(data.train), ratio=cfg.retain_ratio, minimum=cfg.retain_min, seed=cfg.seed)
    retain = data.train.subset(idx)
    report.retain_size = len(retain)
    evaluator = Evaluator(data.test.x, data.test.y, backdoor, device=cfg.device)
    for method in cfg.methods:
        defense = create_defense(method, **defense_options(cfg, method))
        result = defense(model, retain, device=cfg.device, progress=progress)
        after = evaluator(cfg.defense_epochs, result.model)
        report.rows.append({"method": method, **after, "der": der(before, after), "seconds": result.seconds})
    report.seconds = time.perf_counter() - t_all
    return report
