"""Training cost of the model zoo on Fashion-MNIST-shaped input (1×28×28, 10 classes), CPU.

For sizing benchmarks: for each model, its parameter count and the images per second of one
SGD step (forward, cross-entropy, backward, update; train mode) on a random batch.

    python benchmarks/model_costs.py [--threads 1] [--batch-size 128] [--steps 10] [--warmup 3]

Each step is timed alone and the median is reported (robust to other work on the machine);
``s / 10k img`` is the seconds one pass over 10,000 training images would take at that rate.
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
from torch.nn import functional as F

from distox.models import create_model

#: (label, create_model name, keyword arguments)
MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("small_cnn w16", "small_cnn", {"width": 16}),
    ("small_vgg w16", "small_vgg", {"width": 16}),
    ("preactresnet18 w0.25", "preactresnet18", {"width": 0.25}),
    ("preactresnet18 w0.125", "preactresnet18", {"width": 0.125}),
    ("torchvision:resnet18 (gray)", "torchvision:resnet18", {}),
    ("small_vit (default)", "small_vit", {}),
]


def step_seconds(model: torch.nn.Module, batch_size: int, steps: int, warmup: int) -> float:
    """Median seconds of one SGD step on a random (batch_size, 1, 28, 28) batch."""
    x, y = torch.rand(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch thread(s), batch {args.batch_size}, "
          f"median of {args.steps} steps, torch {torch.__version__}\n")
    print("| model | parameters | images/s | s / 10k img |")
    print("|---|---:|---:|---:|")
    for label, name, kwargs in MODELS:
        model = create_model(name, 10, 1, **kwargs)
        params = sum(p.numel() for p in model.parameters())
        rate = args.batch_size / step_seconds(model, args.batch_size, args.steps, args.warmup)
        print(f"| {label} | {params:,} | {rate:,.0f} | {10_000 / rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
