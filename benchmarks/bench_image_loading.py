"""Time the on-disk image loaders on synthetic files in the real formats.

Writes ``--n`` GTSRB-style .ppm images (random sizes 25..80 px, resized to 32×32 on load) and
``--n`` Tiny-ImageNet-style 64×64 JPEGs into a temporary folder, then times
``load_dataset("gtsrb")`` / ``load_dataset("tiny-imagenet")`` with the thread pool and with one
worker. Prints wall time and the process's CPU time (all threads), which is less sensitive to
other jobs on a shared machine. Usage::

    python benchmarks/bench_image_loading.py --n 10000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import distox.data.folder as folder_mod
from distox.data import load_dataset


def write_gtsrb(root: Path, n: int, rng: np.random.Generator) -> None:
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    per_class = max(1, n // 43)
    for cls in range(43):
        d = root / "GTSRB" / "Train" / f"{cls:05d}"
        d.mkdir(parents=True)
        rows = [header]
        for j in range(per_class):
            w, h = (int(v) for v in rng.integers(25, 81, size=2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{j:05d}.ppm")
            rows.append(f"{j:05d}.ppm;{w};{h};5;5;{w - 5};{h - 5};{cls}")
        (d / f"GT-{cls:05d}.csv").write_text("\n".join(rows) + "\n")
    t = root / "GTSRB" / "Test"
    t.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(t / "00000.ppm")
    (t / "GT-final_test.csv").write_text(f"{header}\n00000.ppm;32;32;5;5;27;27;0\n")


def write_tiny(root: Path, n: int, rng: np.random.Generator) -> None:
    base = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    per_class = max(1, n // 200)
    for wnid in wnids:
        d = base / "train" / wnid / "images"
        d.mkdir(parents=True)
        for j in range(per_class):
            img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(d / f"{wnid}_{j}.JPEG", quality=90)
    (base / "val" / "images").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / "val" / "images" / "val_0.JPEG")
    (base / "val" / "val_annotations.txt").write_text(f"val_0.JPEG\t{wnids[0]}\t0\t0\t63\t63\n")


def timed(name: str, root: Path) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds over all threads, images loaded)."""
    t0, c0 = time.perf_counter(), time.process_time()
    bundle = load_dataset(name, data_root=root, progress=False)
    return time.perf_counter() - t0, time.process_time() - c0, len(bundle.train) + len(bundle.test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10000, help="images per dataset (default 10000)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_gtsrb(root, args.n, rng)
        write_tiny(root, args.n, rng)
        default_workers = folder_mod._workers()
        for name in ("gtsrb", "tiny-imagenet"):
            timed(name, root)  # warm the OS file cache
            results = {}
            for label, workers in ((f"{default_workers} threads", default_workers), ("1 thread", 1)):
                folder_mod._workers = lambda w=workers: w  # type: ignore[assignment]
                results[label] = timed(name, root)
            folder_mod._workers = lambda w=default_workers: w  # type: ignore[assignment]
            for label, (secs, cpu, count) in results.items():
                print(f"{name:14s} {label:10s} {count:6d} images  wall {secs:6.2f} s "
                      f"({count / secs:5.0f} img/s)  CPU {cpu:6.2f} s ({1e6 * cpu / count:4.0f} us/img)")


if __name__ == "__main__":
    main()
