"""Input-aware on Fashion-MNIST, epoch by epoch, then an anatomy of the trained trigger.

    python benchmarks/inputaware_probe.py --model small_vgg --epochs 8 [--train-subset 20000]
        [--batch-size 32] [--set mask_epochs=3 cross_rate=0.0] [--anneal-generator] [--save F]

Trains the attack (:class:`distox.attacks.inputaware.InputAware`, mask stage then classifier +
generator) on the full training set or a seeded subset, with a seeded 2,000-image test subset,
SGD lr 0.01 cosine, no augmentation, one torch thread; after every epoch it prints ACC / ASR /
RA. The classifier has identity normalisation (as these probes were run). Then, on the
non-target images of the first 3,000 test images, it asks what the classifier keys on:

- ASR with the image's own trigger, and with another image's pattern *and* mask (cross);
- own mask + the other image's pattern, and own pattern + the other image's mask;
- mask pixels (> 0.5) and |G(x) − x| under the mask for images that trigger and that fail.

``--anneal-generator`` sets the attack's ``anneal_generator`` option: the classifier's cosine
schedule anneals G's Adam too (by default G keeps a constant lr, as in the reference).
"""
from __future__ import annotations

import argparse
import time

import torch

from distox.attacks import create
from distox.attacks import inputaware as ia
from distox.cli.app import parse_params
from distox.data import load_dataset
from distox.metrics import evaluate
from distox.models import Normalized, create_model
from distox.models.small_vgg import SmallVGG
from distox.training import LoopConfig


def anatomy(atk: ia.InputAware, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, target: int) -> None:
    """Print what makes the trained classifier fire (see the module docstring)."""
    keep = y != target
    x, y = x[keep], y[keep]
    gnet, mnet = atk._networks()
    gnet.eval()
    mnet.eval()
    model.eval()
    with torch.no_grad():
        mask, pattern = ia.sharpen_mask(mnet(x)), gnet(x)
        other = torch.roll(torch.arange(len(x)), 1)

        def hit(xb: torch.Tensor) -> torch.Tensor:
            return model(xb).argmax(1) == target

        own = hit(x + (pattern - x) * mask)
        cross = hit(x + (pattern[other] - x) * mask[other])
        own_mask = hit(x + (pattern[other] - x) * mask)
        own_pattern = hit(x + (pattern - x) * mask[other])
    on = (mask > 0.5).float()
    pixels = on.sum((1, 2, 3))
    contrast = ((pattern - x).abs() * on).sum((1, 2, 3)) / pixels.clamp_min(1)
    print(f"ASR own trigger {100 * own.float().mean():.2f} %, cross trigger {100 * cross.float().mean():.2f} %")
    print(f"own mask + other pattern {100 * own_mask.float().mean():.2f} %, "
          f"own pattern + other mask {100 * own_pattern.float().mean():.2f} %")
    for name, sel in (("triggered", own), ("failed", ~own)):
        print(f"{name}: {int(sel.sum())} images, {pixels[sel].mean():.2f} mask pixels, "
              f"|G(x) - x| under the mask {contrast[sel].mean():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small_vgg", choices=["small_vgg", "small_cnn"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-subset", type=int, default=None, help="Seeded subset (default: all 60,000).")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Input-aware arguments.")
    ap.add_argument("--anneal-generator", action="store_true")
    ap.add_argument("--save", default=None, help="Save G, M and the classifier here (torch.save).")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    test_all = data.test
    gen = torch.Generator().manual_seed(0)
    if args.train_subset and args.train_subset < len(data.train):
        data.train = data.train.subset(torch.randperm(len(data.train), generator=gen)[:args.train_subset])
    data.test = data.test.subset(torch.randperm(len(data.test), generator=gen)[:2000])
    torch.manual_seed(0)
    if args.model == "small_vgg":
        model = Normalized(SmallVGG(10, 1, 16), (0.0,), (1.0,))
    else:
        model = create_model("small_cnn", 10, 1, width=16)
    params = {"mask_epochs": 3, "anneal_generator": args.anneal_generator, **parse_params(args.set, "--set")}
    atk = create("inputaware", **params)
    config = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.01, augment=False, seed=0)
    t0 = time.perf_counter()

    def report(epoch: int, m: torch.nn.Module) -> dict[str, float]:
        r = evaluate(m, data.test.x, data.test.y, atk.backdoor_test_set(data.test), device="cpu")
        print(f"epoch {epoch}: ACC {r['acc']:.2f} ASR {r['asr']:.2f} RA {r['ra']:.2f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return r

    atk.train_model(model, data, config, device="cpu", progress=False, on_epoch_end=report)
    last = atk.mask_history[-1] if atk.mask_history else {}
    print(f"mask density after the mask stage: {last.get('density', float('nan')):.4f} (target {atk.mask_density})")
    anatomy(atk, model, test_all.x[:3000], test_all.y[:3000], atk.target)
    if args.save:
        torch.save({"g": atk.generator.state_dict(), "m": atk.mask_net.state_dict(), "c": model.state_dict()},
                   args.save)


if __name__ == "__main__":
    main()
