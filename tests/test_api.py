"""distox.purify: input kinds, evaluation, silence, and the untouched input model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import distox
from distox.attacks import create
from distox.data.core import DataError
from distox.defenses import DefenseError
from distox.models import create_model
from distox.runs import save_model

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


class _DictRows(torch.utils.data.Dataset):
    """Rows as a Hugging Face dataset gives them (``set_format("torch")``)."""

    def __init__(self, x, y, image_key="pixel_values", label_key="labels"):
        self.x, self.y, self.keys = x, y, (image_key, label_key)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {self.keys[0]: self.x[i], self.keys[1]: self.y[i], "id": i}


@pytest.mark.parametrize("keys", [("pixel_values", "labels"), ("image", "label")])
def test_dict_rows_and_batches_read_as_images_and_labels(keys):
    from distox.api import as_split
    b = make_bundle(n_train=12)
    rows = _DictRows(b.train.x, b.train.y, *keys)
    for data in (rows, DataLoader(rows, batch_size=5)):
        split = as_split(data)
        assert torch.equal(split.x, b.train.x) and torch.equal(split.y, b.train.y)
    with pytest.raises(DataError, match="image key .* got keys img_path, label, id"):
        as_split(_DictRows(b.train.x, b.train.y, "img_path", "label"))
    with pytest.raises(DataError, match="must be \\(image, label\\) or a dict of them; got Tensor"):
        as_split(DataLoader(b.train.x, batch_size=4))


def test_eval_data_and_attack_fill_metrics_before_after_and_per_epoch_with_eval_every(capsys):
    b = make_bundle(n_train=32, n_test=40)
    atk = create("badnets")
    atk.check_data(b)
    kw = dict(epochs=2, batch_size=16, verbose=False, device="cpu", eval_data=(b.test.x, b.test.y), attack=atk,
              preset="paper", label_check="off")
    res = distox.purify(_model(), (b.train.x, b.train.y), eval_every=1, **kw)
    assert all({"acc", "asr", "ra"} <= set(r) for r in res.history)
    assert set(res.info) == {"before", "after"} and res.info["after"]["acc"] == res.history[-1]["acc"]
    assert res.config["lmd"] == 10.0
    quick = distox.purify(_model(), (b.train.x, b.train.y), **kw)  # default: before and after only
    assert not any("acc" in r for r in quick.history) and quick.info == res.info
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_purify_bad_inputs():
    with pytest.raises(DataError, match="pair of tensors or NumPy arrays"):
        distox.purify(_model(), [1, 2, 3], verbose=False)
    with pytest.raises(DefenseError, match="unknown defense"):
        distox.purify(_model(), (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), method="magic")
    with pytest.raises(DefenseError, match="unexpected keyword"):
        distox.purify(_model(), (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), lamda=3)


# ---------------------------------------------------------------------------- input coercion
def _purified(clean, **kw):
    return distox.purify(_model(), clean, epochs=1, batch_size=16, verbose=False, device="cpu", **kw).model


def test_numpy_pairs_and_uint8_images_match_float_tensors(caplog):
    b = make_bundle(n_train=32)
    pixels = (b.train.x * 255).round().to(torch.uint8)  # 0-255 images, as from PIL / OpenCV
    x01 = pixels.float() / 255
    ref = _purified((x01, b.train.y))
    with caplog.at_level("WARNING", logger="distox.api"):
        got_np = _purified((x01.numpy(), b.train.y.numpy()))
        assert not [r for r in caplog.records if r.name == "distox.api"]  # [0, 1] floats: nothing to say
        got_u8 = _purified((pixels.numpy(), b.train.y.numpy()))
    assert [r.getMessage() for r in caplog.records if r.name == "distox.api"] == [
        "clean data: uint8 images taken as 0-255 pixel values and divided by 255 (distox models take images "
        "in [0, 1]; pass floats in [0, 1] to skip this)"]
    for got in (got_np, got_u8):
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in got.state_dict().items())
    flipped = distox.as_split((x01.numpy()[:, :, ::-1], b.train.y.numpy()))  # a negative-stride view
    assert torch.equal(flipped.x, x01.flip(2))
    # float images in 0-255 too, eval_data included
    caplog.clear()
    with caplog.at_level("WARNING", logger="distox.api"):
        res = distox.purify(_model(), (pixels.float(), b.train.y), epochs=1, batch_size=16, verbose=False,
                            device="cpu", eval_data=(pixels.numpy(), b.train.y.numpy()))
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in res.model.state_dict().items())
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "distox.api"] == ["clean data", "eval_data"]
    assert "float images in [0, 204] taken as 0-255 pixel values" in caplog.records[0].getMessage()
    assert res.info["after"]["acc"] == pytest.approx(distox.metrics.evaluate(res.model, x01, b.train.y, device="cpu")["acc"])


def test_grayscale_without_channel_axis_one_hot_and_column_labels_and_lists_are_taken(caplog):
    """(N, H, W) images, (N, 1) or one-hot labels and lists of arrays are what NumPy and other
    frameworks hand over; each is taken as the (N, C, H, W) / class-index pair it means."""
    b = make_bundle(n_train=32)
    x, y = b.train.x, b.train.y
    ref = distox.as_split((x, y))
    with caplog.at_level("WARNING", logger="distox.api"):
        for data in [(x[:, 0].numpy(), y.numpy()), (x, y[:, None]), (x, torch.eye(4)[y]),
                     ([im.numpy() for im in x], y.tolist()), (list(x), y.numpy())]:
            split = distox.as_split(data)
            assert torch.equal(split.x, ref.x) and torch.equal(split.y, ref.y)
    said = [r.getMessage() for r in caplog.records]
    assert said == ["clean data: images of shape (32, 16, 16) taken as one-channel (N, 1, H, W)",
                    "clean data: one-hot labels (32, 4) taken as class indices (their argmax)"]
    with pytest.raises(DataError, match=r"labels must have shape \(32,\), one class index per image; got \(32, 4\)"):
        distox.as_split((x, torch.ones(32, 4, dtype=torch.long)))  # several ones a row: not one-hot
    with pytest.raises(DataError, match=r"got \(20,\)"):
        distox.as_split((x, y[:20]))
    one_hot = distox.as_split(TensorDataset(x, torch.eye(4)[y]))  # a Dataset with one-hot labels
    assert torch.equal(one_hot.y, ref.y) and one_hot.y.dtype == torch.long


def test_channels_last_images_are_refused_with_the_permutation_that_fixes_them():
    b = make_bundle(n_train=8)
    with pytest.raises(DefenseError, match=r"look channels-last \(N, H, W, C\): pass X.permute\(0, 3, 1, 2\)"):
        distox.purify(_model(), (b.train.x.permute(0, 2, 3, 1), b.train.y), epochs=1, verbose=False)


def test_common_mix_ups_are_refused_with_the_conversion_that_fixes_them():
    """Flattened images, grey images for an RGB model (and the reverse), labels counted from 1."""
    b = make_bundle(n_train=8)
    x, y = b.train.x, b.train.y
    with pytest.raises(DataError, match=r"flat vectors \(8, 256\): 256 = 1×16×16, so pass X.reshape\(-1, 1, 16, 16\)"):
        distox.purify(_model(), (x.flatten(1), y), verbose=False)
    with pytest.raises(DataError, match=r"flat vectors \(8, 768\): 768 = 3×16×16"):
        distox.purify(_model(), (x.repeat(1, 3, 1, 1).flatten(1), y), verbose=False)
    with pytest.raises(DataError, match=r"flat vectors \(8, 7\)$"):
        distox.purify(_model(), (x.flatten(1)[:, :7], y), verbose=False)
    with pytest.raises(DefenseError, match=r"takes 1 channel and the images have 3: pass X.mean\(1, keepdim=True\)"):
        distox.purify(_model(), (x.repeat(1, 3, 1, 1), y), verbose=False)
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    with pytest.raises(DefenseError, match=r"takes 3 channels and the images have 1: pass X.repeat\(1, 3, 1, 1\)"):
        distox.purify(rgb, (x, y), verbose=False)
    with pytest.raises(DefenseError, match=r"found \[4\] — the labels run 1..4: pass y - 1"):
        distox.purify(_model(), (x, y + 1), verbose=False)
    with pytest.raises(DefenseError, match=r"found \[4, 5\]$"):  # not a shift by one: no advice
        distox.purify(_model(), (x, y + 2), verbose=False)


def test_to_unit_range_cases(caplog):
    from distox.api import to_unit_range

    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    standardised = (x - 0.5) / 0.2  # negative values: the model's own normalisation, kept
    with caplog.at_level("WARNING", logger="distox.api"):
        assert torch.equal(to_unit_range(standardised), standardised)
        assert torch.equal(to_unit_range(x), x)
        assert not caplog.records
        overshoot = x * 1.05  # e.g. a bicubic resize of [0, 1] images: unchanged, but said
        assert torch.equal(to_unit_range(overshoot, "clean data"), overshoot)
    assert "clean data: float images reach 1.0" in caplog.text and "passed unchanged" in caplog.text
    assert torch.equal(to_unit_range(torch.tensor([[[[0, 255]]]], dtype=torch.int64)), torch.tensor([[[[0.0, 1.0]]]]))
    with pytest.raises(DataError, match="integer images must hold 0-255 pixel values; got 0..300"):
        to_unit_range(torch.tensor([[[[0, 300]]]]))
    with pytest.raises(DataError, match="values up to 999.053 are neither in"):
        to_unit_range(x * 1000)
    with pytest.raises(DataError, match="NaN or infinite"):
        to_unit_range(torch.full((1, 1, 2, 2), float("nan")))


def test_bad_pairs_name_what_was_given():
    with pytest.raises(DataError, match=r"an \(X, y\) pair of tensors or NumPy arrays.*got tuple of dict, list"):
        distox.purify(_model(), ({"x": 0.1}, [0]), verbose=False)
    with pytest.raises(DataError, match=r"images must be \(N, C, H, W\) \(or \(N, H, W\)\); got flat vectors \(1, 1\): 1 = "):
        distox.purify(_model(), ([[0.1]], [0]), verbose=False)  # lists are stacked, then their shape checked
    with pytest.raises(DataError, match="labels must be whole numbers"):
        distox.purify(_model(), (torch.rand(4, 1, 8, 8), np.array([0, 1, 0.5, 1])), verbose=False)


SINGLE_CLASS = ("the retain (clean) set holds images of one class only (label 0); purifying on it would teach "
                "the model to predict that class for every input: give clean images of at least 2 classes")


def test_single_class_retain_refused_alike_by_api_and_cli(tmp_path):
    """distox.purify and `distox purify` (whose validation split took the only image of the
    second class) refuse with the same message."""
    from PIL import Image
    from typer.testing import CliRunner

    from distox.cli import app

    b = make_bundle(n_train=40, side=8)
    x0 = b.train.x[b.train.y == 0][:10]
    with pytest.raises(DefenseError) as info:
        distox.purify(_model(), (x0, torch.zeros(len(x0), dtype=torch.long)), verbose=False, device="cpu")
    assert str(info.value) == SINGLE_CLASS

    folder = tmp_path / "clean"
    for i, img in enumerate(b.train.x[:11]):
        d = folder / ("class_0" if i < 10 else "class_1")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8), mode="L").save(d / f"{i}.png")
    (tmp_path / "m.py").write_text("from distox.models import create_model\n"
                                   "def factory(num_classes=4):\n"
                                   "    return create_model('small_cnn', num_classes, 1, width=4)\n")
    weights = tmp_path / "w.safetensors"
    save_model(weights, _model())
    res = CliRunner().invoke(app, ["purify", "--model", f"{tmp_path / 'm.py'}:factory", "--weights", str(weights),
                                   "--data", str(folder), "--num-classes", "4", "--val-fraction", "0.6", "-q"])
    assert res.exit_code == 2, res.output
    assert res.stderr == f"error: {SINGLE_CLASS}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "m.py", "w.safetensors"]  # nothing written


def test_without_eval_data_purify_says_the_accuracy_cost_was_not_measured(caplog):
    b = make_bundle(n_train=32, n_test=40)
    kw = dict(epochs=1, batch_size=16, device="cpu", preset="paper", label_check="off")
    with caplog.at_level("INFO", logger="distox.api"):
        distox.purify(_model(), (b.train.x, b.train.y), **kw)
        assert distox.api.NOT_MEASURED in [r.getMessage() for r in caplog.records]
        caplog.clear()
        distox.purify(_model(), (b.train.x, b.train.y), eval_data=(b.test.x, b.test.y), **kw)
        distox.purify(_model(), (b.train.x, b.train.y), verbose=False, **kw)  # silent means silent
        assert distox.api.NOT_MEASURED not in [r.getMessage() for r in caplog.records]
