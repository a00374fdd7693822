"""D3 (paper preset, no augmentation) after different epoch budgets on an existing attack run.

    python benchmarks/d3_epochs.py RUN_DIR [--epochs 10 20 40] [--batch-size 32] [--ratio 0.05]
                                   [--param KEY=VALUE ...] [--seed S]

``--param`` overrides a D3 hyper-parameter (e.g. ``augment=true``, ``lmd=0.5``, ``layers=all-linear``).

Prints ACC / ASR / RA of the backdoored model and of D3 after each budget, on the run's test
subset, with the run's seeded 5 % retain set (seed ``--seed``, default 0, which also seeds D3,
as a grid's defense cell of that seed does). One torch thread, CPU.
"""
from __future__ import annotations

import argparse
import time

import torch

from distox.cli.app import parse_params
from distox.defenses import create
from distox.experiment import load_run
from distox.metrics import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 20, 40])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ratio", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0, help="Seed of the retain set and of D3 (a grid cell's seed).")
    ap.add_argument("--param", nargs="*", default=[], metavar="KEY=VALUE", help="Override a D3 hyper-parameter.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = parse_params(args.param)
    run = load_run(args.run_dir)
    backdoor = run.backdoor_test_set()
    retain = run.retain(ratio=args.ratio, seed=args.seed)
    before = run.evaluate()
    print("| D3 epochs | ACC | ASR | RA | seconds |\n|---|---|---|---|---|")
    print(f"| backdoored ({len(retain)} retain images) | {before['acc']:.2f} | {before['asr']:.2f} | {before['ra']:.2f} | – |")
    for epochs in args.epochs:
        t0 = time.perf_counter()
        d3 = create("d3", **{"preset": "paper", "augment": False, **params, "epochs": epochs,
                             "batch_size": args.batch_size, "seed": args.seed})
        model = d3(run.model, retain, device="cpu", progress=False).model
        m = evaluate(model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
        print(f"| {epochs} | {m['acc']:.2f} | {m['asr']:.2f} | {m['ra']:.2f} | {time.perf_counter() - t0:.0f} |")


if __name__ == "__main__":
    main()
