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
from distox.experiment import AttackSpec, run_attack, run_clean
from distox.cli.app import parse_grouped

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", nargs="+", default=None, help="Attack names (default: all registered).")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-subset", type=int, default=10_000)
    ap.add_argument("--test-subset", type=int, default=2_000)
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    names = args.attacks or [n for n in attacks.list()]
    sets = parse_grouped(args.set)
    common = dict(dataset="fashion-mnist", model="small_cnn", model_kwargs={"width": args.width},
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
        rows = [f"| clean (no attack) | {clean['acc']:.2f} | – | – | {clean['acc']:.2f} | – | – | {args.epochs} | "
                f"{args.train_subset}/{args.test_subset} | {clean_record['seconds']:.0f} | |"]
    misses = []
    for name in names:
        if name in SKIP:
            rows.append(f"| {name} | – | – | – | – | – | skipped | – | – | – | {SKIP[name]} |")
            continue
        kwargs = {**PROFILE.get(name, {}), **sets.get(name, {})}
        spec = AttackSpec(attack=name, attack_kwargs=kwargs, poison_rate=RATES.get(name, args.poison_rate),
                          **common)
        out = args.runs / name
        t0 = time.perf_counter()
        if args.report_only and not (out / "metrics.json").exists():
            rows.append(f"| {name} | – | – | – | {clean['acc']:.2f} | – | not run | {args.epochs} | "
                        f"{args.train_subset}/{args.test_subset} | – | not finished in this session |")
            misses.append(name)
            continue
        try:
            m = run_attack(spec, out, device=args.device, progress=not args.quiet)
        except Exception as exc:  # report the failure in the table and go on with the others
            logging.exception("%s failed", name)
            rows.append(f"| {name} | – | – | – | {clean['acc']:.2f} | – | FAILED | {args.epochs} | "
                        f"{args.train_subset}/{args.test_subset} | {time.perf_counter() - t0:.0f} | "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]} |")
            misses.append(name)
            continue
        rec = json.loads((out / "attack.json").read_text())
        gap = clean["acc"] - m["acc"]
        ok = m["asr"] >= 90.0 and gap <= 3.0
        if not ok:
            misses.append(name)
        notes = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        if spec.poison_rate != 0.1:
            notes = ", ".join(filter(None, [f"poison rate {spec.poison_rate}", notes]))
        rows.append(f"| {name} | {m['acc']:.2f} | {m['asr']:.2f} | {m['ra']:.2f} | {clean['acc']:.2f} | "
                    f"{gap:+.2f} | {'yes' if ok else '**no**'} | {args.epochs} | "
                    f"{args.train_subset}/{args.test_subset} | {rec['seconds']['total']:.0f} | {notes} |")
        logging.info("%s: %s (%.0fs)", name, m, time.perf_counter() - t0)

    header = ("| attack | ACC | ASR | RA | clean ACC | ACC drop | target met | epochs | train/test subset | "
              "seconds | notes |\n|---|---|---|---|---|---|---|---|---|---|---|")
    table = "\n".join([header, *rows])
    footer = (f"\nsmall_cnn width {args.width}, SGD lr {args.lr} (cosine), batch {args.batch_size}, "
              f"augment {args.augment}, seed {args.seed}, poison rate {args.poison_rate} unless noted, "
              f"target 0 all-to-one; torch {torch.__version__}, {torch.get_num_threads()} thread(s) in this invocation, "
              f"{platform.processor() or platform.machine()}; this invocation {time.perf_counter() - t_all:.0f}s "
              f"(cached runs are read back). Target: ASR ≥ 90 and ACC drop ≤ 3. Missed: "
              f"{', '.join(misses) or 'none'}.")
    print(table + "\n" + footer)
    if args.table:
        args.table.write_text(table + "\n" + footer + "\n")


if __name__ == "__main__":
    main()
