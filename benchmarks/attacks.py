"""Every registered attack on Fashion-MNIST with the CPU profile (issue 3's benchmark).

Trains one clean small CNN and one backdoored small CNN per attack (``distox.attacks.list()``)
with the same data subset, loop and seed, through :func:`distox.experiment.run_attack` (so each
result is a resumable run directory with its full record), and prints a markdown table:
attack, ACC, ASR, RA, clean ACC, ΔACC, whether the issue's target holds (ASR ≥ 90 % and ACC
within 3 points of clean), epochs, subset and seconds.

Run directories are cached: rerunning with the same settings reads finished runs back, so the
attacks can be trained in several invocations (``--attacks``) and the full table printed by a
final one. Seconds are the wall time recorded when each run was trained.

Usage (2 shared CPU cores)::

    nice -n 10 .venv/bin/python benchmarks/attacks.py --attacks badnets blended sig --threads 1
    nice -n 10 .venv/bin/python benchmarks/attacks.py --table /tmp/attacks.md   # all, cached

With ``--bench DIR --config CONFIG`` the backdoored models are the attack cells of a finished
``distox bench CONFIG --out DIR`` grid (nothing is retrained); only the clean reference is
trained, with the grid's common attack settings, into ``--runs``::

    nice -n 10 .venv/bin/python benchmarks/attacks.py --bench runs/cpu-v3 --config configs/cpu.yaml \
        --runs runs/bench-attacks-cpu-v3 --threads 1

``--floor-seeds 1 2`` also trains clean references with those seeds (same settings otherwise)
and reports the clean-model ASR of each: how much of the floor is the chance of one training run.

``--probe-inputaware`` trains Input-aware alone, epoch by epoch, and then dissects its trigger
(:func:`probe_inputaware`; BENCHMARKS.md "Input-aware")::

    nice .venv/bin/python benchmarks/attacks.py --probe-inputaware --epochs 8 [--model small_cnn]
        [--train-subset 20000] [--batch-size 128] [--set inputaware.cross_rate=0.0
        inputaware.anneal_generator=true] [--save-probe FILE]
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from distox import attacks
from distox.attacks import inputaware as ia
from distox.cli.app import parse_grouped
from distox.data import load_dataset
from distox.experiment import AttackSpec, load_run, run_attack, run_clean, score_clean_model
from distox.metrics import evaluate
from distox.models import Normalized, create_model
from distox.models.small_vgg import SmallVGG
from distox.training import LoopConfig

#: Attacks that cannot train a model (no trigger function), with the reason shown in the table.
SKIP = {"imported": "wraps a poisoned test set imported from another tool; it has no trigger to train with"}

#: CPU-profile overrides of attack arguments: the costly resource builders are shortened.
#: (LF's surrogate and SSBA's encoder are cached under $DISTOX_CACHE.)
PROFILE: dict[str, dict] = {
    "lf": {"surrogate_epochs": 3},
    "inputaware": {"mask_epochs": 3},
    "ssba": {"encoder_epochs": 5},
}

#: Poison rates differing from the common 10 %: SIG is clean-label and poisons target-class images
#: only; the 10k subset holds fewer than 1,000 of them.
RATES: dict[str, float] = {"sig": 0.08}


HEADER = ("| attack | ACC | ASR | RA | clean ACC | ACC drop | clean-model ASR | target met | epochs | "
          "train/test subset | seconds | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def clean_model_asr(clean_dir: Path, run_dir: Path, device: str) -> float:
    """ASR of the clean reference model on the attack run's own backdoor test set (the floor)."""
    run = load_run(run_dir)
    return score_clean_model(clean_dir / "model.safetensors", run.spec, run.data, run.backdoor_test_set(),
                             device=device)["clean_asr"]


def target_met(m: dict, clean_acc: float) -> bool:
    """Issue 3's bar: ASR ≥ 90 % and ACC within 3 points of the clean model."""
    return m["asr"] >= 90.0 and clean_acc - m["acc"] <= 3.0


def result_row(name: str, m: dict, clean_acc: float, clean_asr: float, epochs: int, subset: str,
               seconds: float, kwargs: dict, poison_rate: float) -> str:
    """One markdown row of a trained attack."""
    notes = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    if poison_rate != 0.1:
        notes = ", ".join(filter(None, [f"poison rate {poison_rate}", notes]))
    return (f"| {name} | {m['acc']:.2f} | {m['asr']:.2f} | {m['ra']:.2f} | {clean_acc:.2f} | "
            f"{clean_acc - m['acc']:+.2f} | {clean_asr:.2f} | {'yes' if target_met(m, clean_acc) else '**no**'} | {epochs} | "
            f"{subset} | {seconds:.0f} | {notes} |")


