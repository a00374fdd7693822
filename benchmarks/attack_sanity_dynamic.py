"""Sanity check of the training-controlled attacks (WaNet, Input-aware) on Fashion-MNIST.

Trains the small CNN (width 16) on a seeded subset of the training set, once clean and once
per attack, with the same LoopConfig, and prints ACC / ASR / RA (percent, SPEC §2) plus the
wall time. Input-aware additionally reports the cross-trigger accuracy (test images carrying
another image's trigger, scored against their true labels).

Usage:
    nice -n 10 .venv/bin/python benchmarks/attack_sanity_dynamic.py --epochs 10 --mask-epochs 5
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from distox.attacks import create
from distox.data import load_dataset
from distox.data.core import DatasetBundle
from distox.metrics import evaluate, predict, percent
from distox.models import create_model
from distox.training import LoopConfig, train


def subset(data: DatasetBundle, n: int, seed: int) -> DatasetBundle:
    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:n]
    return DatasetBundle(data.name, data.train.subset(idx), data.test, data.num_classes, data.mean,
                         data.std, data.source, data.class_names)


def monitor(atk, data: DatasetBundle, n: int):
    """Per-epoch ACC/ASR on the first ``n`` test images (the backdoor set is rebuilt every
    epoch because Input-aware's trigger changes while G trains)."""
    if n <= 0:
        return None
    x, y = data.test.x[:n], data.test.y[:n]

    def callback(epoch: int, model) -> dict[str, float]:
        out = evaluate(model, x, y, atk.backdoor_test_set(data.test.subset(torch.arange(n))), device="cpu")
        logging.info("  epoch %d: %s", epoch, {k: round(v, 2) for k, v in out.items()})
        return out

    return callback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", nargs="+", default=["clean", "wanet", "inputaware"])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--mask-epochs", type=int, default=5, help="Input-aware stage-1 epochs")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)")
    ap.add_argument("--width", type=int, default=None, help="Input-aware G/M base channels (default auto)")
    ap.add_argument("--monitor", type=int, default=0,
                    help="log ACC/ASR on this many test images after every epoch (0: off)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    data = subset(load_dataset("fashion-mnist"), args.n_train, args.seed)
    cfg = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     augment=not args.no_augment, seed=args.seed)
    rows = []
    for name in args.attacks:
        torch.manual_seed(args.seed)
        model = create_model("small_cnn", data.num_classes, data.in_channels, data.mean, data.std, width=16)
        t0 = time.perf_counter()
        row: dict = {"attack": name}
        if name == "clean":
            train(model, data.train.x, data.train.y, cfg, device="cpu", progress=False, desc="clean")
            row.update(evaluate(model, data.test.x, data.test.y, device="cpu"))
        else:
            kw = {"mask_epochs": args.mask_epochs, "width": args.width} if name == "inputaware" else {}
            atk = create(name, seed=args.seed, **kw)
            atk.train_model(model, data, cfg, device="cpu", progress=False,
                            on_epoch_end=monitor(atk, data, args.monitor))
            row.update(evaluate(model, data.test.x, data.test.y, atk.backdoor_test_set(data.test), device="cpu"))
            if name == "inputaware":
                x, partner = data.test.x, data.test.x.roll(1, 0)
                atk.generator.eval()
                atk.mask_net.eval()
                with torch.no_grad():
                    xc = torch.cat([atk.trigger(x[i:i + 512], partner[i:i + 512])[0]
                                    for i in range(0, len(x), 512)])
                row["cross_acc"] = percent(predict(model, xc, device="cpu") == data.test.y)
                row["mask_density"] = float(atk.mask_history[-1]["density"]) if atk.mask_history else None
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        logging.info("%s", json.dumps(row))

    print(f"\nFashion-MNIST, small_cnn width 16, {args.n_train} train images, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, augment {not args.no_augment}, "
          f"Input-aware mask epochs {args.mask_epochs}, seed {args.seed}")
    print("| attack | ACC | ASR | RA | extra | wall s |\n|---|---|---|---|---|---|")
    for r in rows:
        extra = f"cross ACC {r['cross_acc']:.2f}" if "cross_acc" in r else ""
        print(f"| {r['attack']} | {r['acc']:.2f} | {r.get('asr', float('nan')):.2f} | "
              f"{r.get('ra', float('nan')):.2f} | {extra} | {r['seconds']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
