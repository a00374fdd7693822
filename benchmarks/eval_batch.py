"""Seconds to evaluate a test set at several batch sizes (``distox.metrics.predict``, under
``torch.inference_mode``): what ``metrics.CPU_EVAL_BATCH`` was chosen from.

    python benchmarks/eval_batch.py [--dataset fashion-mnist] [--model preactresnet18] [--width 0.125]
                                    [--images 4096] [--batches 256,512,1024,2048,4096] [--repeats 3]
                                    [--device cpu] [--threads N]

Prints a markdown table: batch size, best of ``--repeats`` seconds, images per second.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from distox.data import load_dataset
from distox.metrics import predict
from distox.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="256,512,1024,2048,4096", help="Comma-separated batch sizes.")
    ap.add_argument("--model", default="preactresnet18")
    ap.add_argument("--images", type=int, default=4096, help="First N test images.")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--repeats", type=int, default=3, help="Best of this many timings per batch size.")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    torch.manual_seed(0)
    width = int(args.width) if args.model == "small_cnn" else args.width
    model = create_model(args.model, data.num_classes, data.in_channels, data.mean, data.std, width=width)
    x = data.test.x[: args.images]
    print(f"{len(x)} {args.dataset} test images, {args.model} w{args.width:g}, {args.device}, "
          f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print("| batch | seconds (best of %d) | images/s |" % args.repeats)
    print("|---|---|---|")
    for bs in (int(b) for b in args.batches.split(",")):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            predict(model, x, bs, args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        print(f"| {bs} | {best:.3f} | {len(x) / best:.0f} |")


if __name__ == "__main__":
    main()