def clean_row(acc: float, epochs: int, subset: str, seconds: float) -> str:
    return f"| clean (no attack) | {acc:.2f} | – | – | {acc:.2f} | – | – | – | {epochs} | {subset} | {seconds:.0f} | |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", nargs="+", default=None, help="Attack names (default: all registered).")
    ap.add_argument("--epochs", type=int, default=None, help="Training epochs (default 4; 8 with --probe-inputaware).")
    ap.add_argument("--train-subset", type=int, default=None,
                    help="Seeded training subset (default 10,000; all 60,000 with --probe-inputaware).")
    ap.add_argument("--test-subset", type=int, default=2_000)
    ap.add_argument("--model", default=None,
                    help="distox.models name (default small_cnn; small_vgg with --probe-inputaware, which takes "
                         "small_vgg or small_cnn).")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--poison-rate", type=float, default=0.1)
    ap.add_argument("--augment", action="store_true", help="Random crop + flip (off: a few epochs learn "
                                                           "faster without it).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME.KEY=VALUE", help="Override an attack argument.")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-attacks"), help="Run directories (cached).")
    ap.add_argument("--table", type=Path, default=None, help="Also write the markdown table here.")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="Train nothing: tabulate the finished runs under --runs.")
    ap.add_argument("--skip-clean", action="store_true",
                    help="Do not train the clean model (use it when cached; for parallel invocations).")
    ap.add_argument("--bench", type=Path, default=None, help="Tabulate this bench directory's attack cells.")
    ap.add_argument("--config", type=Path, default=None, help="The grid config benched into --bench.")
    ap.add_argument("--defense", default=None,
                    help="With --bench: also compare this grid column (e.g. d3) with no defense and the "
                         "clean-model ASR, per attack (issue 5's reproduction target).")
    ap.add_argument("--floor-seeds", type=int, nargs="*", default=[],
                    help="With --bench: also train clean references with these seeds and report the "
                         "range of their clean-model ASRs (the floor's seed-to-seed spread).")
    ap.add_argument("--probe-inputaware", action="store_true",
                    help="Train Input-aware alone (the probe's own data and model, below) epoch by epoch, then "
                         "dissect its trigger.")
    ap.add_argument("--save-probe", type=Path, default=None,
                    help="With --probe-inputaware: save G, M and the classifier here (torch.save).")
    args = ap.parse_args()
    if args.probe_inputaware:
        return probe_inputaware(args)
    args.epochs = 4 if args.epochs is None else args.epochs
    args.train_subset = 10_000 if args.train_subset is None else args.train_subset
    args.model = args.model or "small_cnn"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bench is not None or args.config is not None:
        if args.bench is None or args.config is None:
            ap.error("--bench and --config go together")
        return from_bench(args)

    names = args.attacks or [n for n in attacks.list()]
    sets = parse_grouped(args.set)
    common = dict(dataset="fashion-mnist", model=args.model, model_kwargs={"width": args.width},
                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, train_subset=args.train_subset,
                  test_subset=args.test_subset, augment=args.augment, seed=args.seed)
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    if (args.skip_clean or args.report_only) and not (args.runs / "clean" / "metrics.json").exists():
        clean, rows = {"acc": float("nan")}, []  # another invocation trains it into the same --runs
    else:
        clean = run_clean(AttackSpec(attack="none", **common), args.runs / "clean", device=args.device,
                          progress=not args.quiet)
        clean_record = json.loads((args.runs / "clean" / "clean.json").read_text())
        logging.info("clean: %s (%.0fs)", clean, time.perf_counter() - t0)
        rows = [clean_row(clean["acc"], args.epochs, f"{args.train_subset}/{args.test_subset}",
                          clean_record["seconds"])]
    misses = []
    for name in names:
        if name in SKIP:
            rows.append(f"| {name} | – | – | – | – | – | – | skipped | – | – | – | {SKIP[name]} |")
            continue
        kwargs = {**PROFILE.get(name, {}), **sets.get(name, {})}
        spec = AttackSpec(attack=name, attack_kwargs=kwargs, poison_rate=RATES.get(name, args.poison_rate),
                          **common)
        out = args.runs / name
        t0 = time.perf_counter()
        if args.report_only and not (out / "metrics.json").exists():
            rows.append(f"| {name} | – | – | – | {clean['acc']:.2f} | – | – | not run | {args.epochs} | "
                        f"{args.train_subset}/{args.test_subset} | – | not finished in this session |")
            misses.append(name)
            continue
        try:
            m = run_attack(spec, out, device=args.device, progress=not args.quiet)
        except Exception as exc:  # report the failure in the table and go on with the others
            logging.exception("%s failed", name)
            rows.append(f"| {name} | – | – | – | {clean['acc']:.2f} | – | – | FAILED | {args.epochs} | "
                        f"{args.train_subset}/{args.test_subset} | {time.perf_counter() - t0:.0f} | "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]} |")
            misses.append(name)
            continue
        rec = json.loads((out / "attack.json").read_text())
        if not target_met(m, clean["acc"]):
            misses.append(name)
        floor = (clean_model_asr(args.runs / "clean", out, args.device)
                 if (args.runs / "clean" / "model.safetensors").exists() else float("nan"))
        rows.append(result_row(name, m, clean["acc"], floor, args.epochs, f"{args.train_subset}/{args.test_subset}",
                               rec["seconds"]["total"], kwargs, spec.poison_rate))
        logging.info("%s: %s (%.0fs)", name, m, time.perf_counter() - t0)

    table = "\n".join([HEADER, *rows])
    footer = (f"\n{args.model} width {args.width}, SGD lr {args.lr} (cosine), batch {args.batch_size}, "
              f"augment {args.augment}, seed {args.seed}, poison rate {args.poison_rate} unless noted, "
              f"target 0 all-to-one; torch {torch.__version__}, {torch.get_num_threads()} thread(s) in this invocation, "
              f"{platform.processor() or platform.machine()}; this invocation {time.perf_counter() - t_all:.0f}s "
              f"(cached runs are read back). Target: ASR ≥ 90 and ACC drop ≤ 3. Missed: "
              f"{', '.join(misses) or 'none'}.")
    print(table + "\n" + footer)
    if args.table:
        args.table.write_text(table + "\n" + footer + "\n")


