"""Candidate defense settings on a set of attack runs, with per-epoch curves (the D3-default study).

    python benchmarks/d3_study.py RUN_DIR [RUN_DIR ...] --candidate NAME=KEY:VALUE,KEY:VALUE ...
        [--count 3000] [--epochs 12] [--batch-size 32] [--seed 0] [--out study.jsonl] [--final-only] [--table]
        [--then LABEL=KEY:VALUE,...] [--only LABEL ...] [--as NEW=OLD,OLD ...]
    python benchmarks/d3_study.py RUN_DIR --sweep 10 20 40 [--ratio 0.05 | --count N] [--batch-size 32]
        [--seed 0] [--param KEY=VALUE ...]

A candidate is a label and a comma-separated list of the defense's hyper-parameters
(``method:ft`` picks another defense; default ``d3``), e.g.
``paper=preset:paper,augment:false`` or ``heldout=preset:paper,select:heldout``.
Every (run, candidate) result is appended to ``--out`` as one JSON line with the per-epoch
history (test ACC/ASR/RA, held-out accuracy, distance), the selection made and the run's
clean-model floor; a rerun skips the lines already there (same run, however its path is spelled,
and label; with a warning when that line ran with other options). ``--table [FILES]`` prints, per run and
candidate, ACC, the ACC change, ASR, the floor max(2, clean-model ASR + 2), the verdict and DER,
then per part (``--check`` names the check part's runs) and candidate the cells passing, mean and
worst ACC change, mean ASR and DER, and per architecture the mean DER (mean ACC change).
The defense never sees test data: the per-epoch test numbers are for the report only.
``--then`` chains a second defense after every candidate (same retain set and seed), e.g.
plain fine-tuning after D3: the line's candidate is ``LABEL+THEN``, its ``after`` and
``history`` the second stage's, ``first`` the first stage's ACC/ASR. ``--only LABEL ...``
restricts ``--table`` to those candidates (e.g. to compare two across files that hold others);
``--as NEW=OLD,OLD`` tables the lines of candidates OLD under the label NEW (one candidate that
rounds named differently), before ``--only``; RUN_DIR arguments given with ``--table`` restrict it
to those runs. The per-part summary also gives both parts together (part ``all``).

``--sweep EPOCHS ...`` (one RUN_DIR): D3 with the paper preset and no augmentation (``--param
KEY=VALUE`` overrides a hyper-parameter, e.g. ``augment=true``, ``lmd=0.5``) after each epoch
budget, printed as a table of ACC / ASR / RA and seconds after the backdoored model's row;
nothing is written. ``--ratio R`` takes the retain set as that fraction of the clean training
data instead of ``--count`` images (a grid cell's 5 %: ``--ratio 0.05``).
One torch thread, CPU.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

import torch

from distox.bench.summary import asr_floor
from distox.cli.app import parse_params
from distox.defenses import create
from distox.defenses.d3 import preset_now
from distox.experiment import load_run
from distox.metrics import Evaluator, der, evaluate


def parse_candidate(text: str) -> tuple[str, dict[str, Any]]:
    """``label=key:value,key:value`` → (label, params); values are JSON where they parse."""
    label, _, rest = text.partition("=")
    items = [kv.replace(":", "=", 1) for kv in re.split(r",(?![^\[{]*[\]}])", rest) if kv]  # keeps [a,b] and {..} whole
    return label, parse_params(items)


def done_lines(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every line of ``path`` by (run directory, resolved; candidate label): ``runs/study/x`` and
    ``/abs/.../runs/study/x`` are the same run, so a rerun under another spelling skips it too."""
    if not path.exists():
        return {}
    return {(str(Path(r["run"]).resolve()), r["candidate"]): r
            for r in map(json.loads, path.read_text().splitlines()) if r}


def recorded_params(line: dict[str, Any]) -> dict[str, Any] | None:
    """A line's options as this code spells them: D3's ``default`` of an earlier revision under the preset that runs
    it now (:func:`distox.defenses.d3.preset_now`; whether the model has BatchNorm is read from the line's resolved
    BatchNorm rule where it recorded one; a line without ``revision`` predates them all)."""
    params = line.get("params")
    if not isinstance(params, dict) or line.get("method", "d3") != "d3" or "preset" not in params:
        return params
    batchnorm = ((line.get("resolved") or {}).get("norm_rule_resolved") or {}).get("batchnorm")
    now = preset_now(params["preset"], line.get("revision"), batchnorm)
    return params if now == params["preset"] else {**params, "preset": now}


