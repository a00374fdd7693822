"""Tables from a bench directory, laid out like the paper's main table (SPEC §5).

Rows: the attacks (one per attack configuration) and ``Average``; columns: ``No defense`` ACC
and ASR, then each defense's ACC and ASR; a second table gives each defense's DER (SPEC §2,
shown in percent). Values are percent with two decimals; a cell not computed yet shows ``–``
and makes its column's Average ``–`` too (an average over some attacks only would mislead).
With several seeds, each value is the mean over the finished seeds. When the grid's profile
is ``paper``, the paper's numbers (:mod:`distox.bench.paper`) sit beside ours.

When attack cells have a clean reference (``clean_reference: true``), a *Clean model* column
comes first, and a third table gives each attack's floor, ``max(2, clean-model ASR + 2)``, and
each defended cell's verdict (``pass`` when its ASR is at most the floor;
:mod:`distox.bench.summary`). Last, a summary per (dataset / model) group: each column's ACC,
ASR, ACC drop vs no defense and DER as mean ± std over seeds, given separately for the grid's
*development* and *check* parts when the config marks some models or attacks ``part: check``.

Formats: ``markdown`` (default), ``csv``, ``latex``, ``json``.

Example:
    >>> print(render(build_report("runs/smoke"), "markdown"))
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from ..metrics import der
from .cache import Cache
from .config import PARTS, BenchConfig, BenchError
from .grid import Cell, expand
from .paper import paper_value
from .summary import FLOOR_MARGIN, FLOOR_MIN, SeedResults, Stat, Summary, asr_floor, summarize, verdict

FORMATS = ("markdown", "csv", "latex", "json")
FLOOR_RULE = f"max({FLOOR_MIN:g}, clean-model ASR + {FLOOR_MARGIN:g})"
PART_TITLES = {"dev": "development part", "check": "check part"}
#: Summary metrics (:mod:`distox.bench.summary`) and their headers.
SUMMARY_METRICS = (("acc", "ACC"), ("asr", "ASR"), ("acc_drop", "ACC drop"), ("der", "DER"))
AVERAGE = "Average"
NO_DEFENSE_LABEL = "No defense"
#: Pseudo-column of a clean reference model (attack cells run with ``clean_reference: true``):
#: its ACC and its ASR on each attack's own triggers, the floor an ASR can be judged against.
CLEAN = "clean"
#: Columns that are not defenses (no DER).
_NOT_DEFENSES = (CLEAN, "none")
DISPLAY = {CLEAN: "Clean model", "none": NO_DEFENSE_LABEL, "ft": "FT", "ft-sam": "FT-SAM", "sau": "SAU", "d3": "D3",
           "fp": "FP", "nad": "NAD", "nc": "NC", "anp": "ANP", "i-bau": "i-BAU",
           "badnets": "BadNets", "blended": "Blended", "wanet": "WaNet", "lf": "LF",
           "inputaware": "Input-aware", "sig": "SIG", "ssba": "SSBA"}


def display(label: str) -> str:
    """Paper-style name: ``badnets (poison_rate=0.01)`` → ``BadNets (poison_rate=0.01)``."""
    head, sep, rest = label.partition(" (")
    return DISPLAY.get(head, head) + sep + rest


@dataclass
class Entry:
    """One table cell: mean percent ACC/ASR (and DER) over finished seeds."""

    acc: float | None = None
    asr: float | None = None
    der: float | None = None
    seeds: int = 0
    planned: bool = True  # False: this attack/defense pair is not part of the grid
    seconds: float | None = None  # mean wall time of the cell (attack training or defense)
    cpu_seconds: float | None = None  # mean CPU time of the cell's worker (all threads)
    paper_acc: float | None = None
    paper_asr: float | None = None
    floor: float | None = None  # defense columns of a row with a clean-model ASR
    verdict: str | None = None  # "pass" / "fail" once ASR and floor are known


@dataclass
class Table:
    """One (dataset, model) group: ``entries[row][column]``; rows end with ``Average``."""

    group: str
    rows: list[str]
    columns: list[str]  # ["clean"], "none", then defense labels
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    parts: dict[str, str] = field(default_factory=dict)  # attack row -> "dev" / "check"
    floors: dict[str, float] = field(default_factory=dict)  # attack row -> ASR floor (known ones)

    @property
    def judged(self) -> bool:
        """Whether the rows have a clean reference (a floor and verdicts)."""
        return CLEAN in self.columns


@dataclass
class Report:
    name: str
    profile: str
    done: int
    total: int
    tables: list[Table]
    summaries: list[Summary] = field(default_factory=list)  # dev part first, then check

    @property
    def paper(self) -> bool:
        return self.profile == "paper"

    @property
    def judged(self) -> bool:
        return any(t.judged for t in self.tables)

    @property
    def parts(self) -> list[str]:
        """The grid parts present, in :data:`~distox.bench.config.PARTS` order."""
        return [p for p in PARTS if any(s.part == p for s in self.summaries)]


def _avg(values: list[float | None]) -> float | None:
    return mean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _cell_result(cell: Cell, records: dict[str, dict[str, Any] | None]) -> dict[str, float] | None:
    """A finished cell's metrics plus ``_seconds``/``_cpu``; a defense cell's also DER and
    ACC drop against its attack (None while it or its attack is unfinished)."""
    rec = records[cell.key]
    if rec is None:
        return None
    res = dict(rec["result"])
    res["_seconds"] = float(rec.get("seconds") or 0.0)
    res["_cpu"] = float(rec.get("cpu_seconds") or 0.0)
    if cell.kind == "defense":
        parent = records.get(cell.parent or "")
        if parent is None:
            return None
        res["der"] = der(parent["result"], res)  # percent; recomputed, whatever an old cell.json holds
        res["acc_drop"] = parent["result"]["acc"] - res["acc"]
    return res


def _judge(t: Table, row: str) -> None:
    """Set the row's floor and its defense entries' verdicts (rows with a clean-model ASR)."""
    clean = t.entries[row].get(CLEAN)
    if clean is None or clean.asr is None:
        return
    t.floors[row] = asr_floor(clean.asr)
    for col, e in t.entries[row].items():
        if col not in _NOT_DEFENSES and e.planned:
            e.floor = t.floors[row]
            e.verdict = None if e.asr is None else verdict(e.asr, e.floor)


def build_report(out_dir: str | os.PathLike, config: BenchConfig | None = None) -> Report:
    """Collect the finished cells of a grid stored in ``out_dir``.

    Without ``config`` the grid is the one last run into ``out_dir`` (its manifest); with a
    validated :class:`BenchConfig` it is that config's grid, so one directory shared by several
    configs (e.g. ``cpu.yaml`` and ``cpu-ablations.yaml``) reports each without rerunning it.
    """
    cache = Cache(out_dir)
    if config is None:
        cfg, grid = cache.read_manifest()
    else:
        cfg, grid = config.model_dump(mode="json"), expand(config)
    profile = str(cfg.get("profile", "custom"))
    records = {c.key: cache.load(c.key) for c in grid.cells}
    tables: dict[str, Table] = {}
    results: dict[str, SeedResults] = {}  # group -> (row, column) -> seed -> metrics
    planned: dict[str, dict[tuple[str, str], set[int]]] = {}  # group -> (row, column) -> seeds
    attack_of_row: dict[tuple[str, str], str] = {}
    method_of_col: dict[str, str] = {"none": "none"}
    for cell in grid.attacks + grid.defenses:  # clean cells reach the tables through their attacks
        t = tables.setdefault(cell.group, Table(cell.group, [], ["none"]))
        if cell.row not in t.rows:
            t.rows.append(cell.row)
            t.parts[cell.row] = cell.part
        if cell.column not in t.columns:
            t.columns.append(cell.column)
        columns = [cell.column]
        if cell.kind == "attack":
            attack_of_row[(cell.group, cell.row)] = cell.config["attack"]
            if cell.config.get("clean_reference"):
                columns.append(CLEAN)
                if CLEAN not in t.columns:
                    t.columns.insert(0, CLEAN)
        else:
            method_of_col[cell.column] = cell.config["defense"]["method"]
        for col in columns:
            planned.setdefault(cell.group, {}).setdefault((cell.row, col), set()).add(cell.seed)
        res = _cell_result(cell, records)
        if res is None:
            continue
        by_seed = results.setdefault(cell.group, {})
        if cell.kind == "attack" and "clean_acc" in res and "clean_asr" in res:
            by_seed.setdefault((cell.row, CLEAN), {})[cell.seed] = {
                "acc": res["clean_acc"], "asr": res["clean_asr"], "_seconds": 0.0, "_cpu": 0.0}
        by_seed.setdefault((cell.row, cell.column), {})[cell.seed] = res
    done = sum(r is not None for r in records.values())
    heads = [d.get("label") or d.get("name") for d in cfg.get("defenses", []) if isinstance(d, dict)]

    def col_order(col: str) -> int:
        head = col.partition(" (")[0]
        if col in _NOT_DEFENSES:
            return _NOT_DEFENSES.index(col) - len(_NOT_DEFENSES)
        return heads.index(head) if head in heads else len(heads)
    profile_paper = profile == "paper"
    summaries: dict[str, list[Summary]] = {p: [] for p in PARTS}
    for t in tables.values():
        t.columns.sort(key=col_order)  # config order (stable: grid order within an entry)
        g_results, g_planned = results.get(t.group, {}), planned.get(t.group, {})
        for row in t.rows:
            t.entries[row] = {}
            for col in t.columns:
                vals = list(g_results.get((row, col), {}).values())
                e = Entry(seeds=len(vals), planned=(row, col) in g_planned)
                if vals:
                    e.acc = mean(v["acc"] for v in vals)
                    e.asr = mean(v["asr"] for v in vals)
                    e.seconds = mean(v["_seconds"] for v in vals)
                    e.cpu_seconds = mean(v["_cpu"] for v in vals)
                    if col not in _NOT_DEFENSES:
                        e.der = mean(v["der"] for v in vals)
                if profile_paper:
                    atk, meth = attack_of_row.get((t.group, row), ""), method_of_col.get(col, col)
                    e.paper_acc, e.paper_asr = paper_value(atk, meth, "acc"), paper_value(atk, meth, "asr")
                t.entries[row][col] = e
            _judge(t, row)
        for part in PARTS:
            rows = [r for r in t.rows if t.parts[r] == part]
            if rows:
                summaries[part].append(summarize(part, t.group, rows, [c for c in t.columns if c != CLEAN],
                                                 set(_der_columns(t)), g_results, g_planned))
        avg: dict[str, Entry] = {}
        for col in t.columns:
            cells = [t.entries[r][col] for r in t.rows if t.entries[r][col].planned]
            e = Entry(acc=_avg([c.acc for c in cells]), asr=_avg([c.asr for c in cells]),
                      der=None if col in _NOT_DEFENSES else _avg([c.der for c in cells]),
                      seeds=min((c.seeds for c in cells), default=0), planned=bool(cells))
            if profile_paper:
                meth = method_of_col.get(col, col)
                e.paper_acc, e.paper_asr = paper_value("average", meth, "acc"), paper_value("average", meth, "asr")
            avg[col] = e
        t.rows.append(AVERAGE)
        t.entries[AVERAGE] = avg
    return Report(str(cfg.get("name", "bench")), profile, done, len(records), list(tables.values()),
                  [s for part in PARTS for s in summaries[part]])


# ---------------------------------------------------------------------------- rendering
def _f(v: float | None, planned: bool = True) -> str:
    """Two decimals; ``–`` for a cell not computed yet, empty for one not in the grid."""
    if not planned:
        return ""
    return "–" if v is None else f"{v:.2f}"


def _main_columns(report: Report, t: Table) -> list[tuple[str, str, str]]:
    """(column, metric, header) triples of the main table; paper columns where they exist."""
    out = []
    for col in t.columns:
        name = display(col)
        for metric in ("acc", "asr"):
            out.append((col, metric, f"{name} {metric.upper()}"))
            if report.paper and any(getattr(t.entries[r][col], f"paper_{metric}") is not None for r in t.rows):
                out.append((col, f"paper_{metric}", f"{name} {metric.upper()} (paper)"))
    return out


def _value(t: Table, row: str, col: str, metric: str) -> float | None:
    return getattr(t.entries[row][col], metric)


def _der_columns(t: Table) -> list[str]:
    return [c for c in t.columns if c not in _NOT_DEFENSES]


def render_markdown(report: Report) -> str:
    lines = [f"Grid `{report.name}` (profile {report.profile}): {report.done}/{report.total} cells done. "
             "ACC/ASR in %, DER in %."]
    for t in report.tables:
        cols = _main_columns(report, t)
        lines += ["", f"**{t.group}**", "", "| Attack | " + " | ".join(h for _, _, h in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for row in t.rows:
            name = f"**{AVERAGE}**" if row == AVERAGE else display(row)
            lines.append(f"| {name} | " + " | ".join(_f(_value(t, row, c, m), t.entries[row][c].planned) for c, m, _ in cols) + " |")
        ders = _der_columns(t)
        if ders:
            lines += ["", "| Attack | " + " | ".join(f"{display(c)} DER" for c in ders) + " |",
                      "|---|" + "---|" * len(ders)]
            for row in t.rows:
                name = f"**{AVERAGE}**" if row == AVERAGE else display(row)
                lines.append(f"| {name} | " + " | ".join(_f(_value(t, row, c, "der"), t.entries[row][c].planned) for c in ders) + " |")
        if t.judged and ders:
            lines += ["", f"Floor = {FLOOR_RULE}; verdict pass when the defended ASR ≤ floor.", "",
                      *_verdict_lines(t, len(report.parts) > 1)]
        lines += _time_lines(t, ders)
    return "\n".join(lines + _summary_lines(report)) + "\n"


def _time_lines(t: Table, ders: list[str]) -> list[str]:
    """Markdown table of each defense's wall seconds per attack row (mean over seeds), then per
    defense its mean over the rows it finished and its cost relative to FT over the rows both
    finished; the same for the workers' CPU seconds, which other load on the machine changes
    less: the cost table. Empty before any defense cell finished."""
    rows = [r for r in t.rows if r != AVERAGE]
    if not ders or all(t.entries[r][c].seconds is None for r in rows for c in ders):
        return []
    lines = ["", "Wall seconds per defense cell (the machine and the `--jobs` the grid ran with):", "",
             _md_row(["Attack", *(display(c) for c in ders)]), "|---" * (1 + len(ders)) + "|"]
    for r in rows:
        lines.append(_md_row([display(r), *("–" if t.entries[r][c].seconds is None else f"{t.entries[r][c].seconds:.1f}"
                                            for c in ders)]))
    for attr, label in (("seconds", ""), ("cpu_seconds", " (CPU s)")):
        spent = {c: {r: getattr(t.entries[r][c], attr) for r in rows if getattr(t.entries[r][c], attr)}
                 for c in ders}
        lines.append(_md_row([f"**Mean{label}**", *(f"{mean(spent[c].values()):.1f}" if spent[c] else "–"
                                                     for c in ders)]))
        if "ft" in ders:
            lines.append(_md_row([f"**× FT{label}**", *(_relative(spent[c], spent["ft"]) for c in ders)]))
    return lines


def _relative(spent: dict[str, float], ft: dict[str, float]) -> str:
    """Seconds over FT's, summed over the attack rows both finished (``–`` when none)."""
    both = [r for r in spent if r in ft]
    return f"{sum(spent[r] for r in both) / sum(ft[r] for r in both):.2f}" if both else "–"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _passed(t: Table, col: str) -> str:
    """``k/n``: the rows of ``col`` that pass of those planned (``–`` while one is unjudged)."""
    entries = [t.entries[r][col] for r in t.rows if r != AVERAGE and t.entries[r][col].planned]
    if not entries:
        return ""
    if any(e.verdict is None for e in entries):
        return "–"
    return f"{sum(e.verdict == 'pass' for e in entries)}/{len(entries)}"


