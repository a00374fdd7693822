"""Precision, channels-last and torch.compile (distox.acceleration) reach the one training loop
from every entry point and do what they say there; at their defaults nothing changes: the
same weights, checkpoint identities, run specs and bench keys as before they existed."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import distox
from distox import acceleration, training
from distox.acceleration import Plan, PrecisionError
from distox.attacks import AttackError
from distox.bench import expand, load_config, parse_config
from distox.bench.config import BenchError
from distox.cli import app
from distox.defenses import DefenseError, create
from distox.experiment import AttackSpec, run_attack
from distox.models import create_model
from distox.training import LoopConfig, train

from .conftest import Interrupted, make_bundle, stop_at
from .test_experiment import tiny_spec
from .test_practitioner import shared  # noqa: F401  (fixture: a trained user model and an image folder)

runner = CliRunner()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", 4, 1, width=4)


def _data(n: int = 48):
    return make_bundle(n_train=n).train


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _recording_objective(seen: list):
    def objective(m, x, y):
        logits = m(x)
        seen.append((logits.dtype, x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4,
                     m))
        loss = nn.functional.cross_entropy(logits, y)
        return loss, {"loss": float(loss.detach())}
    return objective


# ---------------------------------------------------------------------------- precision in the loop
@pytest.mark.parametrize("precision, expected", [("bf16", torch.bfloat16), ("fp32", torch.float32),
                                                 ("auto", torch.float32)])
def test_precision_sets_the_forward_dtype_on_cpu(monkeypatch, precision, expected):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)  # any CI CPU
    calls = []
    real = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: calls.append(k.get("dtype")) or real(*a, **k))
    seen: list = []
    model = _model()
    data = _data()
    state = train(model, data.x, data.y, LoopConfig(epochs=1, batch_size=16, precision=precision),
                  objective=_recording_objective(seen), device="cpu", progress=False)
    assert {s[0] for s in seen} == {expected} and len(seen) == 3
    assert calls == ([torch.bfloat16] * 3 if precision == "bf16" else [])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay fp32
    assert state.precision == ("bf16" if precision == "bf16" else "fp32")


def test_explicit_fp32_and_auto_are_the_default_bit_for_bit():
    data = _data()
    results = []
    for kw in ({}, {"precision": "fp32"}, {"precision": "auto"}):
        model = _model()
        train(model, data.x, data.y, LoopConfig(epochs=2, batch_size=16, augment=True, **kw), device="cpu",
              progress=False)
        results.append(_weights(model))
    assert _same(results[0], results[1]) and _same(results[0], results[2])


def test_bf16_on_a_cpu_without_native_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    data = _data(16)
    with pytest.raises(PrecisionError, match="no native bf16"):
        train(_model(), data.x, data.y, LoopConfig(epochs=1, precision="bf16"), device="cpu", progress=False)


def test_fp16_on_cpu_is_a_clear_error_everywhere(shared):  # noqa: F811
    data = _data(16)
    with pytest.raises(PrecisionError, match="'fp16'.*needs a CUDA GPU"):
        train(_model(), data.x, data.y, LoopConfig(epochs=1, precision="fp16"), device="cpu", progress=False)
    with pytest.raises(PrecisionError, match="needs a CUDA GPU"):
        distox.purify(_model(), data, epochs=1, device="cpu", verbose=False, label_check="off", precision="fp16")
    res = runner.invoke(app, ["purify", "--model", shared["spec"], "--weights", str(shared["weights"]), "--data",
                              str(shared["folder"]), "--device", "cpu", "--epochs", "1", "--precision", "fp16", "-q",
                              "--out", str(shared["weights"].with_name("fp16.safetensors"))])
    assert res.exit_code == 2 and res.stderr.startswith("error: precision 'fp16'")
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_values_are_refused_where_they_are_given():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16"):
        LoopConfig(precision="fp8")
    with pytest.raises(DefenseError, match="precision must be one of"):
        create("d3", precision="half")
    with pytest.raises(DefenseError, match="channels_last must be true or false"):
        create("ft", channels_last="yes")
    with pytest.raises(AttackError, match="compile must be true or false"):
        AttackSpec("badnets", compile=1)
    with pytest.raises(BenchError, match="attack_settings.precision"):
        parse_config({"datasets": ["digits"], "attacks": ["badnets"], "attack_settings": {"precision": "fp8"}})


def _fp16_on_cpu(monkeypatch, scaler_kw: dict | None = None) -> list:
    """The fp16 plan (autocast + GradScaler) on the CPU, which CUDA alone gets in real use: the
    loss-scaling path of the loop runs here. Returns the scalers the loop made."""
    made: list = []
    monkeypatch.setattr(training, "resolve_precision", lambda p, dev, amp=True: Plan("fp16", torch.float16, True, "cpu"))

    def grad_scaler(self):
        made.append(torch.amp.GradScaler("cpu", **(scaler_kw or {})))
        return made[-1]

    monkeypatch.setattr(Plan, "grad_scaler", grad_scaler)
    return made


def test_fp16_scales_the_loss_and_resumes_bit_identical(monkeypatch, tmp_path):
    made = _fp16_on_cpu(monkeypatch)
    data = _data()
    cfg = LoopConfig(epochs=3, batch_size=16, seed=1)
    ref = _model()
    train(ref, data.x, data.y, cfg, device="cpu", progress=False)
    assert made[0].get_scale() == 65536.0 and made[0]._get_growth_tracker() == 9  # 9 unskipped steps
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Interrupted):
        train(_model(), data.x, data.y, cfg, device="cpu", progress=False, on_epoch_end=stop_at(2), checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["scaler"]["_growth_tracker"] == 3
    resumed = _model()
    train(resumed, data.x, data.y, cfg, device="cpu", progress=False, checkpoint=ckpt)
    assert _same(_weights(ref), _weights(resumed))
    assert made[-1]._get_growth_tracker() == 9  # the scaler's state came back from the checkpoint


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()` before `optimizer.step()`")
def test_fp16_overflow_skips_the_step_and_the_sam_perturbation(monkeypatch):
    """Every step overflows at a 2^100 scale: no update, and no NaN perturbation left in the
    weights by SAM's first pass."""
    made = _fp16_on_cpu(monkeypatch, {"init_scale": 2.0 ** 100})
    data = _data()
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, data.x, data.y, LoopConfig(epochs=1, batch_size=16, sam_rho=0.5, sam_adaptive=True),
          device="cpu", progress=False)
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert made[0].get_scale() == 2.0 ** 100 * 0.5 ** 3