def inputaware_anatomy(atk: ia.InputAware, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                       target: int) -> None:
    """Print what makes an Input-aware classifier fire, on the non-target images of ``x``: ASR with
    each image's own trigger and with another image's pattern *and* mask (cross); own mask + the
    other image's pattern, and own pattern + the other image's mask; mask pixels (> 0.5) and
    |G(x) − x| under the mask for images that trigger and that fail."""
    keep = y != target
    x, y = x[keep], y[keep]
    gnet, mnet = atk._networks()
    gnet.eval()
    mnet.eval()
    model.eval()
    with torch.no_grad():
        mask, pattern = ia.sharpen_mask(mnet(x)), gnet(x)
        other = torch.roll(torch.arange(len(x)), 1)

        def hit(xb: torch.Tensor) -> torch.Tensor:
            return model(xb).argmax(1) == target

        own = hit(x + (pattern - x) * mask)
        cross = hit(x + (pattern[other] - x) * mask[other])
        own_mask = hit(x + (pattern[other] - x) * mask)
        own_pattern = hit(x + (pattern - x) * mask[other])
    on = (mask > 0.5).float()
    pixels = on.sum((1, 2, 3))
    contrast = ((pattern - x).abs() * on).sum((1, 2, 3)) / pixels.clamp_min(1)
    print(f"ASR own trigger {100 * own.float().mean():.2f} %, cross trigger {100 * cross.float().mean():.2f} %")
    print(f"own mask + other pattern {100 * own_mask.float().mean():.2f} %, "
          f"own pattern + other mask {100 * own_pattern.float().mean():.2f} %")
    for name, sel in (("triggered", own), ("failed", ~own)):
        print(f"{name}: {int(sel.sum())} images, {pixels[sel].mean():.2f} mask pixels, "
              f"|G(x) - x| under the mask {contrast[sel].mean():.3f}")