def _verdict_lines(t: Table, parts: bool) -> list[str]:
    """Markdown table: per attack row its part (``parts``), floor and each defense's verdict;
    last, how many rows pass per defense."""
    ders = _der_columns(t)
    head = ["Attack", *(["Part"] if parts else []), "Floor", *(display(c) for c in ders)]
    lines = [_md_row(head), "|---" * len(head) + "|"]
    for row in t.rows:
        if row == AVERAGE:
            cells = ["**Passed**", *([""] if parts else []), "", *(_passed(t, c) for c in ders)]
        else:
            cells = [display(row), *([t.parts[row]] if parts else []), _f(t.floors.get(row)),
                     *(_verdict_text(t.entries[row][c]) for c in ders)]
        lines.append(_md_row(cells))
    return lines


def _verdict_text(e: Entry) -> str:
    return "" if not e.planned else e.verdict or "–"


def _pm(stat: Stat | None) -> str:
    """``mean ± std`` (two decimals; no ± with one seed); ``–`` while unknown."""
    if stat is None:
        return ""
    if stat.mean is None:
        return "–"
    return f"{stat.mean:.2f}" + ("" if stat.std is None else f" ± {stat.std:.2f}")


def _summary_lines(report: Report) -> list[str]:
    """Markdown summaries, one table per (part, group)."""
    if not report.summaries:
        return []
    multi = len(report.parts) > 1
    lines = ["", "Summary per dataset / model: mean ± std (sample, over seeds) of each seed's average over "
             "the attacks; ACC drop = No defense ACC − defense ACC (points)."]
    for summ in report.summaries:
        title = f"Summary, {PART_TITLES[summ.part]}" if multi else "Summary"
        rows = f"{len(summ.rows)} attack row" + ("s" if len(summ.rows) != 1 else "")
        lines += ["", f"**{title}: {summ.group}** ({rows})", "",
                  _md_row(["Defense", *(h for _, h in SUMMARY_METRICS)]), "|---" * (1 + len(SUMMARY_METRICS)) + "|"]
        lines += [_md_row([display(col), *(_pm(summ.stats[col].get(m)) for m, _ in SUMMARY_METRICS)])
                  for col in summ.columns]
    return lines


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, t in enumerate(report.tables):
        cols = _main_columns(report, t) + [(c, "der", f"{display(c)} DER") for c in _der_columns(t)]
        judged = _der_columns(t) if report.judged else []
        if i == 0:
            w.writerow(["group", "attack"] + [h for _, _, h in cols] + ["part"]
                       + (["floor"] + [f"{display(c)} verdict" for c in judged] if report.judged else []))
        for row in t.rows:
            w.writerow([t.group, display(row)] + [_csv_number(_value(t, row, c, m)) for c, m, _ in cols]
                       + [t.parts.get(row, "")]
                       + ([_csv_number(t.floors.get(row))] + [t.entries[row][c].verdict or "" for c in judged]
                          if report.judged else []))
    return buf.getvalue()