def test_fp16_refuses_an_optimiser_that_does_not_hold_every_parameter(monkeypatch):
    _fp16_on_cpu(monkeypatch)
    model = _model()
    data = _data(16)
    params = list(model.parameters())
    opt = torch.optim.SGD(params[:1], lr=0.1)
    with pytest.raises(PrecisionError, match="param"):
        train(model, data.x, data.y, LoopConfig(epochs=1), params=params, optimizer=opt, device="cpu",
              progress=False)


# ---------------------------------------------------------------------------- channels-last, compile
def test_channels_last_reaches_batches_and_conv_weights_then_is_undone():
    seen: list = []
    layouts: list = []
    torch.manual_seed(0)
    model = create_model("small_cnn", 4, 3, width=4)  # 3 channels: a 1-channel batch is both layouts at once
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    data = make_bundle(n_train=48, channels=3).train

    def check(epoch, m):
        layouts.append(all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs))
        return {}

    train(model, data.x, data.y, LoopConfig(epochs=1, batch_size=16, channels_last=True, augment=True),
          objective=_recording_objective(seen), on_epoch_end=check, device="cpu", progress=False)
    assert [s[1] for s in seen] == [True] * 3 and layouts == [True]
    assert all(c.weight.is_contiguous() for c in convs)  # the returned model has the usual layout
    torch.manual_seed(0)
    plain = create_model("small_cnn", 4, 3, width=4)
    train(plain, data.x, data.y, LoopConfig(epochs=1, batch_size=16, augment=True), device="cpu", progress=False)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(_weights(plain).values(), _weights(model).values()))


