"""benchmarks/d3_probes.py: the function-identical rescaling keeps the function, channel
Lipschitz pruning zeroes only the channels above its bound, the angle probe measures angles."""
from __future__ import annotations

import torch
from torch import nn

from .conftest import load_benchmark


def conv_bn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()
    with torch.no_grad():  # running statistics that are not the initial ones
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8))
    return model.eval()


def test_rescaling_the_batchnorm_fed_weights_keeps_the_function():
    probes = load_benchmark("d3_probes")
    model, x = conv_bn(), torch.rand(5, 1, 8, 8)
    before = model(x)
    for c in (0.5, 2.0):
        scaled = conv_bn()
        assert probes.rescale_batchnorm_fed(scaled, x[:1], c) == 2
        assert torch.allclose(scaled(x), before, atol=1e-4)
        assert torch.allclose(scaled[0].weight, c * model[0].weight)
        assert torch.equal(scaled[8].weight, model[8].weight)  # the classifier feeds no BatchNorm


def test_channel_lipschitz_pruning_zeroes_the_channels_above_mean_plus_u_std():
    probes = load_benchmark("d3_probes")
    model = conv_bn()
    with torch.no_grad():
        model[0].weight[2] *= 50  # one channel of outsized gain
    pruned, total = probes.channel_lipschitz_prune(model, torch.rand(1, 1, 8, 8), 1.5)
    assert (pruned, total) == (1, 10)
    assert torch.count_nonzero(model[0].weight[2]) == 0
    assert all(torch.count_nonzero(model[0].weight[k]) > 0 for k in range(6) if k != 2)


def test_weight_angles_are_zero_for_the_same_weights_and_180_for_negated_ones():
    probes = load_benchmark("d3_probes")
    a, b = conv_bn(), conv_bn()
    assert set(probes.weight_angles(a, b).values()) == {0.0}
    with torch.no_grad():
        b[8].weight.neg_()
    assert probes.weight_angles(a, b)["8"] == 180.0


def test_pending_names_only_what_the_file_does_not_hold(tmp_path):
    probes = load_benchmark("d3_probes")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = tmp_path / "out.jsonl"
    probes.append(out, {"run": str((tmp_path / "a").resolve()), "c": 0.5})
    probes.append(out, {"run": str((tmp_path / "b").resolve()), "c": None})
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert list(probes.pending(out, runs, "c", [0.5, None])) == [(runs[0], [None]), (runs[1], [0.5])]
    assert list(probes.pending(out, runs)) == []
    assert list(probes.pending(tmp_path / "none.jsonl", runs[:1])) == [(runs[0], [None])]


def test_scaling_the_logits_keeps_the_predictions_and_multiplies_the_outputs():
    probes = load_benchmark("d3_probes")
    model, x = conv_bn(), torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        assert probes.scale_logits(model, x[:1], 0.25) == "8"
        after = model(x)
    assert torch.allclose(after, 0.25 * before, atol=1e-6)
    assert torch.equal(after.argmax(1), before.argmax(1))


def test_twice_runs_the_second_d3_on_the_first_ones_result_with_each_runs_options(tmp_path, monkeypatch, capsys):
    probes = load_benchmark("d3_probes")
    calls = []

    class FakeRun:
        def __init__(self, run_dir):
            self.path, self.floor, self.suspect = str(tmp_path / run_dir), 2.0, "suspect"

        def d3(self, preset, model=None, seed=0, **options):
            calls.append((preset, model, seed, options))
            return f"{preset}@{seed}"

        def evaluate(self, model):
            return {"acc": 80.0 if model == "suspect" else 75.0, "asr": 90.0 if model == "suspect" else 1.0}

    monkeypatch.setattr(probes, "Run", FakeRun)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "twice.jsonl"
    then = {"preset": "reference", "epochs": 12}
    probes.probe_twice(out, ["m"], {"norm_rule": False}, then)
    assert calls == [("all-layers", None, 0, {"norm_rule": False}), ("reference", "all-layers@0", 1, {"epochs": 12})]
    line = next(probes.records(out))
    assert line["first"] == {"norm_rule": False} and line["then"] == then and line["twice"]["asr"] == 1.0
    probes.probe_twice(out, ["m"], {"norm_rule": False}, then)  # recorded: skipped, table printed again
    assert len(calls) == 2
    printed = capsys.readouterr().out
    assert "then: the default with {'preset': 'reference', 'epochs': 12}" in printed and "| m | -5.00 / 1.00 |" in printed


def test_weight_norms_are_those_of_the_weights_the_default_distance_covers():
    probes = load_benchmark("d3_probes")
    model = conv_bn()
    got = probes.weight_norms(model, torch.rand(1, 1, 8, 8))
    norms = sorted(float(m.weight.norm()) for m in (model[0], model[3], model[8]))
    assert got == {"median": round(norms[1], 2), "min": round(norms[0], 2), "max": round(norms[2], 2), "weights": 3}


def test_fooled_records_the_share_the_copies_fool_at_each_radius_once_per_model(tmp_path, monkeypatch, capsys):
    """``d3_probes.py fooled``: per model, the share of its retain images whose crafted-once copy fools it at each
    radius (more at a larger one), recorded once; a rerun prints the table without crafting again."""
    probes = load_benchmark("d3_probes")
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval(), torch.rand(48, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # every clean image right: what the copies fool, the radius bought
    crafted = []

    def loaded(target):
        crafted.append(target)
        return target, model, x, y

    monkeypatch.setattr(probes, "suspect_and_retain", loaded)
    out = tmp_path / "fooled.jsonl"
    radii = (0.01, 0.1, 0.3)
    probes.probe_fooled(out, ["user:toy"], radii)
    line = next(probes.records(out))
    shares = [line["fooled"][str(r)] for r in radii]
    assert line["run"] == "user:toy" and line["batchnorm"] is False
    assert all(0.0 <= s <= 1.0 for s in shares) and shares == sorted(shares) and shares[-1] > shares[0]
    probes.probe_fooled(out, ["user:toy"], radii)
    assert crafted == ["user:toy"]
    assert "| user:toy | no | " in capsys.readouterr().out