def probe_inputaware(args: argparse.Namespace) -> None:
    """``--probe-inputaware``: Input-aware (:class:`distox.attacks.inputaware.InputAware`, mask stage
    then classifier + generator) on the full Fashion-MNIST training set or a seeded subset
    (``--train-subset``), a seeded 2,000-image test subset, SGD lr 0.01 cosine, no augmentation,
    one torch thread, 3 mask epochs unless ``--set inputaware.mask_epochs=N``; ACC / ASR / RA after
    every epoch, then :func:`inputaware_anatomy` on the first 3,000 test images. The classifier has
    identity normalisation (as the recorded probes ran), so these runs are not run directories."""
    model_name = args.model or "small_vgg"
    if model_name not in ("small_vgg", "small_cnn"):
        raise SystemExit("--probe-inputaware takes --model small_vgg or small_cnn")
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    test_all = data.test
    gen = torch.Generator().manual_seed(0)
    if args.train_subset and args.train_subset < len(data.train):
        data.train = data.train.subset(torch.randperm(len(data.train), generator=gen)[:args.train_subset])
    data.test = data.test.subset(torch.randperm(len(data.test), generator=gen)[:2000])
    torch.manual_seed(0)
    if model_name == "small_vgg":
        model = Normalized(SmallVGG(10, 1, 16), (0.0,), (1.0,))
    else:
        model = create_model("small_cnn", 10, 1, width=16)
    params = {"mask_epochs": 3, "anneal_generator": False, **parse_grouped(args.set).get("inputaware", {})}
    atk = attacks.create("inputaware", **params)
    config = LoopConfig(epochs=8 if args.epochs is None else args.epochs, batch_size=args.batch_size, lr=0.01,
                        augment=False, seed=0)
    t0 = time.perf_counter()

    def report(epoch: int, m: torch.nn.Module) -> dict[str, float]:
        r = evaluate(m, data.test.x, data.test.y, atk.backdoor_test_set(data.test), device="cpu")
        print(f"epoch {epoch}: ACC {r['acc']:.2f} ASR {r['asr']:.2f} RA {r['ra']:.2f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return r

    atk.train_model(model, data, config, device="cpu", progress=False, on_epoch_end=report)
    last = atk.mask_history[-1] if atk.mask_history else {}
    print(f"mask density after the mask stage: {last.get('density', float('nan')):.4f} (target {atk.mask_density})")
    inputaware_anatomy(atk, model, test_all.x[:3000], test_all.y[:3000], atk.target)
    if args.save_probe:
        torch.save({"g": atk.generator.state_dict(), "m": atk.mask_net.state_dict(), "c": model.state_dict()},
                   args.save_probe)


def from_bench(args: argparse.Namespace) -> None:
    """The issue-3 table for the attack cells of a finished grid, each against a clean model
    trained with that cell's own training settings (same data subsets, loop, epochs and seed).
    Cells that share their settings share one clean model: ``--runs/clean`` for the first
    (the grid's common settings), ``--runs/clean-<key>`` for any other."""
    from distox.bench import Cache, expand, load_config
    from distox.bench.grid import cell_key
    from distox.experiment import clean_recipe

    grid, cache = expand(load_config(args.config)), Cache(args.bench)
    cells = [(c, cache.load(c.key)) for c in grid.attacks]
    if not cells:
        raise SystemExit(f"{args.config} has no attack cells")
    t0 = time.perf_counter()
    rows, misses, floors, clean_dirs, spreads = [], [], {}, {}, {}
    many_seeds = len({c.seed for c, _ in cells}) > 1
    if many_seeds and args.floor_seeds:
        raise SystemExit("--floor-seeds needs a single-seed grid: a multi-seed grid already gets one clean "
                         "reference per seed")
    name = {c.key: c.row + (f" (seed {c.seed})" if many_seeds else "") for c, _ in cells}
    for cell, rec in cells:
        base = clean_recipe(cell.config)
        subset = f"{base['train_subset'] or 'all'}/{base['test_subset'] or 'all'}"
        bkey = cell_key("clean", base)
        if bkey not in clean_dirs:
            clean_dir = args.runs / ("clean" if not clean_dirs else f"clean-{bkey}")
            clean = run_clean(AttackSpec(attack="none", **base), clean_dir, device=args.device,
                              progress=not args.quiet)
            clean_seconds = json.loads((clean_dir / "clean.json").read_text())["seconds"]
            clean_dirs[bkey] = (clean_dir, clean)
            label = "" if len(clean_dirs) == 1 else f" ({base['epochs']} epochs, batch {base['batch_size']}" + (
                f", seed {base['seed']})" if many_seeds else ")")
            rows.append(clean_row(clean["acc"], base["epochs"], subset, clean_seconds).replace(
                "clean (no attack)", f"clean (no attack){label}", 1))
        clean_dir, clean = clean_dirs[bkey]
        if rec is None:
            rows.append(f"| {name[cell.key]} | – | – | – | {clean['acc']:.2f} | – | – | not run | {base['epochs']} | {subset} | – | |")
            misses.append(name[cell.key])
            continue
        if not target_met(rec["result"], clean["acc"]):
            misses.append(name[cell.key])
        floor = floors[cell.key] = clean_model_asr(clean_dir, cache.cell_dir(cell.key), args.device)
        spreads[cell.key] = [floor] + [
            clean_model_asr(seeded_clean(args, clean_dir, base, s), cache.cell_dir(cell.key), args.device)
            for s in args.floor_seeds if s != base["seed"]]
        rows.append(result_row(name[cell.key], rec["result"], clean["acc"], floor, base["epochs"], subset,
                               rec["seconds"], cell.config["attack_kwargs"], cell.config["poison_rate"]))
    footer = (f"\nAttack cells of {args.bench} ({args.config}); clean references in "
              f"{', '.join(str(d) for d, _ in clean_dirs.values())} "
              f"(this invocation {time.perf_counter() - t0:.0f}s). Target: ASR ≥ 90 and ACC drop ≤ 3. "
              f"Missed: {', '.join(misses) or 'none'}.")
    text = "\n".join([HEADER, *rows]) + "\n" + footer
    if args.defense:
        text += "\n\n" + defense_vs_floor(grid, cache, cells, floors, args.defense, name)
    if args.floor_seeds:
        text += "\n\n" + floor_spread(cells, spreads, [cells[0][0].seed, *args.floor_seeds], name)
    print(text)
    if args.table:
        args.table.write_text(text + "\n")


def seeded_clean(args: argparse.Namespace, clean_dir: Path, base: dict, seed: int) -> Path:
    """A clean reference like ``clean_dir``'s but trained with ``seed`` (``<clean_dir>-seed<S>``)."""
    out = clean_dir.with_name(f"{clean_dir.name}-seed{seed}")
    run_clean(AttackSpec(attack="none", **{**base, "seed": seed}), out, device=args.device, progress=not args.quiet)
    return out


def floor_spread(cells, spreads: dict[str, list[float]], seeds: list[int], name: dict[str, str]) -> str:
    """Per attack: the clean-model ASR of each clean reference seed, and their range."""
    seeds = list(dict.fromkeys(seeds))
    lines = [f"| Attack | {' | '.join(f'clean-model ASR, seed {s}' for s in seeds)} | lowest | highest |",
             "|---" * (len(seeds) + 3) + "|"]
    for cell, _ in cells:
        vals = spreads.get(cell.key)
        if vals:
            lines.append(f"| {name[cell.key]} | {' | '.join(f'{v:.2f}' for v in vals)} | {min(vals):.2f} | {max(vals):.2f} |")
    return "\n".join(lines)


def defense_vs_floor(grid, cache, cells, floors: dict[str, float], column: str, name: dict[str, str]) -> str:
    """Per attack cell (row label ``name[key]``): no defense, the grid column ``column`` and the
    clean-model ASR, with issue 5's checks (ASR < 2 %, ACC within 3 points of no defense) and
    ASR ≤ clean-model ASR."""
    lines = [f"| Attack | No defense ACC | {column} ACC | ACC change | No defense ASR | {column} ASR | "
             f"clean-model ASR | ASR < 2 % | ASR ≤ clean-model ASR | ACC within 3 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cell, rec in cells:
        defended = [d for d in grid.defenses_of(cell.key) if d.column == column]
        after = cache.load(defended[0].key) if defended else None
        if rec is None or after is None or cell.key not in floors:
            lines.append(f"| {name[cell.key]} | – | – | – | – | – | – | not run | not run | not run |")
            continue
        n, d, floor = rec["result"], after["result"], floors[cell.key]
        change = d["acc"] - n["acc"]
        above = "yes" if d["asr"] <= floor else f"no (+{d['asr'] - floor:.2f})"
        lines.append(f"| {name[cell.key]} | {n['acc']:.2f} | {d['acc']:.2f} | {change:+.2f} | {n['asr']:.2f} | "
                     f"{d['asr']:.2f} | {floor:.2f} | {'yes' if d['asr'] < 2.0 else 'no'} | {above} | "
                     f"{'yes' if change >= -3.0 else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