class _Counting(nn.Module):
    """What the fake torch.compile returns: the model, counting calls (``fail``: a compiler
    that breaks after the model already ran once, BatchNorm statistics updated)."""

    def __init__(self, inner: nn.Module, fail: bool = False) -> None:
        super().__init__()
        self.inner, self.fail, self.calls = inner, fail, 0

    def forward(self, x):
        self.calls += 1
        out = self.inner(x)
        if self.fail:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return out


def test_compile_trains_through_the_compiled_module(monkeypatch):
    made: list = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: made.append(_Counting(m)) or made[-1])
    seen: list = []
    data = _data()
    model = _model()
    state = train(model, data.x, data.y, LoopConfig(epochs=2, batch_size=16, compile=True),
                  objective=_recording_objective(seen), device="cpu", progress=False)
    assert len(made) == 1 and made[0].inner is model and made[0].calls == 6
    assert all(s[2] is made[0] for s in seen) and state.compiled
    eager = _model()
    train(eager, data.x, data.y, LoopConfig(epochs=2, batch_size=16), device="cpu", progress=False)
    assert _same(_weights(eager), _weights(model))


def test_a_failing_compiler_falls_back_to_eager_from_the_same_state(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda m, **k: _Counting(m, fail=True))
    data = _data()
    model = _model()
    with caplog.at_level(logging.WARNING, logger="distox"):
        state = train(model, data.x, data.y, LoopConfig(epochs=2, batch_size=16, compile=True, augment=True),
                      device="cpu", progress=False)
    assert not state.compiled
    assert "torch.compile failed (InvalidCxxCompiler: No working C++ compiler found); training without" \
        in caplog.text
    eager = _model()
    train(eager, data.x, data.y, LoopConfig(epochs=2, batch_size=16, augment=True), device="cpu", progress=False)
    assert _same(_weights(eager), _weights(model))  # BatchNorm statistics of the failed call undone


def test_compile_unavailable_at_once_trains_eagerly(monkeypatch, caplog):
    def unsupported(m, **k):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    data = _data(16)
    with caplog.at_level(logging.WARNING, logger="distox"):
        state = train(_model(), data.x, data.y, LoopConfig(epochs=1, compile=True), device="cpu", progress=False)
    assert not state.compiled and "torch.compile is unavailable here (Dynamo is not supported" in caplog.text


# ---------------------------------------------------------------------------- every entry point
@pytest.fixture
def spy(monkeypatch):
    """Records what the loop was asked for (precision, compile, channels-last batches) and runs
    fp32 eagerly whatever it was, so that any machine runs these tests."""
    seen = {"precision": [], "compile": 0, "channels_last": 0}
    real_resolve, real_cl = training.resolve_precision, training.to_channels_last
    # a defense refuses bf16 up front on a CPU without native bf16 (AVX2-only CPUs): any CI CPU passes here
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)

    def resolve(precision, device, amp=True):
        seen["precision"].append(precision)
        return real_resolve("fp32", device, amp)

    def to_cl(x):
        seen["channels_last"] += 1
        return real_cl(x)

    def compile_model(m):
        seen["compile"] += 1
        return m

    monkeypatch.setattr(training, "resolve_precision", resolve)
    monkeypatch.setattr(training, "to_channels_last", to_cl)
    monkeypatch.setattr(training, "compile_model", compile_model)
    return seen


FAST = {"d3": {}, "ft": {}, "ft-sam": {}, "sau": {"pgd_steps": 1}}


@pytest.mark.parametrize("method", sorted(FAST))
def test_every_defense_passes_the_options_to_the_loop(spy, method):
    retain = _data(32)
    d = create(method, epochs=1, batch_size=16, precision="bf16", channels_last=True, compile=True, **FAST[method])
    result = d(_model(), retain, device="cpu", progress=False)
    assert spy["precision"] == ["bf16"] and spy["compile"] == 1 and spy["channels_last"] == 2
    assert {k: result.config[k] for k in ("precision", "channels_last", "compile")} == \
        {"precision": "bf16", "channels_last": True, "compile": True}
    plain = create(method, epochs=1).get_params()
    assert not {"precision", "channels_last", "compile"} & set(plain)  # defaults are not recorded


