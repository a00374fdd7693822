"""distox.purify: input kinds, evaluation, silence, and the untouched input model."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import distox
from distox.attacks import create
from distox.data.core import DataError
from distox.defenses import DefenseError
from distox.models import create_model

from .conftest import make_bundle


def _model():
    torch.manual_seed(0)
    return create_model("small_cnn", 4, 1, width=4)


@pytest.mark.parametrize("kind", ["tuple", "dataset", "loader"])
def test_purify_accepts_tensors_datasets_and_loaders(kind):
    b = make_bundle(n_train=32)
    x, y = b.train.x, b.train.y
    clean = {"tuple": (x, y), "dataset": TensorDataset(x, y),
             "loader": DataLoader(TensorDataset(x, y), batch_size=10)}[kind]
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = distox.purify(model, clean, epochs=1, batch_size=16, verbose=False, device="cpu")
    assert res.method == "d3" and len(res.history) == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not torch.equal(res.model.net.fc.weight, model.net.fc.weight)


def test_eval_data_and_attack_fill_metrics_per_epoch_and_before_after(capsys):
    b = make_bundle(n_train=32, n_test=40)
    atk = create("badnets")
    atk.check_data(b)
    res = distox.purify(_model(), (b.train.x, b.train.y), epochs=2, batch_size=16, verbose=False,
                        device="cpu", eval_data=(b.test.x, b.test.y), attack=atk, preset="paper")
    assert all({"acc", "asr", "ra"} <= set(r) for r in res.history)
    assert set(res.info) == {"before", "after"} and res.info["after"]["acc"] == res.history[-1]["acc"]
    assert res.config["lmd"] == 10.0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_purify_bad_inputs():
    with pytest.raises(DataError, match="tensor pair"):
        distox.purify(_model(), [1, 2, 3], verbose=False)
    with pytest.raises(DefenseError, match="unknown defense"):
        distox.purify(_model(), (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), method="magic")
    with pytest.raises(DefenseError, match="unexpected keyword"):
        distox.purify(_model(), (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), lamda=3)