def _csv_number(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b)
    return s


def render_latex(report: Report) -> str:
    out = [f"% distox report: grid {_tex(report.name)}, {report.done}/{report.total} cells done; "
           "ACC/ASR/DER in percent"]
    for t in report.tables:
        cols = _main_columns(report, t)
        spans: list[tuple[str, int]] = []
        for col, _, _ in cols:
            if spans and spans[-1][0] == col:
                spans[-1] = (col, spans[-1][1] + 1)
            else:
                spans.append((col, 1))
        out += [f"% {_tex(t.group)}", r"\begin{tabular}{l" + "".join("|" + "c" * n for _, n in spans) + "}",
                r"\toprule",
                "Attack & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex(display(c))}}}" for c, n in spans)
                + r" \\",
                " & " + " & ".join(_tex(_latex_subheader(h, c)) for c, _, h in cols) + r" \\",
                r"\midrule"]
        for row in t.rows:
            if row == AVERAGE:
                out.append(r"\midrule")
            out.append(_tex(display(row)) + " & " + " & ".join(_f(_value(t, row, c, m), t.entries[row][c].planned) for c, m, _ in cols)
                       + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        ders = _der_columns(t)
        if ders:
            out += [r"\begin{tabular}{l" + "c" * len(ders) + "}", r"\toprule",
                    "DER & " + " & ".join(_tex(display(c)) for c in ders) + r" \\", r"\midrule"]
            for row in t.rows:
                if row == AVERAGE:
                    out.append(r"\midrule")
                out.append(_tex(display(row)) + " & " + " & ".join(_f(_value(t, row, c, "der"), t.entries[row][c].planned) for c in ders)
                           + r" \\")
            out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def _latex_subheader(h: str, col: str) -> str:
    return h[len(display(col)) + 1:]


def report_dict(report: Report) -> dict[str, Any]:
    """JSON-ready report: metrics rounded to two decimals (DER in percent)."""
    def r2(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    tables = []
    for t in report.tables:
        rows = []
        for row in t.rows:
            cells = {}
            for col in t.columns:
                e = t.entries[row][col]
                if not e.planned:
                    continue
                d: dict[str, Any] = {"acc": r2(e.acc), "asr": r2(e.asr), "seeds": e.seeds,
                                     "seconds": None if e.seconds is None else round(e.seconds, 1),
                                     "cpu_seconds": None if e.cpu_seconds is None else round(e.cpu_seconds, 1)}
                if col not in _NOT_DEFENSES:
                    d["der"] = r2(e.der)
                    if t.judged and row != AVERAGE:
                        d["floor"], d["verdict"] = r2(e.floor), e.verdict
                if report.paper:
                    d["paper_acc"], d["paper_asr"] = e.paper_acc, e.paper_asr
                cells[display(col)] = d
            rows.append({"attack": display(row), "label": row, "part": t.parts.get(row),
                         "floor": r2(t.floors.get(row)), "cells": cells})
        tables.append({"group": t.group, "columns": [display(c) for c in t.columns], "rows": rows})
    summaries = [{"part": summ.part, "group": summ.group, "attacks": [display(r) for r in summ.rows],
                  "columns": {display(col): {m: {"mean": r2(st.mean), "std": r2(st.std), "seeds": st.seeds}
                                             for m, st in summ.stats[col].items()} for col in summ.columns}}
                 for summ in report.summaries]
    return {"name": report.name, "profile": report.profile, "done": report.done, "total": report.total,
            "units": {"acc": "%", "asr": "%", "der": "%", "acc_drop": "points", "floor": "%",
                      "seconds": "s (wall)", "cpu_seconds": "s (CPU)"},
            "floor_rule": FLOOR_RULE + "; verdict pass when ASR <= floor",
            "tables": tables, "summary": summaries}


def render(report: Report, fmt: str = "markdown") -> str:
    """Render a :class:`Report` as ``markdown``, ``csv``, ``latex`` or ``json``."""
    if fmt == "markdown":
        return render_markdown(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "latex":
        return render_latex(report)
    if fmt == "json":
        return json.dumps(report_dict(report), indent=2) + "\n"
    raise BenchError(f"unknown report format '{fmt}'; valid: {', '.join(FORMATS)}")
