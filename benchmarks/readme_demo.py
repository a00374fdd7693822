"""The README's demo table, regenerated from the current code.

    python benchmarks/readme_demo.py            # print the README block (runs the demo twice)
    python benchmarks/readme_demo.py --write    # rewrite that block of README.md (make readme-demo)
    python benchmarks/readme_demo.py --check    # exit 1 when README.md's block is stale
    python benchmarks/readme_demo.py --record   # only record this CPU vendor's table (below)

The block sits between the ``<!-- demo:begin -->`` and ``<!-- demo:end -->`` markers of
README.md: the table ``distox demo`` prints (default D3 preset, seed 0) and one sentence with
the paper preset's D3 row (``distox demo --preset paper``). The demo runs on one torch thread
(:class:`distox.demo.DemoConfig`), so the numbers are the same on any number of cores; only
the seconds column depends on the machine, and ``--check`` (like ``tests/test_demo.py``, which
checks the table) ignores it.

Float kernels take other code paths on CPUs of another vendor, and a whole demo (attack training,
then the defenses) turns those last-bit differences into other numbers: an AMD EPYC prints
another table than an Intel Xeon. ``benchmarks/demo_tables.json`` holds the table of each CPU
vendor it was run on (``--write`` and ``--record`` store the current one); the README names the
vendor of its table, and ``tests/test_demo.py`` checks the README against that vendor's entry
and the current code against the current vendor's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- demo:begin -->", "<!-- demo:end -->"
TABLES = Path(__file__).resolve().parent / "demo_tables.json"
COMMAND = "python benchmarks/readme_demo.py --write"
WIDTH = 96  # README line length


def table_cells(table: str) -> list[list[str]]:
    """The rows of a demo table (:meth:`~distox.demo.DemoReport.table`) as cells, without the
    header, the rule and the seconds column (the only machine-dependent one)."""
    rows = []
    for line in table.strip("\n").splitlines()[2:]:
        words = line.split()
        first = next(i for i, w in enumerate(words) if _number(w))  # the label may hold spaces
        rows.append([" ".join(words[:first]), *words[first:-1]])
    return rows


def readme_vendor(text: str) -> str:
    """The CPU vendor README.md's demo table was made on (named in its block)."""
    block = text[text.index(BEGIN):text.index(END)]
    return re.search(r"CPU vendor (\S+?)[;,)]", " ".join(block.split())).group(1)


def recorded_tables() -> dict[str, list[list[str]]]:
    """``{CPU vendor: table cells}`` from ``demo_tables.json``."""
    return json.loads(TABLES.read_text()) if TABLES.exists() else {}


def record_table(vendor: str, table: str) -> None:
    """Store ``table``'s cells as ``vendor``'s in ``demo_tables.json``."""
    tables = recorded_tables()
    tables[vendor] = table_cells(table)
    TABLES.write_text(json.dumps(dict(sorted(tables.items())), indent=1) + "\n")


def _number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def readme_table(text: str) -> str:
    """The demo table inside README.md's generated block."""
    block = text[text.index(BEGIN):text.index(END)]
    return re.search(r"```\n(method.*?)```", block, re.S).group(1)


def render_block(default, paper, cores: int | None, seconds: float, vendor: str) -> str:
    """The README block from two :class:`~distox.demo.DemoReport` runs (default and paper preset)."""
    d3, d3_paper = default.row("d3"), paper.row("d3")
    diff = d3_paper["acc"] - d3["acc"]
    intro = (f"`make demo` prints this table (seed 0, D3 with its default preset; {cores} CPU cores, CPU "
             f"vendor {vendor}; the demo runs on one torch thread, so the core count does not change its "
             "numbers, but a CPU of another vendor prints slightly different ones):")
    outro = (f"`distox demo --preset paper` gives D3 {d3_paper['acc']:.2f} / {d3_paper['asr']:.2f} "
             f"(ACC / ASR) here, {abs(diff):.2f} ACC points {'more' if diff >= 0 else 'fewer'} than the "
             f"default preset on the same {default.retain_size} retain images. `{COMMAND}` reruns both "
             f"({seconds:.0f} s) and rewrites this paragraph; `tests/test_demo.py` fails when the table "
             "drifts from the code.")
    return "\n".join([BEGIN, textwrap.fill(intro, WIDTH), "", "```", default.table(), "```", "",
                      textwrap.fill(outro, WIDTH), END])


def _paper_numbers(block: str) -> list[str]:
    """The paper-preset sentence's numbers (ACC, ASR, difference, retain size)."""
    tail = " ".join(block[block.index("--preset paper"):].split())
    return re.findall(r"\d+\.\d+|\d+ retain", tail)[:4]


def replace_block(text: str, block: str) -> str:
    """``text`` with its generated block replaced by ``block``."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} … {END} block")
    return text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="Rewrite README.md's demo block.")
    mode.add_argument("--check", action="store_true", help="Exit 1 when README.md's demo block is stale.")
    mode.add_argument("--record", action="store_true", help="Only record this CPU vendor's table.")
    args = ap.parse_args()

    from distox.demo import DemoConfig, run_demo
    from distox.utils import cpu_vendor

    vendor = cpu_vendor()
    if args.record:
        record_table(vendor, run_demo(DemoConfig(), progress=False).table())
        print(f"recorded the {vendor} demo table in {TABLES}")
        return 0

    t0 = time.perf_counter()
    default = run_demo(DemoConfig(), progress=False)
    paper = run_demo(DemoConfig(preset="paper"), progress=False)
    block = render_block(default, paper, os.cpu_count(), time.perf_counter() - t0, vendor)
    text = README.read_text()
    if args.write:
        README.write_text(replace_block(text, block))
        record_table(vendor, default.table())
        print(f"rewrote the demo block of {README} and recorded the {vendor} table in {TABLES}")
        return 0
    if args.check:
        old = text[text.index(BEGIN):text.index(END)]
        stale = (readme_vendor(text) != vendor or table_cells(readme_table(text)) != table_cells(default.table())
                 or _paper_numbers(block) != _paper_numbers(old))
        if stale:
            print(f"README.md's demo block is stale; the current code gives:\n\n{block}\n\nrun `{COMMAND}`",
                  file=sys.stderr)
            return 1
        print("README.md's demo block matches the current code")
        return 0
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
