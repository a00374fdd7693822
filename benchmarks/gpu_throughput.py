"""D3 and FT images/s against the model's raw training throughput (issue 16, GPU profile).

The question: how close does a whole purification (data on the host, per-batch augmentation and
transfer, the loop, D3's distance and projection) come to what the accelerator can do for the
same model? For each precision / memory-format setting this prints

- **raw**: images/s of a bare SGD step (forward, cross-entropy, backward, update; train mode)
  on one random batch that already sits on the device — the ceiling for that model;
- **FT** and **D3** (``--preset``, default ``paper``): images/s of the real defense
  (:func:`distox.defenses.create`) over ``--epochs`` epochs on a random retain set of
  ``--retain`` images, after one untimed warm-up epoch of each;
- each one's share of the raw rate, and D3/FT time.

The defaults are ``configs/paper.yaml``'s D3 cell: PreAct-ResNet18 (width 1), 3×32×32, 10
classes, 2,500 retain images (5 % of CIFAR-10's training set), batch 256, the reference's crop
and flip. The pixels are random: throughput does not depend on them.

    python benchmarks/gpu_throughput.py [--device cuda] [--model preactresnet18] [--width 1]
        [--shape 3 32 32] [--retain 2500] [--epochs 3] [--batch-size 256] [--preset paper]
        [--settings fp32 bf16 fp32+cl bf16+cl] [--dataset cifar10]

Prints a markdown table. Runs on a CPU too (``--device cpu``, small sizes) for testing.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch
from torch.nn import functional as F

from distox.data.core import ImageSplit
from distox.defenses import create
from distox.models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_rate(model: torch.nn.Module, shape: tuple[int, ...], batch_size: int, device: torch.device,
             precision: str, channels_last: bool, steps: int = 20, warmup: int = 5) -> float:
    """Images/s of a bare SGD step on a device-resident random batch (median step time)."""
    model = model.to(device)
    x = torch.rand(batch_size, *shape, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch_size / statistics.median(times)


def defense_rate(method: str, model: torch.nn.Module, retain: ImageSplit, device: torch.device,
                 epochs: int, batch_size: int, speed: dict[str, Any], extra: dict[str, Any]) -> float:
    """Images/s of one whole defense run (``epochs`` epochs), after an untimed 1-epoch run."""
    create(method, epochs=1, batch_size=batch_size, seed=0, **speed, **extra)(model, retain, device=device,
                                                                                progress=False)
    defense = create(method, epochs=epochs, batch_size=batch_size, seed=0, **speed, **extra)
    _sync(device)
    t0 = time.perf_counter()
    defense(model, retain, device=device, progress=False)
    _sync(device)
    return len(retain) * epochs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="preactresnet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    ap.add_argument("--dataset", default="cifar10", help="augmentation of this dataset (none: no augmentation)")
    ap.add_argument("--retain", type=int, default=2500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--settings", nargs="+", default=["fp32", "bf16", "fp32+cl", "bf16+cl"],
                    help="precision[+cl for channels_last] per row")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    shape = tuple(args.shape)
    kwargs = {"width": int(args.width) if args.model == "small_cnn" else args.width}
    model = create_model(args.model, 10, shape[0], **kwargs)
    dataset = None if args.dataset == "none" else args.dataset
    retain = ImageSplit(torch.rand(args.retain, *shape), torch.randint(0, 10, (args.retain,)), dataset=dataset)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}; {args.model} w{args.width:g}, {'×'.join(map(str, shape))}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; retain {args.retain}, batch "
          f"{args.batch_size}, {args.epochs} epochs, D3 preset {args.preset}, augmentation "
          f"{dataset or 'none'}\n")
    print("| setting | raw img/s | FT img/s | FT / raw | D3 img/s | D3 / raw | D3/FT time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for setting in args.settings:
        precision, _, cl = setting.partition("+")
        speed = {"precision": precision, "channels_last": cl == "cl", "augment": dataset is not None}
        raw = raw_rate(copy.deepcopy(model), shape, args.batch_size, device, precision, cl == "cl")
        ft = defense_rate("ft", model, retain, device, args.epochs, args.batch_size, speed, {})
        d3 = defense_rate("d3", model, retain, device, args.epochs, args.batch_size, speed, {"preset": args.preset})
        print(f"| {setting} | {raw:,.0f} | {ft:,.0f} | {ft / raw:.2f} | {d3:,.0f} | {d3 / raw:.2f} | "
              f"{ft / d3:.3f} |", flush=True)


if __name__ == "__main__":
    main()
