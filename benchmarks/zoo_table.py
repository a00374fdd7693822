"""One line per attack cell of a (possibly partial) zoo run, and each defense's tally.

    python benchmarks/zoo_table.py runs/zoo

Reads every finished ``cells/*/cell.json`` of a ``distox bench zoo`` directory (``distox report``
needs the grid's full rows for its averages; this works on whatever has finished) and prints
markdown: per (model, attack, seed) the attacked model's ACC / ASR, its clean reference's, the
floor max(2, clean ASR + 2) and, per defense, ACC change / ASR with ✓ when ASR ≤ floor; then
per defense the cells, passes, mean and worst ACC change and mean ASR, over all its finished
cells and over the cells where FT-SAM and the three D3 presets all finished (a paired view).
"""
from __future__ import annotations

import collections
import json
import statistics
import sys
from pathlib import Path

COLUMNS = ["ft-sam", "sau", "d3-reference", "d3-paper", "d3-default", "d3-default@1000", "d3-default@500"]
PAIRED = ["ft-sam", "d3-reference", "d3-paper", "d3-default"]


def _model(group: str) -> str:
    name = group.split(" / ", 1)[1]
    return name.split(" {")[0] + (" w/8" if '"width": 0.125' in name else "")


def collect(root: Path) -> dict[tuple[str, str, int], dict[str, tuple[float, ...]]]:
    """{(model, attack row, seed): {"_": (ACC, ASR, clean ACC, clean ASR), column: (ACC, ASR)}}."""
    cells = [json.loads(p.read_text()) for p in sorted((root / "cells").glob("*/cell.json"))]
    attacks = {c["key"]: c for c in cells if c["kind"] == "attack"}
    table: dict[tuple[str, str, int], dict[str, tuple[float, ...]]] = collections.defaultdict(dict)
    for a in attacks.values():
        r = a["result"]
        table[(_model(a["group"]), a["row"], a["seed"])]["_"] = (r["acc"], r["asr"], r["clean_acc"], r["clean_asr"])
    for c in cells:
        if c["kind"] != "defense" or c["parent"] not in attacks:
            continue
        a, count = attacks[c["parent"]], c["config"]["defense"].get("count")
        column = c["column"] if count == 3000 else f"d3-default@{count}"
        table[(_model(a["group"]), a["row"], a["seed"])][column] = (c["result"]["acc"], c["result"]["asr"])
    return table


def render(table: dict[tuple[str, str, int], dict[str, tuple[float, ...]]]) -> str:
    lines = ["| model | attack | seed | ACC / ASR | clean ACC / ASR | floor | " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * (6 + len(COLUMNS))]
    tally: dict[str, list[tuple[tuple, float, float, bool]]] = collections.defaultdict(list)
    for key in sorted(table):
        row = table[key]
        acc, asr, clean_acc, clean_asr = row["_"]
        floor = max(2.0, clean_asr + 2)
        out = []
        for col in COLUMNS:
            if col not in row:
                out.append("–")
                continue
            a, s = row[col]
            tally[col].append((key, a - acc, s, s <= floor))
            out.append(f"{a - acc:+.2f} / {s:.2f} {'✓' if s <= floor else '✗'}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {acc:.2f} / {asr:.2f} | {clean_acc:.2f} / {clean_asr:.2f} | "
                     f"{floor:.2f} | " + " | ".join(out) + " |")
    paired = {k for k in table if all(c in table[k] for c in PAIRED)}

    def summary(title: str, cols: list[str], keep) -> None:
        lines.extend(["", title, "", "| defense | cells | pass | mean ACC change | worst ACC change | mean ASR |",
                      "|---|---|---|---|---|---|"])
        for col in cols:
            v = [t for t in tally[col] if keep(t[0])]
            if v:
                lines.append(f"| {col} | {len(v)} | {sum(t[3] for t in v)} | {statistics.mean(t[1] for t in v):+.2f} | "
                             f"{min(t[1] for t in v):+.2f} | {statistics.mean(t[2] for t in v):.2f} |")

    summary("Every finished cell:", COLUMNS, lambda k: True)
    summary(f"Paired: the {len(paired)} attack cells where {', '.join(PAIRED)} all finished:", PAIRED,
            lambda k: k in paired)
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(render(collect(Path(sys.argv[1]))))


if __name__ == "__main__":
    main()