def differs(line: dict[str, Any], params: dict[str, Any], args: argparse.Namespace) -> str | None:
    """What a done line ran with that this invocation would not (its options, or its retain size
    under ``--count``), or None: a label reused with other settings is skipped, but not silently."""
    _, opts, _ = defense_of(params, args)
    recorded = recorded_params(line)
    if json.loads(json.dumps(opts)) != recorded:
        return f"options {recorded} (now {opts})"
    if not args.ratio and line.get("count") not in (None, args.count):
        return f"{line['count']} retain images (now {args.count})"
    return None


def floor_of(metrics: dict[str, float]) -> float | None:
    """The ASR bar of ``distox report`` (None without a clean reference)."""
    return None if "clean_asr" not in metrics else asr_floor(metrics["clean_asr"])


def defense_of(params: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any], Any]:
    """(method, options, defense) of a candidate's parameters at the study's budget and seed."""
    params = dict(params)
    method = params.pop("method", "d3")
    opts = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, **params}
    opts = {k: v for k, v in opts.items() if v is not None}  # `epochs:null`: the defense's own (and its rules)
    return method, opts, create(method, **opts)


def line_label(label: str, args: argparse.Namespace) -> str:
    """The candidate a result line is filed under: ``LABEL``, or ``LABEL+THEN`` with ``--then``."""
    return label if args.then is None else f"{label}+{args.then[0]}"


def retain_of(run: Any, args: argparse.Namespace) -> Any:
    """The seeded retain set: ``--ratio`` of the clean training data when given, else ``--count`` images."""
    return run.retain(ratio=args.ratio, seed=args.seed) if args.ratio else run.retain(count=args.count, seed=args.seed)


