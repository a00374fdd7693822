"""Automatic ε and λ for D3 versus the fixed defaults, on a Fashion-MNIST BadNets run.

Trains one BadNets model (small CNN width 16, 4 epochs, seeded subsets of 10,000 train / 2,000
test Fashion-MNIST images) with :func:`distox.experiment.run_attack`, then purifies it with D3
on the same seeded retain set (``--ratio``, 2 % = 200 images by default, 10 epochs, batch 32:
sized for a shared 2-core CPU) in these configurations (``--configs``): 0 the reference
defaults (λ = 0.5, ε = 0.1), 1 the paper preset (λ = 10), 2 ε = "auto", 3 λ = "auto", 4 both
automatic (rules: :mod:`distox.defenses.d3_auto`; λ ladder ``--ladder``, default 0.5, 2, 10).
Prints a markdown table (ACC/ASR/RA after, DER, resolved ε and λ, seconds) and writes JSON.

Command (the one behind BENCHMARKS.md "Automatic ε and λ")::

    nice -n 10 .venv/bin/python benchmarks/auto_params.py --out /tmp/distox-bench-auto

(``--reuse runs/bench-attacks/badnets`` copies a finished attack run of the identical spec
instead of training it again; ``run_attack`` then returns its cached metrics.)
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from distox.experiment import AttackSpec, DefenseSpec, run_attack, run_defense

CONFIGS: dict[str, dict] = {
    "d3 reference (λ=0.5, ε=0.1)": {},
    "d3 paper (λ=10, ε=0.1)": {"preset": "paper"},
    "d3 ε=auto (λ=0.5)": {"eps": "auto"},
    "d3 λ=auto (ε=0.1)": {"lmd": "auto"},
    "d3 ε=auto, λ=auto": {"eps": "auto", "lmd": "auto"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/distox-bench-auto"))
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--attack-epochs", type=int, default=4)
    ap.add_argument("--attack-batch", type=int, default=32)
    ap.add_argument("--defense-epochs", type=int, default=10)
    ap.add_argument("--defense-batch", type=int, default=32)
    ap.add_argument("--ratio", type=float, default=0.02)
    ap.add_argument("--ladder", default="0.5,2,10", help="λ ladder of lmd='auto' (comma-separated)")
    ap.add_argument("--configs", default="0,1,2,4", help="indices into CONFIGS to run (default skips λ=auto alone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="a finished attack run with exactly this spec to copy instead of training it again")
    args = ap.parse_args()

    t0 = time.perf_counter()
    run = args.out / "badnets"
    spec = AttackSpec("badnets", dataset="fashion-mnist", model="small_cnn", model_kwargs={"width": args.width},
                      epochs=args.attack_epochs, batch_size=args.attack_batch, train_subset=args.train_subset,
                      test_subset=args.test_subset, augment=False, seed=args.seed)
    if args.reuse is not None and not (run / "metrics.json").exists():
        if AttackSpec.from_dict(json.loads((args.reuse / "spec.json").read_text())).identity() != spec.identity():
            raise SystemExit(f"--reuse {args.reuse}: its spec differs from this benchmark's")
        shutil.copytree(args.reuse, run, ignore=shutil.ignore_patterns("defense", "plots"))
    before = run_attack(spec, run, device=args.device, progress=False)
    attack_s = time.perf_counter() - t0
    rows = []
    ladder = [float(v) for v in args.ladder.split(",")]
    chosen = [int(v) for v in args.configs.split(",")]
    for i, (label, params) in enumerate(CONFIGS.items()):
        if i not in chosen:
            continue
        if params.get("lmd") == "auto":
            params = {**params, "auto": {"ladder": ladder}}
        out = run / "defense" / f"auto-bench-{i}"
        rec = run_defense(run, DefenseSpec("d3", ratio=args.ratio, epochs=args.defense_epochs, seed=args.seed,
                                           batch_size=args.defense_batch,
                                           params=params), out, force=True, device=args.device, progress=False,
                          track_epochs=False)
        cfg = rec["config"]
        auto = cfg.get("auto_resolved") or {}
        rows.append({"config": label, "eps": auto.get("eps", cfg["eps"]), "lmd": auto.get("lmd", cfg["lmd"]),
                     **{k: rec["after"][k] for k in ("acc", "asr", "ra")}, "der": rec["der"],
                     "seconds": rec["seconds"], "trials": auto.get("trials")})
    total = time.perf_counter() - t0
    lines = [f"BadNets before defense: ACC {before['acc']:.2f}  ASR {before['asr']:.2f}  RA {before['ra']:.2f} "
             f"(attack {attack_s:.0f}s)", "",
             "| D3 configuration | ε used | λ used | ACC | ASR | RA | DER | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['eps']:.4g} | {r['lmd']:g} | {r['acc']:.2f} | {r['asr']:.2f} | "
                     f"{r['ra']:.2f} | {r['der']:.2f} | {r['seconds']:.1f} |")
    lines.append(f"\ntotal wall time {total:.0f}s")
    print("\n".join(lines))
    for r in rows:
        if r["trials"]:
            print(f"{r['config']}: λ trials " + ", ".join(
                f"λ={t['lmd']:g}: held-out acc {t['acc']:.1f}%, distance {t['distance']:.3g}" for t in r["trials"]))
    (args.out / "auto_params.json").write_text(json.dumps({"before": before, "rows": rows, "seconds": total,
                                                           "args": {k: str(v) for k, v in vars(args).items()}},
                                                          indent=2))


if __name__ == "__main__":
    main()