def test_d3_auto_trials_keep_the_options(spy):
    retain = _data(40)
    create("d3", epochs=1, batch_size=16, lmd="auto", auto={"ladder": [1.0], "search_epochs": 1},
           precision="bf16")(_model(), retain, device="cpu", progress=False)
    assert spy["precision"] == ["bf16", "bf16"]  # the λ trial and the final run


def test_attack_runs_pass_the_options_to_the_loop_and_record_them(spy, tmp_path):
    spec = tiny_spec(epochs=1, precision="bf16", channels_last=True, compile=True)
    run_attack(spec, tmp_path / "run", device="cpu", progress=False)
    assert spy["precision"] == ["bf16"] and spy["compile"] == 1 and spy["channels_last"] == 4
    written = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert {k: written[k] for k in ("precision", "channels_last", "compile")} == \
        {"precision": "bf16", "channels_last": True, "compile": True}
    assert AttackSpec.from_dict(written) == spec
    assert not {"precision", "channels_last", "compile"} & set(tiny_spec().to_dict())


def test_cli_flags_reach_defend_purify_and_attack(spy, tmp_path, shared):  # noqa: F811
    run = tmp_path / "run"
    res = runner.invoke(app, ["attack", "badnets", "--out", str(run), "--dataset", "digits", "--epochs", "1",
                              "--train-subset", "64", "--test-subset", "32", "--width", "4", "--device", "cpu",
                              "-q", "--precision", "bf16", "--compile"])
    assert res.exit_code == 0, res.output
    assert spy["precision"] == ["bf16"] and spy["compile"] == 1 and spy["channels_last"] == 0
    res = runner.invoke(app, ["defend", "ft", str(run), "--epochs", "1", "--count", "24", "--device", "cpu", "-q",
                              "--no-track", "--channels-last", "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    assert spy["precision"][-1] == "fp32" and spy["channels_last"] > 0 and spy["compile"] == 1
    record = json.loads((run / "defense" / "ft" / "defense.json").read_text())
    assert record["spec"]["params"] == {"precision": "fp32", "channels_last": True}
    res = runner.invoke(app, ["purify", "--model", shared["spec"], "--weights", str(shared["weights"]), "--data",
                              str(shared["folder"]), "--device", "cpu", "--epochs", "1", "-q", "--compile",
                              "--out", str(tmp_path / "p.safetensors")])
    assert res.exit_code == 0, res.output
    assert spy["compile"] == 2
    res = runner.invoke(app, ["defend", "ft", str(run), "--precision", "bf16", "-p", "precision=fp32"])
    assert res.exit_code == 2 and "precision given both as --precision and --param" in res.stderr


# ---------------------------------------------------------------------------- identities and keys
def test_defaults_keep_checkpoint_identities_specs_and_bench_keys(monkeypatch):
    """Pinned from the code before these options existed (commit 6c6c2bd): at their defaults
    every checkpoint identity, run spec and bench key is what it was. D3's default preset gained
    the overlay augmentation later (``blend``, BENCHMARKS.md "Fourth round") and then its BatchNorm
    rule (``norm_rule``, "Sixth round"), its steps floor (``min_steps``, "Seventh round") and its
    input pruning (``input_prune``, "Ninth round") and its BatchNorm re-estimation rule
    (``bn_recalibrate="auto"``, "Fifteenth round"); ``blend=0, norm_rule=False, min_steps=0,
    input_prune=False, bn_recalibrate=False`` is the preset as it was, and keeps its identity.
    D3's revision 3 (its layer selections take ``nn.MultiheadAttention``'s projections, "Seventeenth
    round") changes its identities and bench keys on purpose: at revision 2 they are as pinned; so does
    revision 4 (the default's soft targets on models without BatchNorm, "Thirtieth round"), revision 5 (with
    BatchNorm too, "Thirty-first round"), revision 6 (lr 0.03 there too, "Thirty-third round") and revision 7 (the
    soft targets on the copies only, "Thirty-fifth round"). Since the
    twenty-fifth round the default's distance is on the classifier, with adversarial copies: ``layers="all",
    shared_radius=0`` undo that."""
    from distox import defenses

    assert defenses.get("d3").revision == 7
    monkeypatch.setattr(defenses.get("d3"), "revision", 2)
    torch.manual_seed(1)
    model = create_model("small_cnn", 4, 1, (0.5,), (0.5,), width=4)
    retain = make_bundle(n_train=32).train
    pinned = {"d3": ("da64492451420395", "7cbad8bd155f7917"), "ft": ("0c53d5ccf49265f6", "c7ee3201fe80ace0"),
              "ft-sam": ("fdcd36569bbfcdda", "667cf127f173f544"), "sau": ("d9419cbdbd4d9eaa", "e4a369b8c64f7c3c")}
    before_overlay = {"d3": {"blend": 0.0, "norm_rule": False, "min_steps": 0, "input_prune": False,
                             "bn_recalibrate": False, "layers": "all", "shared_radius": 0.0}}
    for name, (tracked, untracked) in pinned.items():
        d = create(name, epochs=2, **before_overlay.get(name, {}))
        assert (d.identity(model, retain, True)[:16], d.identity(model, retain, False)[:16]) == (tracked, untracked)
        assert d.identity(model, retain, True, eval_every=1) == d.identity(model, retain, True)
        assert d.identity(model, retain, False, eval_every=3) == d.identity(model, retain, False)
        assert d.identity(model, retain, True, eval_every=3) != d.identity(model, retain, True)
        for change in ({"precision": "fp32"}, {"channels_last": True}, {"compile": True}):
            assert create(name, epochs=2, **before_overlay.get(name, {}), **change).identity(model, retain, True)[:16] != tracked
    for later in ({}, {"blend": 0.0}, {"norm_rule": False}, {"input_prune": False}, {"bn_recalibrate": False}):
        # the later options are in the key
        assert create("d3", epochs=2, **later).identity(model, retain, True)[:16] != pinned["d3"][0]
    assert sorted(AttackSpec("badnets").to_dict()) == sorted(
        ["attack", "attack_kwargs", "augment", "batch_size", "clean_reference", "data_root", "dataset", "epochs",
         "flip", "lr", "mode", "model", "model_kwargs", "momentum", "poison_rate", "sam_rho", "seed", "target",
         "test_subset", "train_subset", "weight_decay"])
    assert [c.key for c in expand(load_config("smoke")).cells] == [
        "d6e5e77d8483b271", "e784ee8deae4ee21", "467f22af347fa4cb", "a0496aee914602d2", "cf32d4986da924db",
        "65eb573e474ebca9"]
    monkeypatch.undo()  # revision 5: D3's identity changes, nothing else's
    assert create("d3", epochs=2, **before_overlay["d3"]).identity(model, retain, True)[:16] != pinned["d3"][0]
    assert create("ft", epochs=2).identity(model, retain, True)[:16] == pinned["ft"][0]


GRID = {"datasets": ["digits"], "models": [{"name": "small_cnn", "kwargs": {"width": 4}}],
        "attack_settings": {"epochs": 1}, "defense_settings": {"epochs": 1},
        "attacks": ["badnets"], "defenses": ["none", "ft", {"name": "d3", "options": {"precision": "fp32"}}]}


def _grid(**settings):
    d = json.loads(json.dumps(GRID))
    for part, values in settings.items():
        d[part].update(values)
    return expand(parse_config(d))


def test_bench_settings_reach_every_cell_and_only_non_defaults_change_keys():
    base = _grid()
    same = _grid(attack_settings={"precision": "auto", "channels_last": False},
                 defense_settings={"compile": False})
    assert [c.key for c in same.cells] == [c.key for c in base.cells]
    fast = _grid(attack_settings={"channels_last": True}, defense_settings={"precision": "bf16", "compile": True})
    assert fast.attacks[0].config["channels_last"] is True and fast.attacks[0].key != base.attacks[0].key
    ft, d3 = fast.defenses
    assert ft.config["defense"]["params"] == {"precision": "bf16", "compile": True}
    assert d3.config["defense"]["params"] == {"precision": "fp32", "compile": True}  # the entry's own wins
    assert base.defenses[1].config["defense"]["params"] == {"precision": "fp32"}
