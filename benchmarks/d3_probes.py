"""Probes of the D3-default study that are not candidate defenses (BENCHMARKS.md, "Fifteenth
round" and later rounds): each fits or changes something on the study's attack runs and records one JSON line per
run (and setting) in OUT; a rerun skips what OUT already holds and then prints the table. "The default" below is
the default when these probes ran (the fifteenth to twenty-first rounds), the ``all-layers`` preset now.

    python benchmarks/d3_probes.py clp OUT.jsonl RUN_DIR ...
        Channel Lipschitz pruning (Zheng et al., ECCV 2022), no training: per convolution that a
        BatchNorm normalises, each output channel's upper bound ‖W_k‖₂·|γ_k|/σ_k; channels above
        mean + u·std of their layer are zeroed, u 3 (the paper's), 2.5, 2, 1.5.
    python benchmarks/d3_probes.py uap OUT.jsonl RUN_DIR ...
        Targeted universal perturbations (L∞ 0.05, 0.1; 20 signed-gradient steps on 256 retain
        images of the other classes) fitted per class on the model the classifier-only `paper`
        preset returns and on the default's, success on 512 other retain images.
    python benchmarks/d3_probes.py rescale OUT.jsonl C,C RUN_DIR ...
        The same function in other weights: every weight a BatchNorm layer normalises right after
        multiplied by C (its running statistics to match), then the default D3.
    python benchmarks/d3_probes.py momentum OUT.jsonl M,M RUN_DIR ...
        The same suspect with every BatchNorm layer's momentum set to M (``none``: a cumulative
        average), which changes no output: the default D3 with its ``bn_recalibrate="auto"`` rule and
        without it (``bn_recalibrate=False``).
    python benchmarks/d3_probes.py logits OUT.jsonl C,C RUN_DIR ...
        The same predictions at another confidence: the final classifier's weight and bias
        multiplied by C (as a model trained with label smoothing, or much longer, has smaller or
        larger logits), then the default D3, as it is and with ``logit_scale=True`` (the
        classifier divided by the retain temperature before D3, multiplied back after it);
        records the scaled suspect's mean retain cross-entropy.
    python benchmarks/d3_probes.py temperature OUT.jsonl RUN_DIR ...
        How confident each suspect is on its retain images: accuracy, mean cross-entropy and the
        temperature that fits them best (``distox.defenses.logit_scale.fit_temperature``); no training.
    python benchmarks/d3_probes.py flat-prune OUT.jsonl RUN_DIR ...
        The ninth round's input pruning on the first Linear of a convolutional network's fully
        connected head (the Linear over the flattened map; ``linear_head``), on the suspect alone;
        and how many of that Linear's inputs are constant on the retain images, and of those how many
        500 triggered test images move.
    python benchmarks/d3_probes.py angles OUT.jsonl RUN_DIR ...
        How far the default D3 turns each Linear/Conv2d weight: the angle between it and the
        suspect's, and the ratio of their norms.
    python benchmarks/d3_probes.py norms OUT.jsonl RUN_DIR ...
        The norms of the suspect's weights in the default's distance (``layers="all"``): median, least,
        largest; no training.
    python benchmarks/d3_probes.py twice OUT.jsonl RUN_DIR ... [--first JSON] [--then JSON]
        The default D3 run twice, as a user who purifies the purified model again: seed 0 on the
        suspect, then seed 1 on its result (the same retain images). ``--first`` / ``--then``: D3
        options for either run instead of the default's (e.g. ``{"norm_rule": false}``, or
        ``{"preset": "reference", "epochs": 12, "batch_size": 32, "augment": false}``); one OUT per pair.
    python benchmarks/d3_probes.py fooled OUT.jsonl RUN_DIR|user:NAME ...
        How many of the retain images the default's copies fool, crafted once against the suspect
        (``CraftedOnceCopies``, 5 steps) at L∞ radius 0.03 (the default's), 0.04, 0.05 and 0.06; no training.
        ``user:NAME``: a model of benchmarks/user_models.py (its file under runs/user, its retain draw 0).

Retain set: 3,000 images, seed 0; D3 at seed 0; one torch thread, CPU. Test data and the attack's
triggered test set are read for the report only.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from distox.bench.summary import asr_floor
from distox.defenses import create
from distox.defenses.input_prune import input_moments, prune_inputs
from distox.defenses.logit_scale import fit_temperature
from distox.experiment import load_run
from distox.metrics import evaluate
from distox.metrics import logits as model_outputs
from distox.models.selection import WEIGHTED, batchnorm_fed_pairs, classifier_name, linear_head, select_weights
from distox.utils import batchnorm_modules, has_batchnorm

CLP_US = (3.0, 2.5, 2.0, 1.5)
UAP_EPS = (0.05, 0.1)


def records(out: Path) -> Iterator[dict[str, Any]]:
    """The lines OUT holds (none when it does not exist)."""
    if out.exists():
        yield from (json.loads(line) for line in out.read_text().splitlines() if line.strip())


def done_keys(out: Path, key: Callable[[dict[str, Any]], Any]) -> set[Any]:
    """The keys of the lines OUT already holds."""
    return {key(r) for r in records(out)}


def pending(out: Path, run_dirs: Iterable[str], field: str | None = None,
            values: Sequence[Any] = (None,)) -> Iterator[tuple[str, list[Any]]]:
    """(run directory, the ``values`` of ``field`` OUT holds no line for) for each run with any
    left; without ``field``, one line per run."""
    done = done_keys(out, lambda r: (r["run"], r.get(field) if field else None))
    for d in run_dirs:
        todo = [v for v in values if (str(Path(d).resolve()), v) not in done]
        if todo:
            yield d, todo


def append(out: Path, line: dict[str, Any]) -> None:
    with out.open("a") as f:
        f.write(json.dumps(line) + "\n")


class Run:
    """One attack run as the probes read it: suspect, 3,000 retain images (seed 0), test data."""

    def __init__(self, run_dir: str) -> None:
        self.path = str(Path(run_dir).resolve())
        run = load_run(Path(run_dir))
        self.retain, self.backdoor = run.retain(count=3000, seed=0), run.backdoor_test_set()
        self.test = (run.data.test.x, run.data.test.y)
        self.suspect = run.model.eval()
        self.all2all = run.attack.mode != "all2one"
        self.floor = asr_floor(json.loads((Path(run_dir) / "metrics.json").read_text())["clean_asr"])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate(model.eval(), *self.test, self.backdoor, device="cpu")

    def d3(self, preset: str, model: nn.Module | None = None, seed: int = 0, **options: Any) -> nn.Module:
        """D3 with ``preset`` (and ``options``) at ``seed`` (``paper``: no augmentation, 12 epochs at
        batch 32, as the study's candidates)."""
        extra = dict(augment=False, epochs=12, batch_size=32) if preset == "paper" else {}
        return create("d3", **{"preset": preset, "seed": seed, **extra, **options})(
            self.suspect if model is None else model, self.retain, device="cpu", progress=False).model.eval()


def fed_batchnorms(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(weighted layer, the BatchNorm that runs right after it) modules, in call order."""
    modules = dict(model.named_modules())
    return [(modules[a], modules[b]) for a, b in batchnorm_fed_pairs(model, example)]


@torch.no_grad()
def channel_lipschitz_prune(model: nn.Module, example: torch.Tensor, u: float) -> tuple[int, int]:
    """CLP in place: (channels zeroed, channels considered)."""
    pruned = total = 0
    for conv, bn in fed_batchnorms(model, example):
        if not isinstance(conv, nn.Conv2d):
            continue
        scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).abs()
        bound = torch.linalg.matrix_norm(conv.weight.reshape(conv.out_channels, conv.weight.shape[1], -1), ord=2) * scale
        cut = bound > bound.mean() + u * bound.std()
        conv.weight[cut] = 0
        if conv.bias is not None:
            conv.bias[cut] = 0
        pruned, total = pruned + int(cut.sum()), total + len(bound)
    return pruned, total


def retain_accuracy(model: nn.Module, run: Run) -> float:
    """Accuracy (%) of ``model`` on the run's retain images (``distox.metrics.logits``)."""
    return float((model_outputs(model, run.retain.x, device="cpu").argmax(1) == run.retain.y).float().mean() * 100)


def fit_uap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: int, eps: float, steps: int = 20) -> torch.Tensor:
    """A perturbation in [−eps, eps] that sends images of the other classes to class ``c``."""
    x = x[y != c][:256]
    delta = torch.zeros(1, *x.shape[1:], requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), torch.full((len(x),), c))
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= eps / 8 * grad.sign()
            delta.clamp_(-eps, eps)
    return delta.detach()


