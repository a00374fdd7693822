"""Evaluation cadence (``eval_every``) and how evaluation runs: every N epochs and after the
last, under ``torch.inference_mode``, with a batch that halves when the GPU runs out of memory;
evaluating (or not) never changes the trained weights."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distox import metrics
from distox.bench import expand, parse_config
from distox.bench.executors import RunOptions, compute_cell
from distox.defenses import create
from distox.errors import DistoxError
from distox.metrics import Evaluator, eval_due, evaluate, predict
from distox.models import create_model

from .conftest import make_bundle


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", 4, 1, width=4)


def test_eval_due_every_n_epochs_and_at_the_last():
    assert [e for e in range(1, 8) if eval_due(e, 3, 7)] == [3, 6, 7]
    assert [e for e in range(1, 5) if eval_due(e)] == [1, 2, 3, 4]
    assert [e for e in range(1, 6) if Evaluator(torch.zeros(1, 1, 2, 2), torch.zeros(1), every=2).due(e)] == [2, 4]
    with pytest.raises(DistoxError, match="eval_every must be >= 1"):
        Evaluator(torch.zeros(1, 1, 2, 2), torch.zeros(1), every=0)


def test_a_defense_evaluates_on_its_cadence_and_trains_the_same_weights():
    b = make_bundle(n_train=32, n_test=24)
    d3 = create("d3", preset="paper", epochs=3, batch_size=16)
    every2 = d3(_model(), b.train, evaluator=Evaluator(b.test.x, b.test.y, every=2, last=3), device="cpu",
                progress=False)
    untracked = d3(_model(), b.train, device="cpu", progress=False)
    assert ["acc" in r for r in every2.history] == [False, True, True]
    assert every2.history[-1]["acc"] == evaluate(every2.model, b.test.x, b.test.y, device="cpu")["acc"]
    a, c = every2.model.state_dict(), untracked.model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


class _Probe(nn.Module):
    """Records whether each call ran under inference mode and its batch size; runs out of
    (GPU) memory on batches above ``limit``."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.limit, self.calls = limit, []

    def forward(self, x):
        self.calls.append((torch.is_inference_mode_enabled(), len(x)))
        if self.limit is not None and len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.lin(x.flatten(1))


def test_predict_runs_under_inference_mode_restores_the_mode_and_halves_on_out_of_memory():
    x = torch.rand(150, 1, 2, 2)
    probe = _Probe().train()
    ref = predict(probe, x, device="cpu")
    assert probe.training and probe.calls == [(True, 128), (True, 22)]
    assert metrics.eval_batch_size("cpu") == metrics.CPU_EVAL_BATCH == 128
    small = _Probe(limit=10)
    small.load_state_dict(probe.state_dict())
    got = predict(small, x, batch_size=64, device="cpu")
    assert torch.equal(got, ref) and [n for _, n in small.calls] == [64, 32, 16] + [8] * 18 + [6]
    with torch.no_grad():
        assert torch.equal(ref, probe(x).argmax(1))


BENCH = {"datasets": ["digits"], "models": [{"name": "small_cnn", "kwargs": {"width": 4}}],
         "attack_settings": {"epochs": 1}, "defense_settings": {"epochs": 1}, "attacks": ["badnets"],
         "defenses": ["none", "ft"]}


def _grid(**defense_settings):
    d = json.loads(json.dumps(BENCH))
    d["defense_settings"].update(defense_settings)
    return expand(parse_config(d))


def test_bench_eval_every_changes_only_its_defense_keys_and_reaches_run_defense(monkeypatch, tmp_path):
    plain, tracked = _grid(), _grid(eval_every=2)
    assert plain.attacks[0].key == tracked.attacks[0].key and plain.defenses[0].key != tracked.defenses[0].key
    assert "eval_every" not in plain.defenses[0].config["defense"]
    calls = []

    def fake_run_defense(run_dir, spec, out, **kw):
        calls.append((spec, kw))
        return {"after": {"acc": 90.0, "asr": 5.0, "ra": 80.0}}

    from distox import experiment

    monkeypatch.setattr(experiment, "run_defense", fake_run_defense)
    for grid in (plain, tracked):
        compute_cell(grid.defenses[0], tmp_path, RunOptions(device="cpu", progress=False))
    (spec0, kw0), (spec1, kw1) = calls
    assert spec0 == spec1 and spec0.method == "ft"
    assert (kw0["track_epochs"], kw0["eval_every"]) == (False, 1)
    assert (kw1["track_epochs"], kw1["eval_every"]) == (True, 2)
