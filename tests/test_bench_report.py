"""distox report's judgement of a grid: the clean-model ASR floor and verdicts, the
per-architecture mean ± std over seeds, and the development / check parts. Cells are
hand-made (a fake cell function returns fixed numbers), so every expected value is worked
out by hand below.
"""
from __future__ import annotations

import copy
import csv
import io
import json

import pytest

from distox.bench import BenchError, build_report, execute, expand, parse_config, prepare, render
from distox.bench.summary import asr_floor, verdict

from .test_bench import BASE


def handmade(table, fail=()):
    """Cell function: ``table[(row, column, seed)]`` (attack cells: column ``none``); the
    cells named in ``fail`` raise."""
    def fn(cell, cells_root, options):
        if cell.kind == "clean":
            return {"acc": 99.0}
        where = (cell.row, cell.column, cell.seed)
        if where in fail:
            raise RuntimeError("not finished")
        return dict(table[where])
    return fn


def run(tmp_path, table, fail=(), **changes):
    d = copy.deepcopy(BASE)
    d.update(changes)
    grid, cache = prepare(parse_config(d), str(tmp_path))
    execute(grid, cache, cell_fn=handmade(table, fail), progress=False)
    return build_report(tmp_path)


def attack(acc, asr, clean_asr=None):
    out = {"acc": acc, "asr": asr, "ra": 0.0}
    if clean_asr is not None:
        out.update(clean_acc=95.0, clean_asr=clean_asr, clean_ra=90.0)
    return out


def defended(acc, asr):
    return {"acc": acc, "asr": asr, "ra": 50.0}


# ---------------------------------------------------------------------------- floor and verdict
def test_floor_rule():
    assert asr_floor(0.0) == 2.0 and asr_floor(0.5) == 2.5 and asr_floor(3.0) == 5.0
    assert verdict(5.0, 5.0) == "pass" and verdict(5.01, 5.0) == "fail"


def test_verdict_flips_exactly_at_the_floor(tmp_path):
    # badnets: clean-model ASR 3 -> floor 5; blended: 0.25 -> floor 2.25
    table = {("badnets", "none", 0): attack(90.0, 99.0, clean_asr=3.0),
             ("blended", "none", 0): attack(90.0, 99.0, clean_asr=0.25),
             ("badnets", "ft", 0): defended(89.0, 5.01), ("badnets", "d3", 0): defended(89.0, 5.0),
             ("blended", "ft", 0): defended(89.0, 2.26), ("blended", "d3", 0): defended(89.0, 2.25)}
    clean_ref = {"epochs": 1, "batch_size": 64, "clean_reference": True}
    rep = run(tmp_path, table, seeds=[0], attacks=["badnets", "blended"], defenses=["none", "ft", "d3"],
              attack_settings=clean_ref)
    t = rep.tables[0]
    assert t.floors == {"badnets": 5.0, "blended": 2.25}
    assert {(r, c): t.entries[r][c].verdict for r in t.floors for c in ("ft", "d3")} == {
        ("badnets", "ft"): "fail", ("badnets", "d3"): "pass", ("blended", "ft"): "fail", ("blended", "d3"): "pass"}
    assert t.entries["badnets"]["none"].verdict is None  # only defended cells are judged
    md = render(rep, "markdown").splitlines()
    assert "| Attack | Floor | FT | D3 |" in md  # one part: no Part column
    assert "| BadNets | 5.00 | fail | pass |" in md and "| Blended | 2.25 | fail | pass |" in md
    assert "| **Passed** |  | 0/2 | 2/2 |" in md

    js = json.loads(render(rep, "json"))
    row = js["tables"][0]["rows"][0]
    assert (row["attack"], row["floor"], row["part"]) == ("BadNets", 5.0, "dev")
    assert (row["cells"]["FT"]["verdict"], row["cells"]["D3"]["verdict"], row["cells"]["D3"]["floor"]) == \
        ("fail", "pass", 5.0)
    assert "verdict" not in row["cells"]["No defense"]

    rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
    assert [(r["attack"], r["part"], r["floor"], r["FT verdict"], r["D3 verdict"]) for r in rows] == [
        ("BadNets", "dev", "5.00", "fail", "pass"), ("Blended", "dev", "2.25", "fail", "pass"),
        ("Average", "", "", "", "")]