def uap_success(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: int, delta: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model((x[y != c][:512] + delta).clamp(0, 1)).argmax(1) == c).float().mean() * 100)


@torch.no_grad()
def rescale_batchnorm_fed(model: nn.Module, example: torch.Tensor, c: float) -> int:
    """Every weight (and bias) a BatchNorm normalises right after times ``c``, that BatchNorm's
    running mean times ``c`` and variance times c²: the same function up to BatchNorm's ε, where
    nothing else reads the layer's output (not so in a pre-activation residual block). Returns how
    many layers changed."""
    pairs = fed_batchnorms(model, example)
    for layer, bn in pairs:
        layer.weight.mul_(c)
        if layer.bias is not None:
            layer.bias.mul_(c)
        bn.running_mean.mul_(c)
        bn.running_var.mul_(c * c)
    return len(pairs)


@torch.no_grad()
def scale_logits(model: nn.Module, example: torch.Tensor, c: float) -> str:
    """The final classifier's weight and bias times ``c``: every logit times c, the same argmax.
    Returns the classifier's name."""
    name = classifier_name(model, example)
    head = dict(model.named_modules())[name]
    head.weight.mul_(c)
    if head.bias is not None:
        head.bias.mul_(c)
    return name


@torch.no_grad()
def retain_loss(model: nn.Module, run: Run) -> float:
    """Mean cross-entropy of ``model`` on the run's retain images (``distox.metrics.logits``)."""
    return float(F.cross_entropy(model_outputs(model, run.retain.x, device="cpu"), run.retain.y))