def sweep(run_dir: Path, args: argparse.Namespace) -> None:
    """``--sweep``: D3 (paper preset, no augmentation, ``--param`` overrides) after each epoch budget."""
    run = load_run(run_dir)
    backdoor, retain = run.backdoor_test_set(), retain_of(run, args)
    before = run.evaluate()
    print("| D3 epochs | ACC | ASR | RA | seconds |\n|---|---|---|---|---|")
    print(f"| backdoored ({len(retain)} retain images) | {before['acc']:.2f} | {before['asr']:.2f} | {before['ra']:.2f} | – |")
    for epochs in args.sweep:
        t0 = time.perf_counter()
        _, _, d3 = defense_of({"preset": "paper", "augment": False, **parse_params(args.param), "epochs": epochs}, args)
        model = d3(run.model, retain, device="cpu", progress=False).model
        m = evaluate(model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
        print(f"| {epochs} | {m['acc']:.2f} | {m['asr']:.2f} | {m['ra']:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)


def run_one(run_dir: Path, label: str, params: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    run = load_run(run_dir)
    backdoor = run.backdoor_test_set()
    retain = retain_of(run, args)
    before = evaluate(run.model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
    method, opts, defense = defense_of(params, args)
    t0 = time.perf_counter()
    evaluator = None if args.final_only else Evaluator(run.data.test.x, run.data.test.y, backdoor, device="cpu")
    result = defense(run.model, retain, evaluator=evaluator, device="cpu", progress=False)
    chained = {}
    if args.then is not None:  # a second defense on the first one's model
        then_params = args.then[1]
        chained = {"first": evaluate(result.model, run.data.test.x, run.data.test.y, backdoor, device="cpu")}
        then_method, then_opts, then_defense = defense_of(then_params, args)
        result = then_defense(result.model, retain, evaluator=evaluator, device="cpu", progress=False)
        label, chained["then"] = line_label(label, args), {"method": then_method, **then_opts}
    seconds = time.perf_counter() - t0
    after = evaluate(result.model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"run": str(run_dir), "candidate": label, "params": opts, "method": method,
            "revision": type(defense).revision, "count": len(retain), "before": before,
            "after": after, "floor": floor_of(metrics), "clean_asr": metrics.get("clean_asr"),
            "selection": result.config.get("selection_resolved"), "seconds": round(seconds, 2),
            "resolved": {k: v for k, v in result.config.items() if k.endswith("_resolved") and k != "selection_resolved"},
            "history": result.history, **chained}


def read_rows(paths: list[Path], only: set[str] | None = None,
              renamed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The result lines of ``paths``, candidates relabelled by ``renamed`` (old → new label), then
    only those in ``only`` when given."""
    rows = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line]
    for r in rows:
        r["candidate"] = (renamed or {}).get(r["candidate"], r["candidate"])
    return [r for r in rows if only is None or r["candidate"] in only]


def parse_renames(items: list[str]) -> dict[str, str]:
    """``["new=old1,old2"]`` → ``{"old1": "new", "old2": "new"}``."""
    out: dict[str, str] = {}
    for item in items:
        new, _, olds = item.partition("=")
        out.update({old: new for old in olds.split(",") if old})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """One line per (run, candidate): ACC, change, ASR, floor, verdict, DER, chosen epoch, seconds."""
    out = ["| run | candidate | retain | ACC before | ACC | change | ASR | floor | verdict | DER | epoch | s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["run"], r["candidate"], r.get("count", 0))):
        b, a, fl = r["before"], r["after"], r["floor"]
        verdict = "–" if fl is None else ("pass" if a["asr"] <= fl else "FAIL")
        sel = (r.get("selection") or {}).get("chosen_epoch", "last")
        out.append(f"| {Path(r['run']).name} | {r['candidate']} | {r.get('count', '–')} | {b['acc']:.2f} | {a['acc']:.2f} | "
                   f"{a['acc'] - b['acc']:+.2f} | {a['asr']:.2f} | {'–' if fl is None else f'{fl:.2f}'} | "
                   f"{verdict} | {der(b, a):.2f} | {sel} | {r['seconds']:.0f} |")
    return "\n".join(out)


def architecture(run: str) -> str:
    """The model name of an attack run (from its attack.json)."""
    spec = json.loads((Path(run) / "attack.json").read_text())["spec"]
    return spec["model"]


def by_architecture(rows: list[dict[str, Any]]) -> str:
    """Mean DER (and ACC change) per model architecture and candidate: the issue's
    "higher average DER on every architecture" bar. Rows of different retain sizes are never
    averaged together: with more than one size, each candidate gets a row per size,
    ``candidate (N)``."""
    arch_of = {run: architecture(run) for run in {r["run"] for r in rows}}
    archs = sorted(set(arch_of.values()))
    sizes = sorted({r.get("count", 0) for r in rows})
    keys = sorted({(r["candidate"], r.get("count", 0)) for r in rows})
    out = ["| candidate | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
    for cand, count in keys:
        cells = []
        for arch in archs:
            sel = [r for r in rows if r["candidate"] == cand and r.get("count", 0) == count and arch_of[r["run"]] == arch]
            cells.append("–" if not sel else
                         f"{mean(der(r['before'], r['after']) for r in sel):.2f} "
                         f"({mean(r['after']['acc'] - r['before']['acc'] for r in sel):+.2f})")
        label = cand if len(sizes) == 1 else f"{cand} ({count or '–'})"
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def summary(rows: list[dict[str, Any]], check: set[str]) -> str:
    """Per part (dev / check) and candidate: cells passing the floor, mean and worst ACC change,
    mean ASR and DER, total seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        part = "check" if Path(r["run"]).name in check else "dev"
        groups.setdefault((part, r["candidate"], r.get("count", 0)), []).append(r)
        groups.setdefault(("all", r["candidate"], r.get("count", 0)), []).append(r)
    out = ["| part | candidate | retain | cells | pass | mean ACC change | worst ACC change | mean ASR | mean DER | s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for (part, cand, count), rows in sorted(groups.items()):
        changes = [r["after"]["acc"] - r["before"]["acc"] for r in rows]
        passed = sum(r["floor"] is not None and r["after"]["asr"] <= r["floor"] for r in rows)
        out.append(f"| {part} | {cand} | {count or '–'} | {len(rows)} | {passed} | {mean(changes):+.2f} | {min(changes):+.2f} | "
                   f"{mean(r['after']['asr'] for r in rows):.2f} | "
                   f"{mean(der(r['before'], r['after']) for r in rows):.2f} | "
                   f"{sum(r['seconds'] for r in rows):.0f} |")
    return "\n".join(out)


def split_table_args(runs: list[Path], table: list[Path]) -> tuple[list[Path], list[Path]]:
    """``--table``'s arguments split into result files and run directories (a directory given after the files,
    which ``--table``'s ``nargs`` also takes, restricts the table as one given before ``--table`` does)."""
    return runs + [p for p in table if p.is_dir()], [p for p in table if not p.is_dir()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--candidate", action="append", default=[], metavar="LABEL=KEY:VALUE,...")
    ap.add_argument("--count", type=int, default=3000, help="Retain images (seeded from the clean training data).")
    ap.add_argument("--ratio", type=float, help="Retain set as this fraction of the clean training data (instead of --count).")
    ap.add_argument("--sweep", type=int, nargs="+", metavar="EPOCHS",
                    help="One RUN_DIR: D3 (paper preset, no augmentation) after each of these epoch budgets, as a table.")
    ap.add_argument("--param", nargs="*", default=[], metavar="KEY=VALUE", help="With --sweep: override a D3 hyper-parameter.")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("d3_study.jsonl"))
    ap.add_argument("--final-only", action="store_true",
                    help="Evaluate on the test set only after the defense (no per-epoch test curves; faster).")
    ap.add_argument("--table", nargs="*", type=Path, metavar="JSONL",
                    help="Print the per-run table and the per-part summary of these result files "
                         "(default: --out) and exit.")
    ap.add_argument("--then", type=parse_candidate, metavar="LABEL=KEY:VALUE,...",
                    help="A second defense applied after every candidate, on its purified model.")
    ap.add_argument("--check", nargs="*", default=[], metavar="RUN_NAME",
                    help="Run directory names that form the check part of the summary (the rest: dev).")
    ap.add_argument("--only", nargs="*", metavar="LABEL",
                    help="With --table: only these candidates (the labels of the result lines).")
    ap.add_argument("--as", dest="renames", action="extend", nargs="+", default=[], metavar="NEW=OLD,OLD",
                    help="With --table: table the lines of candidates OLD under the label NEW.")
    args = ap.parse_args()
    if args.table:  # run directories written after --table's files: its nargs took them too
        args.runs, args.table = split_table_args(args.runs, args.table)
    if args.table is not None:
        rows = read_rows(args.table or [args.out], None if args.only is None else set(args.only),
                         parse_renames(args.renames))
        if args.runs:
            wanted = set(args.runs)
            missing = wanted - {Path(r["run"]) for r in rows}
            if missing:
                ap.error(f"no result lines for run(s) {', '.join(sorted(map(str, missing)))}")
            rows = [r for r in rows if Path(r["run"]) in wanted]
        print(table(rows) + "\n\n" + summary(rows, set(args.check)) + "\n\n" + by_architecture(rows))
        return
    torch.set_num_threads(1)
    if args.sweep:
        if len(args.runs) != 1:
            ap.error("--sweep takes one RUN_DIR")
        sweep(args.runs[0], args)
        return
    done = done_lines(args.out)
    for run_dir in args.runs:
        for text in args.candidate:
            label, params = parse_candidate(text)
            line = done.get((str(run_dir.resolve()), line_label(label, args)))
            if line is not None:
                if (why := differs(line, params, args)) is not None:
                    print(f"warning: {run_dir.name} {line['candidate']}: skipped, {args.out} already holds a line under "
                          f"this label that ran with {why}; use a new label or another --out", file=sys.stderr)
                continue
            record = run_one(run_dir, label, params, args)
            with args.out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            a = record["after"]
            print(f"{run_dir.name} {record['candidate']}: ACC {a['acc']:.2f} ASR {a['asr']:.2f} floor {record['floor']} "
                  f"({record['seconds']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