def test_no_floor_without_clean_reference(tmp_path):
    table = {("badnets", "none", 0): attack(90.0, 99.0), ("badnets", "d3", 0): defended(89.0, 1.0)}
    rep = run(tmp_path, table, seeds=[0], attacks=["badnets"], defenses=["none", "d3"])
    assert not rep.judged and "Floor =" not in render(rep, "markdown")
    assert "verdict" not in json.loads(render(rep, "json"))["tables"][0]["rows"][0]["cells"]["D3"]
    assert "floor" not in next(csv.reader(io.StringIO(render(rep, "csv"))))


# ---------------------------------------------------------------------------- mean ± std over seeds
SEEDS_TABLE = {
    **{("badnets", "none", s): attack(acc, 100.0) for s, acc in enumerate((90.0, 92.0, 94.0))},
    **{("blended", "none", s): attack(acc, 100.0) for s, acc in enumerate((80.0, 82.0, 84.0))},
    **{("badnets", "d3", s): defended(acc, asr) for s, (acc, asr) in enumerate(((88.0, 1.0), (91.0, 2.0), (94.0, 3.0)))},
    **{("blended", "d3", s): defended(acc, asr) for s, (acc, asr) in enumerate(((78.0, 3.0), (81.0, 4.0), (78.0, 5.0)))},
}


def test_summary_mean_and_std_over_seed_averages(tmp_path):
    rep = run(tmp_path, SEEDS_TABLE, seeds=[0, 1, 2], attacks=["badnets", "blended"], defenses=["none", "d3"])
    (summ,) = rep.summaries
    assert (summ.part, summ.rows, summ.columns) == ("dev", ["badnets", "blended"], ["none", "d3"])
    # per-seed averages over the two attacks, then mean and sample std over the three seeds:
    # no defense ACC 85, 87, 89; D3 ACC 83, 86, 86; D3 ASR 2, 3, 4; ACC drop 2, 1, 3;
    # DER (ASR drop − ACC drop + 100) / 2: badnets 98.5 ×3, blended 97.5, 97.5, 94.5 -> 98, 98, 96.5
    none, d3 = summ.stats["none"], summ.stats["d3"]
    assert set(none) == {"acc", "asr"} and (none["acc"].mean, none["acc"].std, none["acc"].seeds) == (87.0, 2.0, 3)
    assert (d3["acc"].mean, d3["acc"].std) == pytest.approx((85.0, 3 ** 0.5))
    assert (d3["asr"].mean, d3["asr"].std) == pytest.approx((3.0, 1.0))
    assert (d3["acc_drop"].mean, d3["acc_drop"].std) == pytest.approx((2.0, 1.0))
    assert (d3["der"].mean, d3["der"].std) == pytest.approx((97.5, 0.75 ** 0.5))
    md = render(rep, "markdown").splitlines()
    assert "| No defense | 87.00 ± 2.00 | 100.00 ± 0.00 |  |  |" in md
    assert "| D3 | 85.00 ± 1.73 | 3.00 ± 1.00 | 2.00 ± 1.00 | 97.50 ± 0.87 |" in md
    js = json.loads(render(rep, "json"))["summary"][0]
    assert js["columns"]["D3"]["acc"] == {"mean": 85.0, "std": 1.73, "seeds": 3}
    assert js["attacks"] == ["BadNets", "Blended"]


