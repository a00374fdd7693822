"""Model factories and the automatic layer selection of SPEC §1."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from distox.models import SelectionError, classifier_name, create_model, linear_forward_order, select_weights


def test_preactresnet18_matches_reference_layout():
    m = create_model("preactresnet18", 10, 3)
    assert sum(p.numel() for p in m.net.parameters()) == 11_171_146
    keys = set(m.net.state_dict())
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "layer4.1.bn2.running_var",
            "linear.weight", "linear.bias"} <= keys
    assert "layer1.0.shortcut.0.weight" not in keys
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert m(torch.rand(1, 3, 64, 64)).shape == (1, 10)  # adaptive pooling: Tiny-ImageNet size


def test_width_and_channels_options():
    m = create_model("preactresnet18", 10, 1, width=0.25)
    assert m.net.linear.in_features == 128 and m.net.conv1.in_channels == 1
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_vgg_small_cnn_and_torchvision_passthrough():
    assert create_model("vgg19_bn", 10, 3, width=0.125)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert create_model("small_cnn", 7, 1)(torch.rand(2, 1, 8, 8)).shape == (2, 7)
    assert create_model("torchvision:resnet18", 5, 3)(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet9000", 10)


def test_small_vgg_layout_and_head():
    m = create_model("small_vgg", 10, 1, width=16)
    convs = [mod for mod in m.net.features if isinstance(mod, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64]
    assert sum(isinstance(mod, nn.MaxPool2d) for mod in m.net.features) == 2
    assert m.net.fc.in_features == 64 and m.net.fc.out_features == 10
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("small_vgg", 7, 1, width=4)(torch.rand(2, 1, 8, 8)).shape == (2, 7)  # digits size
    assert list(select_weights(m, "auto", torch.rand(1, 1, 28, 28))) == ["net.fc.weight"]


def test_normalisation_lives_in_the_model():
    m = create_model("small_cnn", 3, 1, mean=(0.5,), std=(0.25,))
    seen = {}
    m.net.register_forward_pre_hook(lambda mod, inp: seen.setdefault("x", inp[0]))
    m.eval()
    m(torch.full((1, 1, 8, 8), 0.75))
    assert torch.allclose(seen["x"], torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("factory,expected", [
    (lambda: create_model("preactresnet18", 10, 3, width=0.125), "net.linear"),
    (lambda: torchvision.models.resnet18(num_classes=10), "fc"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 8), nn.ReLU(), nn.Linear(8, 10)), "4"),
    (lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                                  hidden_dim=16, mlp_dim=32, num_classes=10), "heads.head"),
])
def test_auto_selection_finds_the_final_classifier(factory, expected):
    model = factory()
    sel = select_weights(model, "auto", torch.rand(1, 3, 32, 32))
    assert list(sel) == [f"{expected}.weight"]


class HeadFirst(nn.Module):
    """Two Linears whose registration order is the reverse of their forward order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)  # registered first, runs last
        self.body = nn.Linear(4, 6)

    def forward(self, x):
        return self.head(torch.relu(self.body(x.flatten(1))))


def test_auto_selection_follows_forward_order_not_registration_order():
    m = HeadFirst()
    assert linear_forward_order(m) == ["head", "body"]  # registration order without an example
    assert list(select_weights(m, "auto", torch.rand(1, 4))) == ["head.weight"]


def test_named_glob_and_all_linear_selection():
    m = create_model("preactresnet18", 10, 3, width=0.125)
    convs = select_weights(m, "net.layer4.*")
    assert convs and all(k.startswith("net.layer4.") and k.endswith(".weight") for k in convs)
    assert not any("bn" in k for k in convs)
    assert list(select_weights(m, "all-linear")) == ["net.linear.weight"]
    with pytest.raises(SelectionError, match="matches no module"):
        select_weights(m, "decoder")


