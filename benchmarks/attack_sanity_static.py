"""Sanity check of the static data-poisoning attacks (Blended, SIG, LF) on Fashion-MNIST.

Trains the small CNN (width 16) on a seeded 10k subset of the Fashion-MNIST training set,
clean and under each attack, and prints ACC / ASR / RA on the full 10k test set, so one can
see whether each attack's defaults reach ASR >= 90 % at an ACC close to clean training.
This is a sanity check, not a unit test; nothing is written to BENCHMARKS.md.

Run (2 CPU cores; a few minutes per attack):

    nice -n 10 .venv/bin/python benchmarks/attack_sanity_static.py
    nice -n 10 .venv/bin/python benchmarks/attack_sanity_static.py --attacks lf --set lf.linf=0.1

``--set NAME.KEY=VALUE`` overrides one attack argument (VALUE parsed as JSON, else a string).
SIG is clean-label: its poison rate is capped at the target class's share of the subset
(the 10k subset holds slightly fewer than 1,000 class-0 images).
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from distox.attacks import PreparedContext, create
from distox.data import DatasetBundle, load_dataset, select_retain
from distox.metrics import evaluate
from distox.models import create_model
from distox.training import LoopConfig, train
from distox.cli.app import parse_grouped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attacks", nargs="+", default=["clean", "blended", "sig", "lf"])
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--augment", action="store_true", help="random crop (pad 4) + flip while training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a shared, oversubscribed CPU)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="NAME.KEY=VALUE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("distox.attacks.lf").setLevel(logging.DEBUG)  # one line per UAP pass
    torch.set_num_threads(args.threads)
    overrides = parse_grouped(args.overrides)

    full = load_dataset("fashion-mnist")
    idx = select_retain(len(full.train), count=args.n_train, seed=args.seed)
    data = DatasetBundle(full.name, full.train.subset(idx), full.test, full.num_classes,
                         full.mean, full.std, source=full.source)
    c = data.in_channels

    def factory() -> torch.nn.Module:
        return create_model("small_cnn", data.num_classes, c, data.mean, data.std, width=args.width)

    config = LoopConfig(epochs=args.epochs, lr=args.lr, batch_size=128, augment=args.augment,
                        flip=args.augment, seed=args.seed)
    shown = {k: v for k, v in config.to_dict().items() if k in ("epochs", "lr", "batch_size", "augment")}
    print(f"fashion-mnist: {len(data.train)} train / {len(data.test)} test; small_cnn width {args.width}; "
          f"{json.dumps(shown)}")
    for name in args.attacks:
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        model = factory()
        if name == "clean":
            train(model, data.train.x, data.train.y, config, progress=False, desc="clean")
            metrics, info = evaluate(model, data.test.x, data.test.y), {}
        else:
            kw = {"seed": args.seed, **overrides.get(name, {})}
            if name == "sig" and "poison_rate" not in kw:
                share = float((data.train.y == kw.get("target", 0)).float().mean())
                kw["poison_rate"] = min(0.1, int(share * 10000) / 10000)
            atk = create(name, **kw)
            atk.prepare(PreparedContext(data, model_factory=factory, progress=False))
            atk.train_model(model, data, config, progress=False)
            metrics = evaluate(model, data.test.x, data.test.y, atk.backdoor_test_set(data.test))
            info = {k: v for k, v in atk.params().items() if k not in ("name", "seed", "shift", "mode")}
        secs = time.perf_counter() - t0
        print(f"{name:8s} ACC {metrics['acc']:6.2f}  ASR {metrics.get('asr', float('nan')):6.2f}  "
              f"RA {metrics.get('ra', float('nan')):6.2f}  {secs:6.1f} s  {json.dumps(info)}", flush=True)


if __name__ == "__main__":
    main()
