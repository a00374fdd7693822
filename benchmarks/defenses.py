"""Baseline defenses on Fashion-MNIST (CPU profile): no defense, FT, FT-SAM, SAU and D3.

For each attack (BadNets and Blended by default) one backdoored small CNN (width 16) is trained
on a seeded subset of the Fashion-MNIST training set with :func:`distox.experiment.run_attack`
(cached in ``OUT/<attack>/``: a second invocation reuses it), then every defense is applied with
:func:`distox.experiment.run_defense` to the *same* retain set (5 % of the training subset,
seed 0) for the same number of epochs, each with its own reference hyper-parameters otherwise
(SPEC §1, §4). Prints a Markdown table of ACC / ASR / RA (percent, two decimals), DER and each
defense's wall time, and writes ``OUT/results.json``.

Run (2 shared CPU cores; the numbers in BENCHMARKS.md come from this exact command):

    nice -n 10 .venv/bin/python benchmarks/defenses.py

Options: ``--attacks badnets,blended``, ``--methods ft,ft-sam,sau,d3``, ``--train-subset 10000``,
``--test-subset 2000``, ``--attack-epochs 8``, ``--attack-lr 0.02``, ``--attack-augment`` (off:
6 epochs at lr 0.01 with crop + flip left the small CNN at 70 % ACC and BadNets at 10 % ASR),
``--defense-epochs 10``, ``--ratio 0.05``,
``--defense-batch-size 64`` (the reference's 256 is for a 2,500-image CIFAR-10 retain set, 10
steps per epoch; 64 keeps about that many steps per epoch on 500 retain images),
``--width 16``, ``--threads 1`` (one intra-op thread is fastest on a busy 2-core machine),
``--set METHOD.KEY=VALUE`` (a defense hyper-parameter, VALUE parsed as JSON), ``--out DIR``,
``--attacks-only`` (train or reuse the attack runs, no defenses), ``--tag NAME`` (a variant:
writes ``defense/METHOD-NAME/`` and ``results-NAME.json`` instead of overwriting the main run).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from distox.experiment import AttackSpec, DefenseSpec, run_attack, run_defense
from distox.metrics import fmt
from distox.cli.app import parse_grouped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", default="badnets,blended")
    ap.add_argument("--methods", default="ft,ft-sam,sau,d3")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--attack-epochs", type=int, default=8)
    ap.add_argument("--attack-lr", type=float, default=0.02)
    ap.add_argument("--attack-augment", action="store_true", help="random crop + flip while poisoning")
    ap.add_argument("--defense-epochs", type=int, default=10)
    ap.add_argument("--defense-batch-size", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=0.05)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--out", default="runs/bench-defenses")
    ap.add_argument("--tag", default="", help="variant name: results-TAG.json, defense/METHOD-TAG/")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--attacks-only", action="store_true", help="train (or reuse) the attack runs and stop")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    overrides = parse_grouped(args.overrides)
    out = Path(args.out)
    t_all = time.perf_counter()
    rows, results = [], []
    for attack in args.attacks.split(","):
        spec = AttackSpec(attack, dataset="fashion-mnist", model="small_cnn", model_kwargs={"width": args.width},
                          epochs=args.attack_epochs, lr=args.attack_lr, augment=args.attack_augment,
                          flip=args.attack_augment, train_subset=args.train_subset, test_subset=args.test_subset,
                          seed=0)
        t0 = time.perf_counter()
        metrics = run_attack(spec, out / attack, device="cpu", progress=args.progress)
        logging.info("%s: attack run ready in %.1fs: %s", attack, time.perf_counter() - t0, metrics)
        rows.append((attack, "none", metrics["acc"], metrics["asr"], metrics["ra"], None, None))
        for method in ([] if args.attacks_only else args.methods.split(",")):
            dspec = DefenseSpec(method, ratio=args.ratio, epochs=args.defense_epochs,
                                batch_size=args.defense_batch_size, seed=0, params=overrides.get(method, {}))
            dest = out / attack / "defense" / (f"{method}-{args.tag}" if args.tag else method)
            rec = run_defense(out / attack, dspec, dest, force=True, device="cpu", progress=args.progress,
                              track_epochs=False)
            a = rec["after"]
            rows.append((attack, method, a["acc"], a["asr"], a["ra"], rec["der"], rec["seconds"]))
            results.append(rec | {"retain": {k: v for k, v in rec["retain"].items() if k != "indices"}})
            logging.info("%s / %s: %s DER %.2f in %.1fs", attack, method, a, rec["der"], rec["seconds"])
    total = time.perf_counter() - t_all
    lines = ["| Attack | Defense | ACC | ASR | RA | DER | Defense wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for attack, method, acc, asr, ra, d, sec in rows:
        lines.append(f"| {attack} | {method} | {fmt(acc)} | {fmt(asr)} | {fmt(ra)} | "
                     f"{'—' if d is None else f'{d:.2f}'} | {'—' if sec is None else f'{sec:.1f}'} |")
    table = "\n".join(lines)
    print(table)
    print(f"\ntotal wall time {total:.1f}s on {platform.node()} ({torch.get_num_threads()} torch thread(s))")
    out.mkdir(parents=True, exist_ok=True)
    (out / (f"results-{args.tag}.json" if args.tag else "results.json")).write_text(json.dumps({"args": vars(args), "table": table, "total_seconds": total,
                                                  "defenses": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
