"""The seventeenth round of the default study (BENCHMARKS.md): D3's ``average`` option, the mean of
the weights over a run's last steps (stochastic weight averaging, :mod:`distox.defenses.weight_average`)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distox.data.core import ImageSplit
from distox.defenses import DefenseError
from distox.defenses.bn_stats import reestimate_batchnorm
from distox.defenses.d3 import D3, PRESETS
from distox.defenses.weight_average import WeightAverage, averaging_start
from distox.training import LoopConfig, train

from .test_d3_options import same, tiny_model, tiny_retain
from .test_defense_fp import resumes_bit_identical


def test_averaging_starts_so_that_the_last_fraction_of_steps_is_averaged():
    assert averaging_start(100, 0.25) == 75 and averaging_start(100, 1.0) == 0
    assert averaging_start(10, 0.01) == 9  # at least the last step
    assert averaging_start(7, 0.5) == 3  # ceil(3.5) = 4 steps averaged
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            averaging_start(10, bad)


def test_the_average_is_the_mean_of_the_weights_after_each_averaged_step():
    model, retain = tiny_model(), tiny_retain()
    params = list(model.parameters())
    average = WeightAverage(params, start_step=4)
    seen: list[list[torch.Tensor]] = []

    def after_step(m: nn.Module) -> None:
        average(m)
        seen.append([p.detach().clone() for p in params])

    config = LoopConfig(epochs=2, batch_size=8, lr=0.05)
    train(model, retain.x, retain.y, config, after_step=after_step, device="cpu", progress=False)
    assert len(seen) == 12 and average.count == 8
    assert average.apply() == 8
    for i, p in enumerate(params):
        expected = torch.stack([s[i] for s in seen[4:]]).double().mean(0).float()
        assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_the_average_survives_a_checkpoint_round_trip():
    model = tiny_model()
    a = WeightAverage(model.parameters(), start_step=1)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        a(model)
    b = WeightAverage(tiny_model().parameters(), start_step=1)
    b.load_state_dict(a.state_dict())
    assert (b.step, b.count) == (3, 2) and all(torch.equal(x, y) for x, y in zip(a.sums, b.sums))
    with pytest.raises(ValueError, match="holds"):
        WeightAverage(list(model.parameters())[:2], 0).load_state_dict(a.state_dict())


def test_d3_returns_the_projected_mean_with_statistics_of_the_averaged_weights():
    """The selected weights keep their starting norms (Eq. 2), the averaged steps are the last
    fraction of the run, and BatchNorm's running statistics are those of the returned weights on
    the plain retain images."""
    model, retain = tiny_model(), tiny_retain()
    d3 = D3(preset="all-layers", epochs=3, batch_size=16, average=0.5)
    result = d3(model, retain, device="cpu", progress=False)
    assert result.config["average"] == 0.5
    assert result.config["average_resolved"] == {"steps": 5, "batchnorm_reestimated": True}  # ceil(0.5 * 9)
    before, after = dict(model.named_parameters()), dict(result.model.named_parameters())
    for name in D3(layers="all").selected(model):
        assert float(after[name].detach().norm()) == pytest.approx(float(before[name].detach().norm()), rel=1e-5)
    again = copy.deepcopy(result.model)
    reestimate_batchnorm(again, retain.x, "cpu")
    assert same(again, result.model)
    plain = D3(epochs=3, batch_size=16)(model, retain, device="cpu", progress=False).model
    assert not same(plain, result.model)


def test_without_batchnorm_the_mean_is_returned_without_a_statistics_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
    result = D3(epochs=2, batch_size=16, average=1.0)(model, tiny_retain(), device="cpu", progress=False)
    assert result.config["average_resolved"] == {"steps": 6, "batchnorm_reestimated": False}


def test_an_interrupted_averaging_run_resumes_bit_identical(tmp_path, monkeypatch):
    """The running mean is checkpointed with the epoch: resumed, the run returns the same mean."""
    resumes_bit_identical(lambda: D3(epochs=3, batch_size=16, average=0.75), tiny_model(), tiny_retain(), tmp_path,
                          monkeypatch)


def test_average_is_off_in_every_preset_recorded_only_when_set_and_checked():
    for preset in PRESETS:
        assert D3(preset=preset).average == 0.0 and "average" not in D3(preset=preset).get_params()
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(DefenseError, match="average must be"):
            D3(average=bad)
    with pytest.raises(DefenseError, match="set one of them"):
        D3(average=0.5, select="heldout")


# ---------------------------------------------------------------------------- attention in nn.MultiheadAttention
def twin_with_torch_attention(vit: nn.Module) -> nn.Module:
    """The same function as ``vit`` (a SmallViT), each block rewritten as PyTorch's pre-norm
    ``nn.TransformerEncoderLayer``: the packed ``qkv`` Linear becomes ``in_proj_weight``/``bias``."""
    twin = copy.deepcopy(vit)
    for i, block in enumerate(vit.blocks):
        dim = block.norm1.normalized_shape[0]
        layer = nn.TransformerEncoderLayer(dim, block.attn.heads, block.mlp.fc1.out_features, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
            layer.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
            for mine, theirs in ((layer.self_attn.out_proj, block.attn.proj), (layer.linear1, block.mlp.fc1),
                                 (layer.linear2, block.mlp.fc2), (layer.norm1, block.norm1), (layer.norm2, block.norm2)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
        twin.blocks[i] = layer
    return twin


def test_d3_moves_attention_alike_whether_written_with_linear_layers_or_in_pytorchs_module():
    """``layers="all"`` takes ``nn.MultiheadAttention``'s ``in_proj_weight`` as it takes a ``qkv``
    Linear's weight, so D3 on the same function in either form returns the same function; had the
    packed projection been left out, the two would part (checked)."""
    from distox.models.small_vit import SmallViT
    from distox.models.selection import select_weights

    torch.manual_seed(0)
    vit = SmallViT(num_classes=3, in_channels=1, dim=8, depth=1, heads=2, patch_size=4, image_size=8)
    twin = twin_with_torch_attention(vit)
    retain = tiny_retain()
    with torch.no_grad():
        assert torch.allclose(vit.eval()(retain.x), twin.eval()(retain.x), atol=1e-5)
    names = list(select_weights(twin, "all", retain.x[:1]))
    assert "blocks.0.self_attn.in_proj_weight" in names and len(names) == len(select_weights(vit, "all"))
    run = lambda m, layers: D3(epochs=2, batch_size=16, layers=layers, lr=0.05)(m, retain, device="cpu",
                                                                                  progress=False).model.eval()
    a, b = run(vit, "all"), run(twin, "all")
    without = run(twin, [n.removesuffix(".weight") for n in names if n.endswith(".weight")])
    qkv = a.blocks[0].attn.qkv.weight.detach()
    packed = [m.blocks[0].self_attn.in_proj_weight.detach() for m in (b, without)]
    start = vit.blocks[0].attn.qkv.weight.detach()
    assert float((qkv - start).norm()) > 0.05 * float(start.norm())  # it moved, and alike in both forms
    assert torch.allclose(packed[0], qkv, atol=1e-5)
    assert torch.allclose(b.head.weight, a.head.weight, atol=1e-5)
    assert float((packed[1] - qkv).norm()) > 10 * float((packed[0] - qkv).norm()) + 1e-3


def test_the_default_turns_the_attention_projections_of_a_batchnorm_model():
    """On a model with BatchNorm the all-layer distance (``all-layers``, the default then) covers
    ``in_proj_weight``: pushed, it moves
    several times farther than when the same run leaves it out, and keeps its norm (Eq. 2)."""
    from distox.models import create_model

    torch.manual_seed(0)
    model = create_model("hybrid_vit", num_classes=3, in_channels=1, width=8, depth=1, heads=2, image_size=8)
    retain = tiny_retain()
    name = "net.blocks.layers.0.self_attn.in_proj_weight"
    d3 = D3(preset="all-layers", epochs=3, batch_size=16, lr=0.2)
    result = d3(model, retain, device="cpu", progress=False)
    assert result.config["layers"] == "all" and result.config["norm_rule_resolved"]["batchnorm"]
    assert name in d3.selected(model, retain.x[:1])
    others = [n.removesuffix(".weight") for n in d3.selected(model, retain.x[:1]) if n != name]
    left_out = D3(preset="all-layers", epochs=3, batch_size=16, lr=0.2, layers=others)(model, retain, device="cpu", progress=False)
    start = dict(model.named_parameters())[name].detach()
    moved = [float((dict(r.model.named_parameters())[name].detach() - start).norm()) for r in (result, left_out)]
    assert moved[0] > 3 * moved[1]
    assert float(dict(result.model.named_parameters())[name].detach().norm()) == pytest.approx(float(start.norm()), rel=1e-5)


# ---------------------------------------------------------------------------- the classifier-only path's steps floor
def test_without_batchnorm_the_default_makes_as_many_steps_as_on_3000_images():
    """BENCHMARKS.md "Seventeenth round": on a model without BatchNorm (the classifier-only path)
    the steps floor is 1,128 (12 epochs of 3,000 images at batch 32), on a BatchNorm model still
    600; 3,000 images are left alone, and the caller's ``min_steps`` or ``epochs`` always win."""
    from distox.defenses.d3 import WITHOUT_BATCHNORM
    from distox.models import create_model

    assert WITHOUT_BATCHNORM["min_steps"] == 1128 == 12 * 94
    images = lambda n: ImageSplit(torch.rand(n, 1, 8, 8), torch.arange(n) % 4)
    plain = create_model("small_cnn", 4, 1, width=4, norm="none")
    batchnorm = create_model("small_cnn", 4, 1, width=4)
    assert [D3().epochs_for(images(n), plain) for n in (500, 1000, 3000)] == [71, 36, 12]
    assert [D3().epochs_for(images(n), batchnorm) for n in (500, 1000, 3000)] == [38, 19, 12]
    assert D3().epochs_for(images(500)) == 38  # without the model: the preset's floor
    assert D3(min_steps=600).epochs_for(images(500), plain) == 38
    assert D3(epochs=5).epochs_for(images(500), plain) == 5
    assert D3(norm_rule=False).epochs_for(images(500), plain) == 38
    adapted = D3().adapted_to(plain, images(500))
    assert (adapted.epochs, adapted.lr, adapted.layers, adapted.min_steps) == (71, 0.03, "auto", 0)
    d3 = D3()
    d3.adapted_to(plain, images(500))
    assert d3.norm_rule_resolved["changed"]["min_steps"] == 1128
    # the default's soft targets (thirtieth round) weigh 0.5 · 12 / 71 where the floor makes 71 epochs of 12
    assert d3.min_steps_resolved == {"epochs": 71}
    assert d3.distill_resolved == {"distill": 0.5 * 12 / 71, "epochs": 71, "of": 12}


