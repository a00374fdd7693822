"""benchmarks/d3_study.py's cache of done cells: a run is the same under any spelling of its path,
and a label reused with other settings is reported, not silently taken as done."""
from __future__ import annotations

import argparse
import json

from .conftest import load_benchmark


def test_done_lines_match_any_spelling_and_differs_names_what_changed(tmp_path, monkeypatch):
    study = load_benchmark("d3_study")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "m").mkdir(parents=True)
    args = argparse.Namespace(epochs=12, batch_size=32, seed=0, ratio=None, count=500)
    _, opts, _ = study.defense_of({"preset": "default"}, args)
    line = {"run": "runs/m", "candidate": "default", "params": opts, "count": 500}
    out = tmp_path / "cells.jsonl"
    out.write_text(json.dumps(line) + "\n")
    done = study.done_lines(out)
    assert (str((tmp_path / "runs" / "m").resolve()), "default") in done
    assert study.differs(line, {"preset": "default"}, args) is None
    assert "preset': 'paper'" in study.differs(line, {"preset": "paper"}, args)
    assert "500 retain images (now 1000)" in study.differs(line, {"preset": "default"},
                                                          argparse.Namespace(**{**vars(args), "count": 1000}))
