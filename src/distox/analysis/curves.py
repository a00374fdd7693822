"""ACC and ASR per epoch during each defense, from the ``history.csv`` of every defense result
of a run (SPEC §6). Epoch 0 is the backdoored model (``defense.json`` "before").

Example:
    >>> rows = curve_rows({"d3": Path("runs/bn/defense/d3")})
    >>> fig = plot_curves(rows)
"""
from __future__ import annotations

from pathlib import Path

from ..runs import RunError, read_json


def curve_rows(dirs: dict[str, Path]) -> list[dict[str, float | str]]:
    """Rows ``{defense, epoch, acc, asr, ra}`` (epoch 0 = before the defense)."""
    from ..experiment import read_history

    rows: list[dict[str, float | str]] = []
    for name, d in dirs.items():
        hist_path = d / "history.csv"
        if not hist_path.is_file():
            raise RunError(f"{d} has no history.csv")
        hist = read_history(hist_path)
        if not any("acc" in r for r in hist):
            raise RunError(f"{hist_path} has no per-epoch ACC/ASR (the defense ran with --no-track)")
        before = read_json(d / "defense.json").get("before", {})
        if before:
            rows.append({"defense": name, "epoch": 0, "acc": before.get("acc"), "asr": before.get("asr"),
                         "ra": before.get("ra")})
        for r in hist:
            rows.append({"defense": name, "epoch": int(r["epoch"]), "acc": r.get("acc"), "asr": r.get("asr"),
                         "ra": r.get("ra")})
    return rows


def plot_curves(rows: list[dict[str, float | str]], title: str = "ACC and ASR during the defense"):
    """Figure: ACC (left) and ASR (right) against epoch, one line per defense."""
    from .common import pyplot

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.get_cmap("tab10")
    names = list(dict.fromkeys(str(r["defense"]) for r in rows))
    for i, name in enumerate(names):
        rs = [r for r in rows if r["defense"] == name]
        ep = [r["epoch"] for r in rs]
        a1.plot(ep, [r["acc"] for r in rs], "-o", ms=3, color=colors(i), label=name)
        a2.plot(ep, [r["asr"] for r in rs], "-o", ms=3, color=colors(i), label=name)
    from matplotlib.ticker import MaxNLocator

    for ax, what in ((a1, "ACC: clean test accuracy (%)"), (a2, "ASR: attack success rate (%)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("defense epoch (0 = backdoored model)")
        ax.set_ylabel(what)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a1.set_title("Clean accuracy")
    a2.set_title("Attack success rate")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