def test_an_evaluator_ends_on_the_epoch_the_models_rule_resolves(monkeypatch):
    """``purify``'s evaluator is told the last epoch the model's own rules make (here the BatchNorm
    rule's floor, shrunk for speed: 45 steps of 3 = 15 epochs), so the final epoch is evaluated."""
    import distox
    from distox.defenses import d3 as d3_module
    from distox.models import create_model

    from .conftest import make_bundle

    monkeypatch.setitem(d3_module.WITHOUT_BATCHNORM, "min_steps", 45)
    torch.manual_seed(1)
    model = create_model("small_cnn", 4, 1, width=4, norm="none")
    retain, held = make_bundle(n_train=48).train, make_bundle(n_train=48, n_test=24).test
    result = distox.purify(model, retain, batch_size=16, verbose=False, label_check="off", eval_data=(held.x, held.y),
                           eval_every=4)
    assert result.config["min_steps_resolved"] == {"epochs": 15} and len(result.history) == 15
    assert result.config["distill_resolved"] == {"distill": 0.5 * 12 / 15, "epochs": 15, "of": 12}
    assert [i + 1 for i, row in enumerate(result.history) if "acc" in row] == [4, 8, 12, 15]


def test_only_the_whole_network_selections_take_the_attention_projections():
    """``"all"`` and ``"all-but-first"`` (distox's) take ``in_proj_weight``; ``"all-linear"`` and module
    names keep SPEC §1's letter: the weights of the nn.Linear/nn.Conv2d modules selected."""
    from distox.models import create_model
    from distox.models.selection import select_weights

    model = create_model("hybrid_vit", num_classes=3, in_channels=1, width=8, depth=2, heads=2, image_size=8)
    example = tiny_retain().x[:1]
    projections = {"net.blocks.layers.0.self_attn.in_proj_weight", "net.blocks.layers.1.self_attn.in_proj_weight"}
    for selection in ("all", "all-but-first"):
        assert projections <= set(select_weights(model, selection, example))
    for selection in ("all-linear", "net.blocks.*", ["net.blocks.layers.0.self_attn"]):
        chosen = set(select_weights(model, selection, example))
        assert not chosen & projections and "net.blocks.layers.0.self_attn.out_proj.weight" in chosen


def test_attention_with_other_key_widths_gives_its_three_projections():
    from distox.models.selection import attention_projections

    packed, separate = nn.MultiheadAttention(8, 2), nn.MultiheadAttention(8, 2, kdim=4, vdim=6)
    assert list(attention_projections(packed)) == ["in_proj_weight"]
    assert list(attention_projections(separate)) == ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    assert attention_projections(nn.Linear(2, 2)) == {}
