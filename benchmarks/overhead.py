"""Time per epoch of D3 versus plain fine-tuning (same data, model, batch, epochs, seed).

The paper claims D3 adds negligible overhead to fine-tuning (only the distance term and a
projection). Target (issue 2): D3 ≤ 1.05 × FT per epoch.

    python benchmarks/overhead.py [--dataset fashion-mnist] [--model small_cnn] [--width 16]
                                  [--retain 3000] [--epochs 5] [--repeats 3] [--device cpu] [--threads N]
                                  [--preset reference|paper|default] [--no-augment]
                                  [--precision auto|fp32|bf16|fp16] [--channels-last] [--compile]
                                  [--eval-every N] [--d3 KEY=VALUE ...]

Runs FT and D3 alternately ``--repeats`` times each (so background load hits both alike), after
an untimed one-epoch run of each (``--warmup 0``: none; the first run otherwise pays for
one-time kernel set-up), and reports the median seconds per epoch and their ratio as a
markdown table. ``--precision``,
``--channels-last`` and ``--compile`` go to both defenses (:mod:`distox.acceleration`);
``--eval-every N`` also evaluates the whole test set every N epochs, as ``distox defend`` does
(its time is part of the epoch's). ``--d3 KEY=VALUE`` (repeatable; VALUE read as JSON, else as
text) sets a D3 option over the preset, e.g. ``--d3 shared_radius=0.05``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from distox.data import load_dataset, select_retain
from distox.defenses import create
from distox.metrics import Evaluator
from distox.models import create_model


def d3_options(pairs: list[str]) -> dict[str, object]:
    """``["shared_radius=0.05", ...]`` -> ``{"shared_radius": 0.05, ...}`` (values as JSON, else text)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--d3 takes KEY=VALUE; got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--width", type=float, default=16)
    ap.add_argument("--retain", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--preset", default="reference", help="D3 preset (reference, paper, all-layers, default).")
    ap.add_argument("--no-augment", action="store_true", help="No crop augmentation for either method.")
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (both methods).")
    ap.add_argument("--channels-last", action="store_true", help="Channels-last memory order (both methods).")
    ap.add_argument("--compile", action="store_true", help="torch.compile (both methods).")
    ap.add_argument("--eval-every", type=int, default=0, help="Evaluate the test set every N epochs (0: never).")
    ap.add_argument("--warmup", type=int, default=1, help="Untimed one-epoch runs of each method first (1).")
    ap.add_argument("--d3", action="append", default=[], metavar="KEY=VALUE",
                    help="A D3 option over the preset (repeatable; VALUE as JSON, else text).")
    args = ap.parse_args()
    d3_extra = {"preset": args.preset, **d3_options(args.d3)}
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset(args.dataset)
    retain = data.train.subset(select_retain(len(data.train), count=args.retain, seed=0))
    torch.manual_seed(0)
    model = create_model(args.model, data.num_classes, data.in_channels, data.mean, data.std,
                         width=args.width if args.model != "small_cnn" else int(args.width))
    speed = {"precision": args.precision, "channels_last": args.channels_last, "compile": args.compile}
    evaluator = (Evaluator(data.test.x, data.test.y, device=args.device, every=args.eval_every, last=args.epochs)
                 if args.eval_every else None)
    per_epoch: dict[str, list[float]] = {"ft": [], "d3": []}
    for method in ("ft", "d3") * args.warmup:
        extra = d3_extra if method == "d3" else {}
        create(method, epochs=1, batch_size=args.batch_size, seed=0, augment=not args.no_augment, **speed,
               **extra)(model, retain, device=args.device, progress=False)
    for _ in range(args.repeats):
        for method in ("ft", "d3"):
            extra = d3_extra if method == "d3" else {}
            defense = create(method, epochs=args.epochs, batch_size=args.batch_size, seed=0,
                             augment=not args.no_augment, **speed, **extra)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            defense(model, retain, device=args.device, progress=False, evaluator=evaluator)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            per_epoch[method].append((time.perf_counter() - t0) / args.epochs)
    ft, d3 = statistics.median(per_epoch["ft"]), statistics.median(per_epoch["d3"])
    dev = (torch.cuda.get_device_name() if args.device.startswith("cuda")
           else f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads")
    how = ", ".join([args.precision] + [k for k in ("channels_last", "compile") if speed[k]]
                    + ([f"eval every {args.eval_every}"] if args.eval_every else [])
                    + [f"{k}={v}" for k, v in d3_extra.items() if k != "preset"])
    print("| machine | model | D3 preset | options | retain | batch | epochs×repeats | FT s/epoch | D3 s/epoch | D3/FT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dev} ({platform.machine()}), torch {torch.__version__} | {args.model} w{args.width:g} | {args.preset} | "
          f"{how} | {args.retain} {args.dataset} | {args.batch_size} | {args.epochs}×{args.repeats} | "
          f"{ft:.3f} | {d3:.3f} | {d3 / ft:.3f} |")


if __name__ == "__main__":
    main()
