"""On-disk dataset formats: tiny files written in each REAL format, loaded through load_dataset.

CIFAR batches are hand-assembled Python-2 protocol-2 pickles, opcode for opcode what the
official ``cifar-10-python.tar.gz`` holds; GTSRB gets .ppm files and ';'-separated GT CSVs;
Tiny-ImageNet gets wnids.txt, JPEG/PNG files and val_annotations.txt; folders get PNGs.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distox.data import DataError, load_dataset, select_retain, stratified_split
from distox.data.cifar import safe_load_pickle


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTOX_DATA", raising=False)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- CIFAR (pickles)


def _py2_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])  # BININT1
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)  # BININT2
    return b"J" + struct.pack("<i", v)  # BININT


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str``: SHORT_BINSTRING / BINSTRING (loaded as bytes with encoding='bytes')."""
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<i", len(b)) + b


def _py2_uint8_array(a: np.ndarray) -> bytes:
    """numpy 1.x's pickle of a C-contiguous uint8 array, as Python 2 cPickle writes it."""
    assert a.dtype == np.uint8 and a.flags.c_contiguous
    shape = b"(" + b"".join(_py2_int(d) for d in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
             b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b")
            + b"\x87R(K\x01" + shape + dtype + b"\x89" + _py2_str(a.tobytes()) + b"tb")


def _py2_value(v) -> bytes:
    if isinstance(v, np.ndarray):
        return _py2_uint8_array(v)
    if isinstance(v, bytes):
        return _py2_str(v)
    if isinstance(v, int):
        return _py2_int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(e) for e in v) + b"e"  # EMPTY_LIST MARK .. APPENDS
    raise TypeError(type(v))


def py2_pickle(d: dict) -> bytes:
    """Protocol-2 pickle of a dict with Python 2 ``str`` keys, as the CIFAR archives hold."""
    items = b"".join(_py2_str(k) + _py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + items + b"u."


def test_py2_pickle_helper_matches_the_archive_opcodes() -> None:
    """The hand-written writer must produce a valid pickle a plain loader reads identically."""
    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    blob = py2_pickle({b"data": arr, b"labels": [3, 300, 70000], b"batch_label": b"x" * 300})
    assert blob.startswith(b"\x80\x02}(U\x04data" + b"cnumpy.core.multiarray\n_reconstruct\n")
    plain = pickle.loads(blob, encoding="bytes")  # trusted bytes we just built
    assert np.array_equal(plain[b"data"], arr) and plain[b"labels"] == [3, 300, 70000]


def _cifar_batches(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, list[int]]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    return data, labels


def write_cifar10(root: Path, n: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng(seed)
    written = {}
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = _cifar_batches(rng, n, 10)
        written[fname] = (data, labels)
        (folder / fname).write_bytes(py2_pickle({
            b"batch_label": fname.encode(), b"labels": labels, b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
             b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(
        py2_pickle({b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072}))
    return written


def test_cifar10_real_format_roundtrip(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    b = load_dataset("cifar10", data_root=tmp_path)
    assert b.train.x.shape == (20, 3, 32, 32) and b.test.x.shape == (4, 3, 32, 32)
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    assert 0.0 <= float(b.train.x.min()) and float(b.train.x.max()) <= 1.0
    train_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert b.train.y.tolist() == train_labels and b.test.y.tolist() == written["test_batch"][1]
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    i, c, r, col = 7, 2, 5, 30
    assert b.train.x[i, c, r, col].item() == pytest.approx(train_data[i, c * 1024 + r * 32 + col] / 255)
    assert torch.equal((b.train.x * 255).round().to(torch.uint8).reshape(20, 3072),
                       torch.from_numpy(train_data))
    assert b.num_classes == 10 and b.class_names[0] == "airplane" and b.class_names[9] == "truck"
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.247, 0.243, 0.261)


def test_cifar100_fine_labels_and_meta(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = _rng(1)
    for fname, n in (("train", 6), ("test", 3)):
        data, fine = _cifar_batches(rng, n, 100)
        (folder / fname).write_bytes(py2_pickle({
            b"filenames": [b"f.png"] * n, b"batch_label": fname.encode(),
            b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine], b"data": data,
        }))
    names = [f"class{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(py2_pickle({b"fine_label_names": names,
                                              b"coarse_label_names": names[:20]}))
    b = load_dataset("cifar100", data_root=tmp_path)
    assert b.train.x.shape == (6, 3, 32, 32) and len(b.test) == 3
    assert b.num_classes == 100 and b.class_names[42] == "class42"
    assert b.mean == (0.5071, 0.4865, 0.4409) and b.std == (0.2673, 0.2564, 0.2762)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python3_repacks_load(tmp_path: Path, protocol: int) -> None:
    """Batches re-pickled by Python 3 numpy (codecs.encode / _frombuffer reductions) load too."""
    write_cifar10(tmp_path)
    data = _rng(5).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as fh:
        pickle.dump({b"data": data, b"labels": [1, 2, 3]}, fh, protocol=protocol)
    b = load_dataset("cifar10", data_root=tmp_path)
    assert b.test.y.tolist() == [1, 2, 3]
    assert torch.equal((b.test.x * 255).round().to(torch.uint8).reshape(3, 3072), torch.from_numpy(data))


class _Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_malicious_cifar_pickle_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": _Evil(f"touch {marker}"), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load .*data_batch_3.*system.*not allowed"):
        load_dataset("cifar10", data_root=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    {b"data": np.array([1, "x"], dtype=object)},  # object array
    {b"f": eval},  # builtins.eval
    {b"f": pickle.loads},  # nested unpickling
])
def test_safe_unpickler_refuses_anything_beyond_arrays(tmp_path: Path, payload: dict) -> None:
    path = tmp_path / "blob"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="refusing to load"):
        safe_load_pickle(path)