def test_summary_one_seed_has_no_std_and_unfinished_seeds_show_a_dash(tmp_path):
    rep = run(tmp_path / "one", SEEDS_TABLE, seeds=[1], attacks=["badnets", "blended"], defenses=["none", "d3"])
    assert rep.summaries[0].stats["d3"]["acc"].std is None
    assert "| D3 | 86.00 | 3.00 | 1.00 | 98.00 |" in render(rep, "markdown").splitlines()
    rep = run(tmp_path / "unfinished", SEEDS_TABLE, fail={("blended", "d3", 2)}, seeds=[0, 1, 2],
              attacks=["badnets", "blended"], defenses=["none", "d3"])
    assert rep.summaries[0].stats["d3"]["acc"].mean is None and rep.summaries[0].stats["d3"]["acc"].seeds == 2
    md = render(rep, "markdown").splitlines()
    assert "| D3 | – | – | – | – |" in md and "| No defense | 87.00 ± 2.00 | 100.00 ± 0.00 |  |  |" in md


# ---------------------------------------------------------------------------- development / check parts
def _parts_config():
    d = copy.deepcopy(BASE)
    d.update(seeds=[0], defenses=["none", "d3"],
             models=[{"name": "small_cnn", "kwargs": {"width": 4}},
                     {"name": "small_cnn", "kwargs": {"width": 8}, "part": "check"}],
             attacks=["badnets", {"name": "blended", "part": "check"}])
    return d


def test_part_assignment_and_separate_summaries(tmp_path):
    d = _parts_config()
    grid = expand(parse_config(d))
    g4, g8 = 'digits / small_cnn {"width": 4}', 'digits / small_cnn {"width": 8}'
    assert {(c.group, c.row, c.column): c.part for c in grid.attacks + grid.defenses} == {
        (g4, "badnets", "none"): "dev", (g4, "badnets", "d3"): "dev",
        (g4, "blended", "none"): "check", (g4, "blended", "d3"): "check",
        **{(g8, r, c): "check" for r in ("badnets", "blended") for c in ("none", "d3")}}
    # the part is not part of any key
    plain = copy.deepcopy(d)
    plain["models"][1].pop("part"), plain["attacks"][1].pop("part")
    assert [c.key for c in expand(parse_config(plain)).cells] == [c.key for c in grid.cells]

    table = {(r, c, 0): attack(90.0, 99.0) if c == "none" else defended(88.0, 1.0)
             for r in ("badnets", "blended") for c in ("none", "d3")}
    rep = run(tmp_path, table, **_parts_config())
    assert rep.parts == ["dev", "check"]
    assert [(s.part, s.group, s.rows) for s in rep.summaries] == [
        ("dev", g4, ["badnets"]), ("check", g4, ["blended"]), ("check", g8, ["badnets", "blended"])]
    md = render(rep, "markdown")
    assert md.index(f"**Summary, development part: {g4}** (1 attack row)") < md.index(
        f"**Summary, check part: {g4}** (1 attack row)") < md.index(f"**Summary, check part: {g8}** (2 attack rows)")
    js = json.loads(render(rep, "json"))
    assert [(t["group"], [r["part"] for r in t["rows"]]) for t in js["tables"]] == [
        (g4, ["dev", "check", None]), (g8, ["check", "check", None])]
    assert [s["part"] for s in js["summary"]] == ["dev", "check", "check"]
    assert [r["part"] for r in csv.DictReader(io.StringIO(render(rep, "csv")))] == [
        "dev", "check", "", "check", "check", ""]


def test_single_part_summary_is_untitled_and_bad_part_is_named(tmp_path):
    table = {("badnets", "none", 0): attack(90.0, 99.0), ("badnets", "d3", 0): defended(88.0, 1.0)}
    md = render(run(tmp_path, table, seeds=[0], attacks=["badnets"], defenses=["none", "d3"]), "markdown")
    assert "**Summary: digits / small_cnn**" in md and "development part" not in md
    d = _parts_config()
    d["attacks"][1]["part"] = "test"
    with pytest.raises(BenchError, match=r"attacks\[1\]\.part: "):
        parse_config(d)
