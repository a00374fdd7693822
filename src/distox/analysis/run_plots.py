"""The paper's analyses (SPEC §6) for one attack run and its defense results: each writes a PNG
and the numbers behind it as a CSV beside it (same name, ``.csv``).

Kinds:
- ``path``: clean and backdoor loss along θ_init + t(θ_defended − θ_init), t ∈ [0, 2], one
  curve pair per defense result (:mod:`.path`);
- ``weights``: histogram of θ_defended − θ_init of one layer, FT vs D3 (:mod:`.weights`);
- ``tsne``: penultimate features of clean and poisoned test images, before and after (:mod:`.tsne`);
- ``curves``: ACC/ASR per defense epoch from each ``history.csv`` (:mod:`.curves`).

Example:
    >>> png, csv = plot_run("path", "runs/badnets")        # runs/badnets/plots/path.png + .csv
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DistoxError
from ..progress import progress_bar
from ..utils import resolve_device
from .common import defense_dirs, load_defended, save_figure, subsample, write_csv

log = logging.getLogger(__name__)

KINDS = ("path", "weights", "tsne", "curves")
#: Defense results ``weights`` shows when none are named: the paper's FT-versus-D3 comparison.
WEIGHTS_DEFAULT = ("ft", "d3")


def plot_run(kind: str, run_dir: str | Path, out: str | Path | None = None, *,
             defenses: Sequence[str] | None = None, layer: str = "auto", points: int = 1000,
             steps: int = 21, t_max: float = 2.0, max_eval: int | None = 2000, seed: int = 0,
             device: str | torch.device = "auto", progress: bool = False) -> tuple[Path, Path]:
    """Draw analysis ``kind`` for the run in ``run_dir``; returns (png, csv) paths.

    Args:
        kind: ``path``, ``weights``, ``tsne`` or ``curves``.
        run_dir: an attack run directory with results under ``defense/*``.
        out: PNG path (default ``RUN_DIR/plots/KIND.png``); the CSV goes beside it.
        defenses: defense result names to include (default: all; ``weights``: ft and d3 when
            present, else all).
        layer: ``weights``: module name / glob / ``"auto"`` (final classifier).
        points: ``tsne``: at most this many points (half clean, half poisoned; 1000).
        steps, t_max: ``path``: number of t values in [0, t_max] (21, 2.0).
        max_eval: ``path``: seeded subsample of at most this many clean and poisoned test images
            (2000; None = all).
        seed: seed of every subsample and of t-SNE (0).
        device: evaluation device (``"auto"``: CUDA when available).
        progress: progress bars (``path``: per defense over t; ``tsne``: over the models).

    ``weights`` without ``defenses`` compares FT and D3 when either is present and says, as a
    warning, which other results it left out; every plot names unfinished results it skipped.
    """
    if kind not in KINDS:
        raise DistoxError(f"unknown plot kind '{kind}'; choose one of {', '.join(KINDS)}")
    run_dir = Path(run_dir)
    png = Path(out) if out is not None else run_dir / "plots" / f"{kind}.png"
    if png.suffix.lower() != ".png":
        raise DistoxError(f"--out must be a .png file; got {png}")
    csv = png.with_suffix(".csv")
    if kind == "curves":
        from .curves import curve_rows, plot_curves

        rows = curve_rows(defense_dirs(run_dir, defenses))
        fig = plot_curves(rows, f"ACC and ASR during the defense — {run_dir.name}")
        write_csv(csv, rows)
        return save_figure(fig, png), csv

    from ..experiment import load_run

    device = resolve_device(device)
    dirs = defense_dirs(run_dir, defenses)
    run = load_run(run_dir, device="cpu")
    name = f"{run.record.get('attack', {}).get('name', run.spec.attack)} on {run.spec.dataset}, {run.spec.model}"
    if kind == "path":
        from .path import loss_along_path, plot_path

        test = run.data.test.subset(subsample(len(run.data.test), max_eval, seed))
        bd = run.backdoor_test_set()
        keep = subsample(len(bd), max_eval, seed)
        from ..metrics import BackdoorTestSet

        bd = BackdoorTestSet(bd.x[keep], bd.target[keep], bd.true[keep])
        ts = np.linspace(0.0, float(t_max), int(steps))
        curves, rows = {}, []
        for dname, d in dirs.items():
            curves[dname] = loss_along_path(run.model, load_defended(run, d), test, bd, ts, device=device,
                                            progress=progress, desc=f"path {dname}")
            rows += [{"defense": dname, **r} for r in curves[dname]]
        fig = plot_path(curves, f"Loss along θ_init + t(θ_defended − θ_init) — {name}")
    elif kind == "weights":
        from .weights import histogram_rows, plot_weight_hist, weight_differences

        if defenses is None:
            preferred = {k: dirs[k] for k in WEIGHTS_DEFAULT if k in dirs}
            left = [k for k in dirs if k not in preferred]
            if preferred and left:
                log.warning("plot weights compares %s by default; left out %s (pass --defense NAME, "
                            "repeatable, to choose the results shown)", " and ".join(preferred), ", ".join(left))
            dirs = preferred or dirs
        example = run.data.test.x[:1]
        diffs, names = {}, []
        for dname, d in dirs.items():
            diffs[dname], names = weight_differences(run.model, load_defended(run, d), layer, example)
        shown = ", ".join(n.removesuffix(".weight") for n in names)
        _, rows = histogram_rows(diffs)
        fig = plot_weight_hist(diffs, shown)
    else:  # tsne
        from .tsne import embed, penultimate_features, plot_tsne

        half = max(1, int(points) // 2)
        test = run.data.test
        bd = run.backdoor_test_set()
        ci = subsample(len(test), half, seed)
        bi = subsample(len(bd), int(points) - len(ci), seed + 1)
        x = torch.cat([test.x[ci], bd.x[bi]])
        label = torch.cat([test.y[ci], bd.true[bi]]).numpy()
        poisoned = np.r_[np.zeros(len(ci), bool), np.ones(len(bi), bool)]
        models: dict[str, Any] = {"before (backdoored)": run.model}
        models.update({f"after {dname}": load_defended(run, d) for dname, d in dirs.items()})
        panels, rows = {}, []
        for mname, m in progress_bar(list(models.items()), desc="tsne", unit="model", enabled=progress):
            xy = embed(penultimate_features(m, x, device=device).numpy(), seed=seed)
            panels[mname] = {"xy": xy, "label": label, "poisoned": poisoned}
            rows += [{"model": mname, "kind": "poisoned" if p else "clean", "label": int(lab),
                      "x": float(a), "y": float(b)} for (a, b), lab, p in zip(xy, label, poisoned)]
        fig = plot_tsne(panels, run.data.num_classes, f"t-SNE of penultimate features — {name}")
    write_csv(csv, rows)
    return save_figure(fig, png), csv