def test_truncated_cifar_batch_is_a_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset("cifar10", data_root=tmp_path)


def test_search_order_data_root_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    wa = write_cifar10(a / "cifar10", seed=1)  # <root>/<name>/cifar-10-batches-py
    wb = write_cifar10(b, seed=2)  # <root>/cifar-10-batches-py
    monkeypatch.setenv("DISTOX_DATA", str(b))
    first = load_dataset("cifar10", data_root=a)
    assert first.test.y.tolist() == wa["test_batch"][1] and first.source.startswith(str(a))
    second = load_dataset("cifar10")
    assert second.test.y.tolist() == wb["test_batch"][1] and second.source.startswith(str(b))
    assert wa["test_batch"][1] != wb["test_batch"][1] or not np.array_equal(
        wa["test_batch"][0], wb["test_batch"][0])


@pytest.mark.parametrize("name,hint", [
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
    ("gtsrb", "GTSRB"), ("tiny-imagenet", "tiny-imagenet-200"),
])
def test_missing_dataset_names_paths_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           name: str, hint: str) -> None:
    monkeypatch.setenv("DISTOX_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        load_dataset(name, data_root=tmp_path / "given")
    msg = str(err.value)
    for p in (tmp_path / "given" / name, tmp_path / "given", tmp_path / "env" / name, tmp_path / "env"):
        assert str(p) in msg
    assert msg.index(str(tmp_path / "given")) < msg.index(str(tmp_path / "env"))
    assert "How to get it" in msg and hint in msg


# --------------------------------------------------------------------------- GTSRB (.ppm + CSV)

_GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def _rand_image(rng: np.random.Generator, w: int, h: int, grey: bool = False) -> Image.Image:
    if grey:
        return Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8), "L")
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def write_gtsrb(root: Path) -> dict[str, list]:
    """Classes 0, 1 and 12 with CSVs (12 without CSV); test images listed in GT-final_test.csv."""
    rng = _rng(3)
    base = root / "GTSRB"
    train_imgs, train_labels = [], []
    for cls, sizes in ((0, [(32, 32), (40, 35)]), (1, [(32, 32)]), (12, [(29, 31)])):
        d = base / "Train" / f"{cls:05d}"
        d.mkdir(parents=True)
        rows = [_GT_HEADER]
        for j, (w, h) in enumerate(sizes):
            im = _rand_image(rng, w, h)
            fname = f"{j:05d}_{j:05d}.ppm"
            im.save(d / fname)
            rows.append(f"{fname};{w};{h};5;5;{w - 5};{h - 5};{cls}")
            train_imgs.append(im)
            train_labels.append(cls)
        if cls != 12:
            (d / f"GT-{cls:05d}.csv").write_text("\n".join(rows) + "\n")
    test_dir = base / "Test"
    test_dir.mkdir(parents=True)
    rows, test_imgs, test_labels = [_GT_HEADER], [], []
    for j, (w, h, cls) in enumerate([(32, 32, 42), (50, 45, 0), (32, 32, 1)]):
        im = _rand_image(rng, w, h)
        im.save(test_dir / f"{j:05d}.ppm")
        rows.append(f"{j:05d}.ppm;{w};{h};6;6;{w - 6};{h - 6};{cls}")
        test_imgs.append(im)
        test_labels.append(cls)
    (test_dir / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return dict(train=train_imgs, train_y=train_labels, test=test_imgs, test_y=test_labels)


def _as_uint8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_gtsrb_ppm_and_csv(tmp_path: Path) -> None:
    w = write_gtsrb(tmp_path)
    b = load_dataset("gtsrb", data_root=tmp_path, progress=False)
    assert b.train.x.shape == (4, 3, 32, 32) and b.test.x.shape == (3, 3, 32, 32)
    assert b.train.y.tolist() == w["train_y"] and b.test.y.tolist() == w["test_y"]
    assert b.num_classes == 43 and b.mean == (0.0, 0.0, 0.0) and b.std == (1.0, 1.0, 1.0)
    assert 0.0 <= float(b.train.x.min()) and float(b.train.x.max()) <= 1.0
    # 32×32 images are exact; others are the whole image (no ROI crop) resized bilinearly.
    assert np.array_equal(_as_uint8(b.train.x[0]), np.asarray(w["train"][0]))
    assert np.array_equal(_as_uint8(b.test.x[0]), np.asarray(w["test"][0]))
    resized = np.asarray(w["train"][1].resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(_as_uint8(b.train.x[1]), resized)
    roi_crop = np.asarray(w["train"][1].crop((5, 5, 35, 30)).resize((32, 32), Image.Resampling.BILINEAR))
    assert not np.array_equal(_as_uint8(b.train.x[1]), roi_crop)


def test_gtsrb_bad_csv_is_a_data_error(tmp_path: Path) -> None:
    write_gtsrb(tmp_path)
    csv_path = tmp_path / "GTSRB" / "Test" / "GT-final_test.csv"
    csv_path.write_text(_GT_HEADER + "\n00000.ppm;32;32;6;6;26;26;43\n")
    with pytest.raises(DataError, match="ClassId 43 outside"):
        load_dataset("gtsrb", data_root=tmp_path, progress=False)
    csv_path.write_text(_GT_HEADER + "\nmissing.ppm;32;32;6;6;26;26;1\n")
    with pytest.raises(DataError, match="missing image"):
        load_dataset("gtsrb", data_root=tmp_path, progress=False)


# --------------------------------------------------------------------------- Tiny-ImageNet

_WNIDS = ["n09256479", "n01443537", "n02124075"]  # unsorted, as in the real wnids.txt


def write_tiny(root: Path, reorganised_val: bool = False) -> dict[str, list]:
    rng = _rng(4)
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(_WNIDS) + "\n")
    train = {}
    for k, wnid in enumerate(_WNIDS):
        d = base / "train" / wnid / "images"
        d.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        png = _rand_image(rng, 64, 64)
        png.save(d / f"{wnid}_0.png")  # lossless: exact check
        _rand_image(rng, 64, 64, grey=(k == 0)).save(d / f"{wnid}_1.JPEG", quality=95)
        train[wnid] = png
    val = []
    for j, wnid in enumerate([_WNIDS[2], _WNIDS[0], _WNIDS[1], _WNIDS[2]]):
        im = _rand_image(rng, 64, 64)
        val.append((f"val_{j}.png", wnid, im))
    if reorganised_val:
        for name, wnid, im in val:
            (base / "val" / wnid / "images").mkdir(parents=True, exist_ok=True)
            im.save(base / "val" / wnid / "images" / name)
    else:
        (base / "val" / "images").mkdir(parents=True)
        lines = []
        for name, wnid, im in val:
            im.save(base / "val" / "images" / name)
            lines.append(f"{name}\t{wnid}\t0\t3\t60\t61")
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return dict(train=train, val=val)


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    w = write_tiny(tmp_path)
    b = load_dataset("tiny-imagenet", data_root=tmp_path, progress=False)
    order = sorted(_WNIDS)
    assert b.class_names == order and b.num_classes == 3
    assert b.train.x.shape == (6, 3, 64, 64) and b.test.x.shape == (4, 3, 64, 64)
    assert b.train.y.tolist() == [0, 0, 1, 1, 2, 2]  # sorted wnids, as ImageFolder orders them
    assert b.test.y.tolist() == [order.index(wn) for _, wn, _ in w["val"]]
    assert b.mean == (0.4802, 0.4481, 0.3975) and b.std == (0.2302, 0.2265, 0.2262)
    # Per class the sorted files are <wnid>_0.png then <wnid>_1.JPEG.
    for k, wnid in enumerate(order):
        assert np.array_equal(_as_uint8(b.train.x[2 * k]), np.asarray(w["train"][wnid]))
    for j, (_, _, im) in enumerate(w["val"]):
        assert np.array_equal(_as_uint8(b.test.x[j]), np.asarray(im))
    grey_jpeg = b.train.x[2 * order.index(_WNIDS[0]) + 1]  # this JPEG was saved greyscale
    assert torch.equal(grey_jpeg[0], grey_jpeg[1]) and torch.equal(grey_jpeg[1], grey_jpeg[2])
    assert 0.0 <= float(b.train.x.min()) and float(b.train.x.max()) <= 1.0


def test_tiny_imagenet_reorganised_val(tmp_path: Path) -> None:
    w = write_tiny(tmp_path, reorganised_val=True)
    b = load_dataset("tiny-imagenet", data_root=tmp_path / "tiny-imagenet-200", progress=False)
    order = sorted(_WNIDS)
    assert sorted(b.test.y.tolist()) == sorted(order.index(wn) for _, wn, _ in w["val"])
    assert b.test.x.shape == (4, 3, 64, 64)


def test_tiny_unknown_wnid_in_annotations(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.png\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="n99999999 is not in wnids.txt"):
        load_dataset("tiny-imagenet", data_root=tmp_path, progress=False)


# --------------------------------------------------------------------------- image folders


def write_folder(root: Path, grey: bool = False) -> dict[str, list[Image.Image]]:
    rng = _rng(6)
    spec = {"zebra": [(8, 8), (8, 8), (8, 8)], "ant": [(8, 8), (10, 6), (8, 8), (8, 8)]}
    out = {}
    for cls, sizes in spec.items():
        (root / cls).mkdir(parents=True)
        out[cls] = []
        for j, (w, h) in enumerate(sizes):
            im = _rand_image(rng, w, h, grey=grey)
            im.save(root / cls / f"{j}.png")
            out[cls].append(im)
    (root / "ant" / "notes.txt").write_text("not an image")
    return out


def test_folder_rgb_classes_sizes_and_split(tmp_path: Path) -> None:
    w = write_folder(tmp_path / "pics")
    b = load_dataset(f"folder:{tmp_path / 'pics'}", progress=False)
    assert b.class_names == ["ant", "zebra"] and b.num_classes == 2
    assert len(b.train) + len(b.test) == 7 and b.train.x.shape[1:] == (3, 8, 8)
    x = torch.cat([b.train.x, b.test.x])
    y = torch.cat([b.train.y, b.test.y])
    assert sorted(y.tolist()) == [0, 0, 0, 0, 1, 1, 1]
    assert sorted(b.test.y.tolist()) == [0, 1]  # round(0.2 * 4) = 1 and round(0.2 * 3) = 1
    # Every 8×8 source image appears exactly; the 10×6 one is resized to 8×8.
    got = {_as_uint8(x[i]).tobytes() for i in range(len(y))}
    for cls in w:
        for im in w[cls]:
            want = im if im.size == (8, 8) else im.resize((8, 8), Image.Resampling.BILINEAR)
            assert np.asarray(want).tobytes() in got
    assert b.mean == pytest.approx(tuple(b.train.x.mean(dim=(0, 2, 3)).tolist()), abs=1e-5)
    again = load_dataset(f"folder:{tmp_path / 'pics'}", progress=False)
    assert torch.equal(again.test.x, b.test.x)
    other = load_dataset(f"folder:{tmp_path / 'pics'}", seed=1, test_fraction=0.5, progress=False)
    assert len(other.test) == 4  # round(0.5 * 4) = 2 and round(0.5 * 3) = 2 (1.5 rounds to 2)


def test_folder_greyscale_and_image_size(tmp_path: Path) -> None:
    write_folder(tmp_path / "g", grey=True)
    b = load_dataset(f"folder:{tmp_path / 'g'}", progress=False)
    assert b.train.x.shape[1:] == (1, 8, 8) and len(b.mean) == 1
    rgb = load_dataset(f"folder:{tmp_path / 'g'}", grayscale=False, image_size=(5, 7), progress=False)
    assert rgb.train.x.shape[1:] == (3, 5, 7)
    assert torch.equal(rgb.train.x[:, 0], rgb.train.x[:, 2])


def test_folder_16bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    for cls, value in (("dark", 257 * 10), ("bright", 65535)):
        (tmp_path / "deep" / cls).mkdir(parents=True)
        for j in range(2):
            arr = np.full((3, 3), value, dtype=np.uint16)
            Image.fromarray(arr).save(tmp_path / "deep" / cls / f"{j}.png")
    b = load_dataset(f"folder:{tmp_path / 'deep'}", test_fraction=0.0, progress=False)
    assert b.class_names == ["bright", "dark"] and b.train.x.shape == (4, 1, 3, 3)
    assert (b.train.x[:2] * 255).round().unique().tolist() == [255.0]
    assert (b.train.x[2:] * 255).round().unique().tolist() == [10.0]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'flat'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    (tmp_path / "empty" / "b" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "only" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "only" / "b.png")
    with pytest.raises(DataError, match="only one class"):
        load_dataset(f"folder:{tmp_path / 'one'}", progress=False)
    for cls in ("c1", "c2", "c3"):
        (tmp_path / "few" / cls).mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "few" / "c1" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "few" / "c2" / "a.png")
    with pytest.raises(DataError, match=r"fewer images \(2\) than classes \(3\).*c3"):
        load_dataset(f"folder:{tmp_path / 'few'}", progress=False)
    (tmp_path / "few" / "c3" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*bad.png"):
        load_dataset(f"folder:{tmp_path / 'few'}", progress=False)


def test_folder_threaded_read_keeps_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over several 256-image chunks on a thread pool, image i still lands in slot i."""
    import distox.data.folder as folder_mod

    monkeypatch.setattr(folder_mod, "_workers", lambda: 3)
    for cls in ("a", "b"):
        (tmp_path / "many" / cls).mkdir(parents=True)
        for j in range(160):
            value = j + (0 if cls == "a" else 90)
            Image.new("L", (4, 4), color=value).save(tmp_path / "many" / cls / f"{j:03d}.png")
    b = load_dataset(f"folder:{tmp_path / 'many'}", test_fraction=0.0, progress=False)
    assert len(b.test) == 0 and b.train.x.shape == (320, 1, 4, 4)
    values = (b.train.x[:, 0, 0, 0] * 255).round().long()
    assert values.tolist() == list(range(160)) + [j + 90 for j in range(160)]
    assert b.train.y.tolist() == [0] * 160 + [1] * 160
    (tmp_path / "many" / "b" / "159.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image .*159.png"):
        load_dataset(f"folder:{tmp_path / 'many'}", grayscale=True, image_size=4, progress=False)


# --------------------------------------------------------------------------- IDX (MNIST format)


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_idx_gz_roundtrip(tmp_path: Path) -> None:
    rng = _rng(7)
    d = tmp_path / "mnist"
    d.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 2], dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        (d / f"{stem}.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    b = load_dataset("mnist", data_root=tmp_path)
    assert b.train.x.shape == (5, 1, 28, 28) and b.test.x.shape == (2, 1, 28, 28)
    assert b.train.y.tolist() == [0, 9, 3, 3, 1] and b.test.y.tolist() == [7, 2]
    assert torch.equal((b.train.x[:, 0] * 255).round().to(torch.uint8),
                       torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rubbish"))
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("mnist", data_root=tmp_path)


# --------------------------------------------------------------------------- retain / split


def test_select_retain_seeded_ratio_count_minimum() -> None:
    a = select_retain(1000, ratio=0.05, seed=3)
    assert len(a) == 50 and torch.equal(a, select_retain(1000, ratio=0.05, seed=3))
    assert not torch.equal(a, select_retain(1000, ratio=0.05, seed=4))
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == 50
    assert 0 <= int(a.min()) and int(a.max()) < 1000
    assert len(select_retain(1000, count=7, seed=0)) == 7
    assert len(select_retain(100, ratio=0.01, minimum=5)) == 5
    assert len(select_retain(10, count=50)) == 10
    for bad in (dict(), dict(ratio=0.1, count=3), dict(ratio=0.0), dict(ratio=1.5), dict(count=0)):
        with pytest.raises(ValueError):
            select_retain(100, **bad)


def test_stratified_split_per_class_and_seeded() -> None:
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3])
    tr, te = stratified_split(y, 0.2, seed=0)
    assert sorted(torch.cat([tr, te]).tolist()) == list(range(len(y)))
    assert set(tr.tolist()).isdisjoint(te.tolist())
    counts = torch.bincount(y[te], minlength=4).tolist()
    assert counts == [2, 1, 1, 0]  # round(0.2·n), at least one each side for classes with ≥ 2
    assert torch.bincount(y[tr], minlength=4).tolist() == [8, 4, 1, 1]
    tr2, te2 = stratified_split(y, 0.2, seed=0)
    assert torch.equal(te, te2)
    assert any(not torch.equal(te, stratified_split(y, 0.2, seed=s)[1]) for s in range(1, 5))
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError):
            stratified_split(y, bad)
