"""BackdoorBench interop: a synthetic ``attack_result.pt`` in BackdoorBench's layout → distox run
(load_run / evaluate / defend work on it) → ``defense_result.pt`` export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from distox.attacks.badnets import BadNets
from distox.cli import app
from distox.data import load_dataset
from distox.experiment import load_run
from distox.metrics import evaluate
from distox.models import Normalized, PreActResNet18
from distox.training import LoopConfig, train

runner = CliRunner()
WIDTH = 0.125  # PreAct-ResNet18 at 1/8 width: 8/16/32/64 channels


def write_record(root: Path) -> dict:
    """Train a tiny backdoored PreAct-ResNet18 on digits and save it the way BackdoorBench does:
    ``record/<run>/attack_result.pt`` (torch.save of a dict with numpy arrays) plus PNGs."""
    data = load_dataset("digits")
    attack = BadNets(target=0, poison_rate=0.1, seed=0)
    attack.check_data(data)
    poisoned, _ = attack.poison_training_set(data.train)
    torch.manual_seed(0)
    net = PreActResNet18(10, 1, WIDTH)
    sub = torch.arange(0, len(poisoned), 4)  # a quarter of the data, 2 epochs: seconds on CPU
    train(Normalized(net, (0.5,), (0.5,)), poisoned.x[sub], poisoned.y[sub],
          LoopConfig(epochs=2, batch_size=64, lr=0.05), progress=False)
    net.eval()
    run = root / "record" / "badnet_digits"
    keep = torch.nonzero(data.test.y != 0).flatten()
    x_bd = (attack.apply(data.test.x[keep]).clamp(0, 1) * 255).round().to(torch.uint8)
    data_dict = {}
    for i, idx in enumerate(keep.tolist()):
        y = int(data.test.y[idx])
        rel = f"./record/badnet_digits/bd_test_dataset/{y}/{idx}.png"
        (run / "bd_test_dataset" / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x_bd[i, 0].numpy(), mode="L").convert("RGB").save(run / rel.split("badnet_digits/")[1])
        data_dict[idx] = {"path": rel, "other_info": [0, y]}
    indicator = np.zeros(len(data.test), dtype=float)
    indicator[keep.numpy()] = 1
    train_ind = np.zeros(len(data.train), dtype=float)
    train_ind[: len(data.train) // 10] = 1
    container = {"save_folder_path": "./record/badnet_digits/bd_test_dataset", "save_file_format": ".png",
                 "data_dict": data_dict}
    result = {
        "model_name": "preactresnet18", "num_classes": 10, "model": net.state_dict(),
        "data_path": "./data/digits", "img_size": (8, 8, 1), "clean_data": "digits",
        "bd_train": {"original_index_array": np.arange(len(data.train)), "poison_indicator": train_ind,
                     "getitem_all": True, "getitem_all_switch": False,
                     "bd_data_container": {"save_folder_path": "./record/badnet_digits/bd_train_dataset",
                                           "save_file_format": ".png", "data_dict": {}}},
        "bd_test": {"original_index_array": keep.numpy(), "poison_indicator": indicator,
                    "getitem_all": True, "getitem_all_switch": False,
                    "save_folder_path": "./record/badnet_digits/bd_test_dataset", "bd_data_container": container},
    }
    torch.save(result, run / "attack_result.pt")
    return {"run": run, "net": net, "data": data, "x_bd": x_bd, "keep": keep}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return write_record(tmp_path_factory.mktemp("bb"))


def test_import_refuses_without_trust_pickle(record, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["import-backdoorbench", str(record["run"]), "--out", str(out)])
    assert res.exit_code != 0
    assert "execute arbitrary code" in res.output and "--trust-pickle" in res.output
    assert not out.exists()


def test_round_trip(record, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["import-backdoorbench", str(record["run"]), "--trust-pickle", "--out", str(out),
                              "--model-kwarg", f"width={WIDTH}"])
    assert res.exit_code == 0, res.output
    run = load_run(out)
    assert run.record["attack"]["name"] == "imported" and run.spec.model == "preactresnet18"
    # the poisoned test set is exactly the stored PNGs with their labels
    bd = run.backdoor_test_set()
    assert torch.equal((bd.x * 255).round().to(torch.uint8), record["x_bd"])
    assert bd.target.tolist() == [0] * len(record["keep"])
    assert bd.true.tolist() == record["data"].test.y[record["keep"]].tolist()
    # metrics of the imported run = those of BackdoorBench's model with its normalisation
    ref = Normalized(record["net"], (0.5,), (0.5,)).eval()
    want = evaluate(ref, record["data"].test.x, record["data"].test.y, bd, device="cpu")
    got = json.loads((out / "metrics.json").read_text())
    assert got["acc"] == round(want["acc"], 2) and got["asr"] == round(want["asr"], 2)  # as every record
    ev = runner.invoke(app, ["evaluate", str(out), "--device", "cpu"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output)["asr"] == pytest.approx(got["asr"], abs=1e-3)
    # a distox defense runs on it, and exports to BackdoorBench's layout
    d = runner.invoke(app, ["defend", "ft", str(out), "--count", "60", "--epochs", "1", "--device", "cpu", "-q"])
    assert d.exit_code == 0, d.output
    exp = tmp_path / "bb_defense"
    e = runner.invoke(app, ["export-backdoorbench", str(out / "defense" / "ft"), "--out", str(exp)])
    assert e.exit_code == 0, e.output
    saved = torch.load(exp / "defense_result.pt", weights_only=True)  # plain tensors/dicts only
    assert saved["model_name"] == "preactresnet18" and saved["num_classes"] == 10
    net = PreActResNet18(10, 1, WIDTH)
    net.load_state_dict(saved["model"])  # BackdoorBench's key names, no normaliser
    defended = run.model.__class__(PreActResNet18(10, 1, WIDTH), (0.5,), (0.5,))
    from distox.runs import load_state

    defended.load_state_dict(load_state(out / "defense" / "ft" / "model.safetensors"))
    assert torch.equal(net.linear.weight, defended.net.linear.weight)
    dj = json.loads((out / "defense" / "ft" / "defense.json").read_text())
    assert saved["asr"] == pytest.approx(dj["after"]["asr"]) and saved["clean_acc"] == pytest.approx(dj["after"]["acc"])
    assert saved["der"] == dj["der"] and dj["der"] > 1  # percent in both


def test_import_errors(record, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"model_name": "x"}, bad / "attack_result.pt")
    res = runner.invoke(app, ["import-backdoorbench", str(bad), "--trust-pickle", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "missing keys" in res.output
    res = runner.invoke(app, ["import-backdoorbench", str(tmp_path / "nothing"), "--trust-pickle"])
    assert res.exit_code != 0 and "no BackdoorBench attack_result.pt" in res.output
    # wrong architecture width: the key/shape mismatch is reported, nothing written
    out = tmp_path / "o2"
    res = runner.invoke(app, ["import-backdoorbench", str(record["run"]), "--trust-pickle", "--out", str(out)])
    assert res.exit_code != 0 and "shape mismatches" in res.output
    assert not (out / "attack.json").exists()