def weight_angles(before: nn.Module, after: nn.Module) -> dict[str, float]:
    """Degrees between each Linear/Conv2d weight of ``after`` and the same weight of ``before``."""
    old = dict(before.named_modules())
    out = {}
    for name, module in after.named_modules():
        if isinstance(module, WEIGHTED):
            a, b = old[name].weight.detach().flatten(), module.weight.detach().flatten()
            cos = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))
            out[name] = round(math.degrees(math.acos(max(-1.0, min(1.0, cos)))), 1)
    return out


def cell(m: dict[str, float], start: dict[str, float], floor: float) -> str:
    return f"{m['acc'] - start['acc']:+.2f} / {m['asr']:.2f}{' ✗' if m['asr'] > floor else ''}"


def probe_clp(out: Path, run_dirs: Iterable[str]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        line = {"run": run.path, "floor": run.floor, "suspect": run.evaluate(run.suspect),
                "suspect_retain": retain_accuracy(run.suspect, run)}
        for u in CLP_US:
            model = copy.deepcopy(run.suspect)
            pruned, total = channel_lipschitz_prune(model, run.retain.x[:1], u)
            line[f"u{u:g}"] = {**run.evaluate(model), "pruned": pruned, "of": total, "retain": retain_accuracy(model, run)}
        append(out, line)
    print("| model | suspect ACC / ASR (floor) | " + " | ".join(f"u {u:g}: ACC change / ASR (channels zeroed)"
                                                      for u in CLP_US) + " |")
    print("|---" * (2 + len(CLP_US)) + "|")
    for r in records(out):
        s = r["suspect"]
        print(f"| {Path(r['run']).name} | {s['acc']:.2f} / {s['asr']:.2f} ({r['floor']:.2f}) | " + " | ".join(
            f"{cell(r[f'u{u:g}'], s, r['floor'])} ({r[f'u{u:g}']['pruned']} of {r[f'u{u:g}']['of']})" for u in CLP_US) + " |")


def probe_uap(out: Path, run_dirs: Iterable[str]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        t0 = time.perf_counter()
        fit = run.retain.x[:1500], run.retain.y[:1500]
        held = run.retain.x[1500:], run.retain.y[1500:]
        line = {"run": run.path, "target": int(run.backdoor.target[0]), "all2all": run.all2all, "floor": run.floor,
                "suspect": run.evaluate(run.suspect)}
        for tag, preset in (("paper", "paper"), ("default", "all-layers")):  # "default": the default when it ran
            model = run.d3(preset)
            line[tag] = run.evaluate(model)
            for eps in UAP_EPS:
                torch.manual_seed(0)
                line[f"{tag}_{eps}"] = [uap_success(model, *held, c, fit_uap(model, *fit, c, eps)) for c in range(10)]
        line["s"] = round(time.perf_counter() - t0, 1)
        append(out, line)
    print("| model | target | after `paper`: ACC change / ASR | UAP on it, target's success (median class) at 0.05 · 0.1 "
          "| easiest class at 0.05 | after the default | UAP on it, target's (median) at 0.05 · 0.1 | easiest at 0.05 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in records(out):
        t = r["target"]

        def scan(tag: str) -> str:
            return " · ".join(f"{r[f'{tag}_{eps}'][t]:.1f} ({statistics.median(r[f'{tag}_{eps}']):.1f})" for eps in UAP_EPS)

        def easiest(tag: str) -> str:
            s = r[f"{tag}_{UAP_EPS[0]}"]
            best = max(range(len(s)), key=lambda c: s[c])
            return f"{best} ({s[best]:.1f})"
        target = "all-to-all" if r["all2all"] else t
        print(f"| {Path(r['run']).name} | {target} | {cell(r['paper'], r['suspect'], r['floor'])} | {scan('paper')} | "
              f"{easiest('paper')} | {cell(r['default'], r['suspect'], r['floor'])} | {scan('default')} | "
              f"{easiest('default')} |")


def changed_suspects(out: Path, factors: list[float], run_dirs: Iterable[str],
                     change: Callable[[nn.Module, torch.Tensor, float], Any]) -> Iterator[tuple[Run, float, nn.Module, Any]]:
    """For each run and factor C that OUT has no line for: (run, C, a copy of the suspect that
    ``change(copy, one retain image, C)`` changed in place, what ``change`` returned)."""
    for d, todo in pending(out, run_dirs, "c", factors):
        run = Run(d)
        for c in todo:
            model = copy.deepcopy(run.suspect)
            yield run, c, model, change(model, run.retain.x[:1], c)


def probe_rescale(out: Path, factors: list[float], run_dirs: Iterable[str]) -> None:
    for run, c, model, layers in changed_suspects(out, factors, run_dirs, rescale_batchnorm_fed):
        line = {"run": run.path, "c": c, "layers": layers, "floor": run.floor, "suspect": run.evaluate(run.suspect),
                "rescaled": run.evaluate(model), "default": run.evaluate(run.d3("all-layers", model))}
        append(out, line)
    print("| model | C | layers | rescaled suspect ACC / ASR | default after it: ACC change / ASR |")
    print("|---|---|---|---|---|")
    for r in records(out):
        print(f"| {Path(r['run']).name} | {r['c']:g} | {r['layers']} | {r['rescaled']['acc']:.2f} / "
              f"{r['rescaled']['asr']:.2f} | {cell(r['default'], r['suspect'], r['floor'])} |")


def probe_logits(out: Path, factors: list[float], run_dirs: Iterable[str]) -> None:
    for run, c, model, head in changed_suspects(out, factors, run_dirs, scale_logits):
        line = {"run": run.path, "c": c, "head": head, "floor": run.floor, "suspect": run.evaluate(run.suspect),
                "scaled": run.evaluate(model), "retain_ce": retain_loss(model, run),
                "default": run.evaluate(run.d3("all-layers", model))}
        result = create("d3", preset="all-layers", seed=0, logit_scale=True)(model, run.retain, device="cpu", progress=False)
        line["rule"], line["rule_resolved"] = run.evaluate(result.model), result.config["logit_scale_resolved"]
        append(out, line)
    print("| model | C | suspect's retain CE | its retain temperature | default: ACC change / ASR "
          "| default with logit_scale=True |")
    print("|---|---|---|---|---|---|")
    for r in records(out):
        print(f"| {Path(r['run']).name} | {r['c']:g} | {r['retain_ce']:.3f} | {r['rule_resolved']['temperature']:.3f} | "
              f"{cell(r['default'], r['suspect'], r['floor'])} | {cell(r['rule'], r['suspect'], r['floor'])} |")


@torch.no_grad()
def probe_temperature(out: Path, run_dirs: Iterable[str]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        logits = model_outputs(run.suspect, run.retain.x, device="cpu")
        append(out, {"run": run.path, "retain_acc": float((logits.argmax(1) == run.retain.y).float().mean() * 100),
                     "retain_ce": float(F.cross_entropy(logits, run.retain.y)),
                     "temperature": fit_temperature(logits, run.retain.y)})
    print("| model | retain accuracy | mean retain CE | retain temperature |")
    print("|---|---|---|---|")
    for r in records(out):
        print(f"| {Path(r['run']).name} | {r['retain_acc']:.2f} | {r['retain_ce']:.3f} | {r['temperature']:.3f} |")


def probe_momentum(out: Path, momenta: list[float | None], run_dirs: Iterable[str]) -> None:
    for d, todo in pending(out, run_dirs, "momentum", momenta):
        run = Run(d)
        for momentum in todo:
            model = copy.deepcopy(run.suspect)
            for _, bn in batchnorm_modules(model):
                bn.momentum = momentum
            line = {"run": run.path, "momentum": momentum, "floor": run.floor, "suspect": run.evaluate(run.suspect),
                    "same_suspect": run.evaluate(model)}
            for tag, option in (("rule", "auto"), ("without", False)):
                result = create("d3", preset="all-layers", seed=0, bn_recalibrate=option)(
                    model, run.retain, device="cpu", progress=False)
                line[tag] = run.evaluate(result.model)
                line[f"{tag}_resolved"] = result.config.get("bn_recalibrate_resolved")
            append(out, line)
    print("| model | BatchNorm momentum | the suspect with it: ACC / ASR | default without the rule | default (the rule) "
          "| suspect's statistics left after the run |")
    print("|---|---|---|---|---|---|")
    for r in records(out):
        left = r["rule_resolved"]["stale_share"] if r["rule_resolved"] else "–"
        print(f"| {Path(r['run']).name} | {r['momentum']} | {r['same_suspect']['acc']:.2f} / {r['same_suspect']['asr']:.2f} | "
              f"{cell(r['without'], r['suspect'], r['floor'])} | {cell(r['rule'], r['suspect'], r['floor'])} | {left} |")


def probe_angles(out: Path, run_dirs: Iterable[str]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        model = run.d3("all-layers")
        append(out, {"run": run.path, "floor": run.floor, "suspect": run.evaluate(run.suspect),
                     "default": run.evaluate(model), "angles": weight_angles(run.suspect, model)})
    print("| model | default: ACC change / ASR | degrees turned, each Linear/Conv2d weight in registration order |")
    print("|---|---|---|")
    for r in records(out):
        print(f"| {Path(r['run']).name} | {cell(r['default'], r['suspect'], r['floor'])} | "
              f"{', '.join(f'{v:g}' for v in r['angles'].values())} |")


def weight_norms(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Median, least and largest Frobenius norm of the weights ``layers="all"`` selects."""
    norms = [float(w.detach().norm()) for w in select_weights(model, "all", example).values()]
    return {"median": round(statistics.median(norms), 2), "min": round(min(norms), 2), "max": round(max(norms), 2),
            "weights": len(norms)}


def probe_norms(out: Path, run_dirs: Iterable[str]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        append(out, {"run": run.path, "batchnorm": has_batchnorm(run.suspect),
                     **weight_norms(run.suspect, run.retain.x[:1])})
    print("| model | BatchNorm | weights in the distance | median norm | least | largest |")
    print("|---|---|---|---|---|---|")
    for r in records(out):
        print(f"| {Path(r['run']).name} | {'yes' if r['batchnorm'] else 'no'} | {r['weights']} | {r['median']:.2f} | "
              f"{r['min']:.2f} | {r['max']:.2f} |")


def probe_twice(out: Path, run_dirs: Iterable[str], first: dict[str, Any], then: dict[str, Any]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        once = run.d3(**{"preset": "all-layers", **first})
        twice = run.d3(model=once, **{"preset": "all-layers", "seed": 1, **then})
        append(out, {"run": run.path, "floor": run.floor, "suspect": run.evaluate(run.suspect), "first": first,
                     "then": then, "once": run.evaluate(once), "twice": run.evaluate(twice)})
    rows = list(records(out))
    if rows and (rows[0].get("first") or rows[0].get("then")):  # one pair of options per OUT
        print(f"first: the default with {rows[0]['first']}; then: the default with {rows[0]['then']}")
    print("| model | the default once: ACC change / ASR | twice (seed 1 on the first's result) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {Path(r['run']).name} | {cell(r['once'], r['suspect'], r['floor'])} | "
              f"{cell(r['twice'], r['suspect'], r['floor'])} |")


def probe_flat_prune(out: Path, run_dirs: Iterable[str]) -> None:
    for d, _ in pending(out, run_dirs):
        run = Run(d)
        model = copy.deepcopy(run.suspect)
        first = linear_head(model, run.retain.x[:1])[0]
        mean, variance = input_moments(model, model.get_submodule(first), run.retain.x, "cpu")
        triggered, _ = input_moments(model, model.get_submodule(first), run.backdoor.x[:500], "cpu")
        dead = variance == 0  # the same value on every retain image (a ReLU that never fires on them)
        report = prune_inputs(model, run.retain, "auto", 0.5, "cpu", layer_name=first)
        append(out, {"run": run.path, "floor": run.floor, "suspect": run.evaluate(run.suspect),
                     "pruned": run.evaluate(model), "report": report, "dead": int(dead.sum()),
                     "dead_lit": int((dead & ((triggered - mean).abs() > 1e-3)).sum())})
    print("| model | layer | inputs constant on the retain images (of them, moved by the trigger) "
          "| inputs set aside | ACC change / ASR after |")
    print("|---|---|---|---|---|")
    for r in records(out):
        rep = r["report"]
        print(f"| {Path(r['run']).name} | `{rep['layer']}` | {r['dead']} ({r['dead_lit']}) | {rep['pruned']} of "
              f"{rep['features']} | {cell(r['pruned'], r['suspect'], r['floor'])} |")


FOOLED_RADII = (0.03, 0.04, 0.05, 0.06)


def suspect_and_retain(target: str) -> tuple[str, nn.Module, torch.Tensor, torch.Tensor]:
    """(key, suspect, retain images, labels) of a study run directory or of ``user:NAME`` (a user model of
    benchmarks/user_models.py, 3,000 retain images of its draw 0)."""
    if target.startswith("user:"):
        import user_models  # benchmarks/ is the script's directory
        name = target[len("user:"):]
        x, y = user_models.retain_draw(name, 3000, seed=0)
        return target, user_models.load(Path("runs/user"), name).eval(), x, y
    run = Run(target)
    return run.path, run.suspect, run.retain.x, run.retain.y


def probe_fooled(out: Path, targets: Iterable[str], radii: Sequence[float] = FOOLED_RADII) -> None:
    from distox.defenses.universal import CraftedOnceCopies
    done = done_keys(out, lambda r: r["run"])
    for target in targets:
        if target in done or (not target.startswith("user:") and str(Path(target).resolve()) in done):
            continue
        key, suspect, x, y = suspect_and_retain(target)
        shares = {str(r): round(CraftedOnceCopies(suspect, x, y, r, steps=5).shared_rate, 4) for r in radii}
        append(out, {"run": key, "batchnorm": has_batchnorm(suspect), "fooled": shares})
    print("| model | BatchNorm | " + " | ".join(f"fooled at {r}" for r in radii) + " |")
    print("|---|---|" + "---|" * len(radii))
    for r in records(out):
        print(f"| {Path(r['run']).name} | {'yes' if r['batchnorm'] else 'no'} | "
              + " | ".join(f"{100 * r['fooled'][str(v)]:.1f}" for v in radii) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    for name in ("clp", "uap", "angles", "temperature", "flat-prune", "twice", "norms", "fooled"):
        p = sub.add_parser(name)
        p.add_argument("out", type=Path)
        p.add_argument("runs", nargs="*", help="attack runs to probe (none: print the table of OUT)")
    p = sub.choices["twice"]
    p.add_argument("--first", type=json.loads, default={}, help="D3 options of the first run (JSON)")
    p.add_argument("--then", type=json.loads, default={}, help="D3 options of the second run (JSON)")
    p = sub.add_parser("momentum")
    p.add_argument("out", type=Path)
    p.add_argument("momenta", type=lambda s: [None if c == "none" else float(c) for c in s.split(",")])
    p.add_argument("runs", nargs="+")
    p = sub.add_parser("logits")
    p.add_argument("out", type=Path)
    p.add_argument("factors", type=lambda s: [float(c) for c in s.split(",")])
    p.add_argument("runs", nargs="+")
    p = sub.add_parser("rescale")
    p.add_argument("out", type=Path)
    p.add_argument("factors", type=lambda s: [float(c) for c in s.split(",")])
    p.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.probe == "clp":
        probe_clp(args.out, args.runs)
    elif args.probe == "uap":
        probe_uap(args.out, args.runs)
    elif args.probe == "momentum":
        probe_momentum(args.out, args.momenta, args.runs)
    elif args.probe == "logits":
        probe_logits(args.out, args.factors, args.runs)
    elif args.probe == "temperature":
        probe_temperature(args.out, args.runs)
    elif args.probe == "angles":
        probe_angles(args.out, args.runs)
    elif args.probe == "flat-prune":
        probe_flat_prune(args.out, args.runs)
    elif args.probe == "norms":
        probe_norms(args.out, args.runs)
    elif args.probe == "fooled":
        probe_fooled(args.out, args.runs)
    elif args.probe == "twice":
        probe_twice(args.out, args.runs, args.first, args.then)
    else:
        probe_rescale(args.out, args.factors, args.runs)


if __name__ == "__main__":
    main()