def test_small_vit_shapes_size_and_head():
    m = create_model("small_vit", 10, 1)
    assert sum(p.numel() for p in m.net.parameters()) == 139_914  # dim 64, depth 4, 4 heads, MLP ×2
    for side in (28, 32, 64):  # patch 4: 7×7, 8×8 (the stored grid) and 16×16 tokens
        assert m(torch.rand(2, 1, side, side)).shape == (2, 10)
    rgb = create_model("small_vit", 7, 3, width=32, depth=1, heads=2)
    assert rgb(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    assert list(select_weights(m, "auto", torch.rand(1, 1, 28, 28))) == ["net.head.weight"]
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        m(torch.rand(1, 1, 30, 30))
    with pytest.raises(ValueError, match="multiple of heads"):
        create_model("small_vit", 10, 1, width=30)


def test_hybrid_vit_has_a_batchnorm_stem_pytorch_attention_and_a_head():
    m = create_model("hybrid_vit", 10, 1)
    assert sum(p.numel() for p in m.net.parameters()) == 89_834  # width 64, depth 2, 4 heads, MLP ×2
    for side in (28, 32):  # a stride-4 stem: 7×7 (the stored grid) and 8×8 tokens
        assert m(torch.rand(2, 1, side, side)).shape == (2, 10)
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert sum(isinstance(x, nn.MultiheadAttention) for x in m.modules()) == 2
    assert list(select_weights(m, "auto", torch.rand(1, 1, 28, 28))) == ["net.head.weight"]
    assert create_model("hybrid_vit", 7, 3, width=32, depth=1, heads=2)(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_small_vit_learns_a_tiny_batch():
    torch.manual_seed(0)
    m = create_model("small_vit", 4, 1, width=32, depth=2)
    y = torch.arange(16) % 4
    x = 0.2 * torch.rand(16, 1, 28, 28) + 0.25 * y.view(-1, 1, 1, 1)  # class = brightness
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


def test_torchvision_on_grayscale_repeats_the_channel():
    torch.manual_seed(0)
    gray = create_model("torchvision:resnet18", 10, 1)
    x = torch.rand(2, 1, 28, 28)
    assert gray(x).shape == (2, 10)
    assert list(select_weights(gray, "auto", x[:1])) == ["net.net.fc.weight"]
    rgb = create_model("torchvision:resnet18", 10, 3)
    reference = torchvision.models.resnet18(num_classes=10)
    assert list(rgb.state_dict()) == ["mean", "std"] + ["net." + k for k in reference.state_dict()]
    assert list(gray.state_dict()) == ["mean", "std"] + ["net.net." + k for k in reference.state_dict()]
    rgb.net.load_state_dict(gray.net.net.state_dict())
    gray.eval()
    rgb.eval()
    assert torch.allclose(gray(x), rgb(x.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="3-channel"):
        create_model("torchvision:resnet18", 10, 2)


def test_unknown_model_options_are_refused_not_ignored():
    from distox.models import check_model_kwargs, model_options

    with pytest.raises(ValueError, match=r"unknown option\(s\) widht for model 'small_cnn'; valid: head, norm, width$"):
        create_model("small_cnn", 10, 1, widht=4)
    assert model_options("small_vit") == ["depth", "heads", "image_size", "mlp_ratio", "patch_size", "width"]
    assert model_options("vgg19_bn") == ["hidden", "width"]
    assert create_model("vgg19_bn", 10, 3, width=0.125, hidden=64).net.classifier[0].out_features == 8  # 64 × 0.125
    check_model_kwargs("torchvision:resnet50", {"width_per_group": 32})  # the class's own options pass
    with pytest.raises(ValueError, match="torchvision:resnet18: BasicBlock only supports groups=1"):
        check_model_kwargs("torchvision:resnet18", {"width_per_group": 32})
    with pytest.raises(ValueError, match="unexpected keyword argument 'widht'; valid: groups, norm_layer"):
        check_model_kwargs("torchvision:resnet18", {"widht": 4})
    # RegNet's builder computes its widths with tensors, which the meta device cannot: checked on the CPU
    check_model_kwargs("torchvision:regnet_y_400mf", {})
    assert "stem_width" in model_options("torchvision:regnet_y_400mf")
    with pytest.raises(ValueError, match="torchvision:regnet_y_400mf: .*'widht'; valid: .*stem_width"):
        check_model_kwargs("torchvision:regnet_y_400mf", {"widht": 4})


@pytest.mark.parametrize("factory,side,stem", [
    (lambda: create_model("preactresnet18", 10, 1, width=0.125), 28, "net.conv1"),
    (lambda: create_model("small_vit", 10, 1), 28, "net.patch_embed"),
    (lambda: torchvision.models.resnet18(num_classes=10), 32, "conv1"),
])
def test_all_but_first_drops_only_the_stem(factory, side, stem):
    model = factory()
    channels = 3 if stem == "conv1" else 1
    every = select_weights(model, "all")
    chosen = select_weights(model, "all-but-first", torch.rand(1, channels, side, side))
    assert set(every) - set(chosen) == {f"{stem}.weight"}


def test_all_but_first_follows_forward_order_and_keeps_a_single_layer():
    m = HeadFirst()  # the stem is ``body``
    assert list(select_weights(m, "all-but-first", torch.rand(1, 4))) == ["head.weight"]
    assert list(select_weights(m, "all-but-first")) == ["body.weight"]  # registration order without an example
    assert list(select_weights(nn.Linear(4, 3), "all-but-first")) == ["weight"]  # nothing else to keep


def test_last_and_first_fractions_take_layers_by_depth_in_forward_order():
    """``"last:F"``: the deepest fraction of the weighted layers as the input meets them (the
    thirteenth round's depth study), at least the classifier; ``"first:F"``: the shallowest, and
    the classifier; a bad fraction is refused."""
    model = create_model("small_vgg", 10, 1, width=4)
    x = torch.rand(1, 1, 28, 28)
    from distox.models.selection import forward_order

    order = forward_order(model, x)
    assert list(select_weights(model, "last:0.5", x)) == [f"{n}.weight" for n in order[len(order) - 3:]] and len(order) == 6
    assert list(select_weights(model, "last:1", x)) == [f"{n}.weight" for n in order]
    assert list(select_weights(model, "last:0.01", x)) == ["net.fc.weight"]
    assert list(select_weights(HeadFirst(), "last:0.5", torch.rand(1, 4))) == ["head.weight"]  # forward, not registration
    assert list(select_weights(model, "first:0.5", x)) == [f"{n}.weight" for n in order[:3]] + ["net.fc.weight"]
    assert list(select_weights(model, "first:1", x)) == [f"{n}.weight" for n in order]
    assert list(select_weights(HeadFirst(), "first:0.5", torch.rand(1, 4))) == ["body.weight", "head.weight"]
    for bad in ("last:0", "last:1.5", "last:half", "first:0"):
        with pytest.raises(SelectionError, match="takes a fraction 0 < F <= 1"):
            select_weights(model, bad, x)


@pytest.mark.parametrize("norm, kind", [("batch", torch.nn.BatchNorm2d), ("group", torch.nn.GroupNorm),
                                        ("none", None)])
def test_small_cnn_norm_option(norm, kind):
    """``norm`` swaps what follows each conv and nothing else: the convs and the head keep their
    state-dict keys, so a D3 selection by name reads the same network."""
    net = create_model("small_cnn", 10, 1, width=4, norm=norm).net
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    assert [type(m) for m in norms] == ([] if kind is None else [kind] * 3)
    conv_keys = {k for k in net.state_dict() if k.startswith(("features.0.", "features.3.", "features.7.", "fc."))}
    assert conv_keys == {f"{p}.{w}" for p in ("features.0", "features.3", "features.7", "fc") for w in ("weight", "bias")}
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="norm must be one of"):
        create_model("small_cnn", 10, 1, norm="layer")


def test_a_convolutional_head_is_the_classifier_of_a_model_without_linear():
    """``small_cnn(head="conv")`` (no nn.Linear: a 1x1 conv's class maps, averaged) and a
    torchvision SqueezeNet: "auto" is the last conv, the one with a channel per class; a last conv
    with another width is no classifier."""
    m = create_model("small_cnn", 10, 1, width=4, head="conv")
    x = torch.rand(1, 1, 28, 28)
    assert m(x.repeat(2, 1, 1, 1)).shape == (2, 10)
    assert not any(isinstance(mod, torch.nn.Linear) for mod in m.modules())
    assert list(select_weights(m, "auto", x)) == ["net.classifier.weight"]
    assert classifier_name(m) == "net.classifier"  # registration order without an example
    squeeze = create_model("torchvision:squeezenet1_1", 10, 1)
    assert list(select_weights(squeeze, "auto", x)) == ["net.net.classifier.1.weight"]

    class Wider(torch.nn.Module):  # its last conv has 6 channels; the model gives 4 outputs
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 6, 1)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.conv(t).mean((2, 3))[:, :4]

    with pytest.raises(SelectionError, match="needs a classifier"):
        select_weights(Wider(), "auto", x)
    with pytest.raises(ValueError, match="head must be one of"):
        create_model("small_cnn", 10, 1, head="mlp")


def test_batchnorm_fed_selection_leaves_out_what_no_batchnorm_renormalises():
    """``"batchnorm-fed"``: the convs a BatchNorm runs right after, plus the classifier; not a
    squeeze-and-excitation conv pair nor an MLP head's hidden Linear. On a network with a BatchNorm
    after every conv it is every weight; on one without BatchNorm the classifier alone."""

    class Hybrid(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)
            self.se1, self.se2 = torch.nn.Conv2d(4, 2, 1), torch.nn.Conv2d(2, 4, 1)
            self.project, self.bn2 = torch.nn.Conv2d(4, 6, 1), torch.nn.BatchNorm2d(6)
            self.hidden, self.out = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.conv(x)))
            h = h * torch.sigmoid(self.se2(torch.relu(self.se1(h.mean((2, 3), keepdim=True)))))
            h = self.bn2(self.project(h)).mean((2, 3))
            return self.out(torch.relu(self.hidden(h)))

    x = torch.rand(1, 1, 8, 8)
    assert list(select_weights(Hybrid(), "batchnorm-fed", x)) == ["conv.weight", "project.weight", "out.weight"]
    vgg = create_model("small_vgg", 10, 1, width=4)
    assert select_weights(vgg, "batchnorm-fed", torch.rand(1, 1, 28, 28)).keys() == select_weights(vgg, "all").keys()
    plain = create_model("small_cnn", 10, 1, width=4, norm="none")
    assert list(select_weights(plain, "batchnorm-fed", torch.rand(1, 1, 28, 28))) == ["net.fc.weight"]
    # a model converted for multi-GPU training: its SyncBatchNorm layers count as BatchNorm
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(create_model("small_vgg", 10, 1, width=4))
    assert select_weights(synced, "batchnorm-fed", torch.rand(1, 1, 28, 28)).keys() == select_weights(vgg, "all").keys()


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_small_mlp_has_no_convolution_and_a_linear_head(norm):
    """``small_mlp``: flattened pixels, hidden Linears (BatchNorm1d after each with norm="batch"),
    head ``fc``; D3's automatic selection finds ``fc``; a wrong image size is a clear error."""
    m = create_model("small_mlp", 10, 1, width=32, norm=norm)
    x = torch.rand(2, 1, 28, 28)
    assert m(x).shape == (2, 10)
    assert not any(isinstance(mod, torch.nn.Conv2d) for mod in m.modules())
    assert any(isinstance(mod, torch.nn.BatchNorm1d) for mod in m.modules()) == (norm == "batch")
    assert list(select_weights(m, "auto", x[:1])) == ["net.fc.weight"]
    fed = list(select_weights(m, "batchnorm-fed", x[:1]))
    assert fed == (["net.hidden.0.weight", "net.hidden.3.weight", "net.fc.weight"] if norm == "batch"
                   else ["net.fc.weight"])
    with pytest.raises(ValueError, match="takes 28x28 images"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="norm must be one of"):
        create_model("small_mlp", 10, 1, norm="layer")


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_lenet_flattens_its_conv_map_into_three_linears(norm):
    """``lenet``: two conv stages (BatchNorm2d after each with norm="batch"), the map flattened
    (16·5·5 at 28×28, 16·6·6 at 32×32) into Linears 120 → 84 → ``fc``; ``auto`` finds ``fc``."""
    m = create_model("lenet", 10, 1, norm=norm)
    x = torch.rand(2, 1, 28, 28)
    assert m(x).shape == (2, 10) and m.net.hidden[0].in_features == 400
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules()) == (norm == "batch")
    assert list(select_weights(m, "auto", x[:1])) == ["net.fc.weight"]
    assert create_model("lenet", 10, 3, image_size=32).net.hidden[0].in_features == 576
    with pytest.raises(ValueError, match="takes 28x28 images"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="norm must be one of"):
        create_model("lenet", 10, 1, norm="group")
    with pytest.raises(ValueError, match="at least 12"):
        create_model("lenet", 10, 1, image_size=8)


def test_owning_module_maps_a_selected_weight_to_its_layer():
    from distox.models.selection import owning_module
    model = create_model("small_vgg", 10, 1, width=8)
    for name, weight in select_weights(model, "all").items():
        assert owning_module(model, name).weight is weight
    bare = nn.Linear(3, 2)
    assert owning_module(bare, "weight") is bare


def test_torchvision_googlenet_trains_on_its_main_logits_without_auxiliary_heads():
    """GoogLeNet (and Inception-v3) come without their auxiliary heads: in training mode torchvision's
    forward would return a named tuple, which no distox loss takes (``distox attack --model
    torchvision:googlenet`` failed with a TypeError in its first step). Asking for the heads is refused."""
    torch.manual_seed(0)
    model = create_model("torchvision:googlenet", 10, 1).train()
    out = model(torch.rand(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert not any("aux" in name for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="aux_logits"):
        create_model("torchvision:googlenet", 10, 1, aux_logits=True)
