"""Sanity check for SSBA on Fashion-MNIST (not a unit test).

Trains the small CNN (width 16) on a seeded 10k subset of the training set twice, clean and
with SSBA (poison rate 0.1, target 0), and prints the encoder's quality (PSNR, bit accuracy),
clean ACC, and the backdoored model's ACC / ASR / RA on the full test set, plus wall times.

Run (from the repository root):
    nice -n 10 .venv/bin/python benchmarks/attack_sanity_ssba.py --epochs 5
    nice -n 10 .venv/bin/python benchmarks/attack_sanity_ssba.py --epochs 5 --set max_residual=0.15
``--set key=value`` (repeatable) overrides any SSBA argument; the encoder/decoder is cached in
``--cache-dir`` (default ``.distox-cache``) so reruns with the same SSBA settings skip it.
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from distox.attacks import PreparedContext, create
from distox.data import load_dataset, select_retain
from distox.data.core import DatasetBundle
from distox.metrics import evaluate
from distox.models import create_model
from distox.training import LoopConfig, train
from distox.cli.app import parse_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--augment", action="store_true", help="random crop + flip (SPEC §3 default)")
    ap.add_argument("--poison-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--cache-dir", default=".distox-cache")
    ap.add_argument("--skip-clean", action="store_true", help="do not train the clean reference model")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="SSBA argument")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    full = load_dataset("fashion-mnist")
    idx = select_retain(len(full.train), count=args.train_size, seed=args.seed)
    data = DatasetBundle(full.name, full.train.subset(idx), full.test, full.num_classes,
                         full.mean, full.std, full.source, full.class_names)
    config = LoopConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, augment=args.augment,
                        seed=args.seed)

    def model():
        torch.manual_seed(args.seed)
        return create_model("small_cnn", data.num_classes, data.in_channels, data.mean, data.std, width=16)

    result: dict = {"train_size": args.train_size, "epochs": args.epochs, "augment": args.augment,
                    "poison_rate": args.poison_rate, "threads": args.threads}
    if not args.skip_clean:
        t0 = time.perf_counter()
        clean = model()
        train(clean, data.train.x, data.train.y, config, device="cpu", progress=False, desc="clean")
        result["clean_acc"] = round(evaluate(clean, data.test.x, data.test.y, device="cpu")["acc"], 2)
        result["clean_seconds"] = round(time.perf_counter() - t0, 1)

    attack = create("ssba", poison_rate=args.poison_rate, seed=args.seed, **parse_params(args.set, "--set"))
    t0 = time.perf_counter()
    attack.prepare(PreparedContext(data=data, device="cpu", cache_dir=args.cache_dir, progress=False))
    result["ssba_params"] = attack.params()
    result["encoder"] = attack.info
    result["prepare_seconds"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    backdoored = model()
    attack.train_model(backdoored, data, config, device="cpu", progress=False)
    bd = attack.backdoor_test_set(data.test)
    metrics = evaluate(backdoored, data.test.x, data.test.y, bd, device="cpu")
    result.update({f"attacked_{k}": round(v, 2) for k, v in metrics.items()})
    result["attack_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
