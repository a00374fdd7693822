"""ANP (Adversarial Neuron Pruning): the masks fall on the neurons a planted backdoor uses,
pruning removes it, thresholds are chosen on held-out retain data, the BatchNorm requirement
is a clear error, and the properties every defense shares."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import distox
from distox.attacks.badnets import BadNets
from distox.data.core import ImageSplit
from distox.defenses import ANP, DefenseError
from distox.defenses.heldout import split_retain
from distox.defenses.anp import NeuronMasks, batchnorm_layers, prune_neurons, select_threshold, sweep_thresholds
from distox.metrics import evaluate
from distox.models import create_model
from distox.training import LoopConfig, train

from .conftest import retain_split, tiny_model


class TwoBranch(nn.Module):
    """A digits classifier whose backdoor can live in known neurons only: ``trunk`` sees the
    image with the 2×2 bottom-right corner blanked, ``corner`` (conv → BN(2) → ReLU) sees only
    that corner, where the BadNets patch goes. Corner pixels carry almost no class information,
    so after poisoned training the backdoor is in ``corner.1``'s two BatchNorm neurons."""

    def __init__(self, classes: int = 10, width: int = 8, side: int = 2) -> None:
        super().__init__()
        self.side = side
        self.trunk = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1),
                                   nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.corner = nn.Sequential(nn.Conv2d(1, 2, side), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(8 * width + 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.side
        keep = torch.ones_like(x)
        keep[..., -s:, -s:] = 0
        return self.fc(torch.cat([self.trunk(x * keep), self.corner(x[..., -s:, -s:])], 1))


@pytest.fixture(scope="module")
def planted(digits_bundle):
    """(backdoored TwoBranch, BadNets attack with a 2×2 patch, retain split, clean test split)."""
    data = digits_bundle
    attack = BadNets(target=0, poison_rate=0.1, seed=0, patch=8)  # 2×2 at 8×8
    attack.check_data(data)
    poisoned, _ = attack.poison_training_set(data.train)
    torch.manual_seed(0)
    model = TwoBranch()
    half = torch.arange(0, len(poisoned), 2)
    train(model, poisoned.x[half], poisoned.y[half], LoopConfig(epochs=4, batch_size=32, lr=0.05),
          device="cpu", progress=False)
    model.eval()
    retain = data.train.subset(torch.arange(0, 160))
    return model, attack, retain, data.test


FAST = dict(iterations=150, batch_size=64, augment=False)


def test_masks_fall_on_the_neurons_the_planted_backdoor_uses(planted):
    model, attack, retain, test = planted
    before = evaluate(model, test.x, test.y, attack.backdoor_test_set(test), device="cpu")
    assert before["asr"] > 85 and before["acc"] > 85  # a working backdoor, a working classifier
    masks, _ = ANP(**FAST).search(model, retain)
    # the corner neuron the trigger drives hardest
    acts = {}
    hook = model.corner[1].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o.clamp_min(0).mean((0, 2, 3))))
    with torch.no_grad():
        model(attack.apply(test.x[:100]))
    hook.remove()
    backdoor = int(acts["a"].argmax())
    trunk = torch.cat([masks["trunk.1"], masks["trunk.5"]])
    assert masks["corner.1"][backdoor] < 0.5
    assert masks["corner.1"][backdoor] < trunk.min()
    assert masks["corner.1"][backdoor] < trunk.mean() - 0.4


def test_pruning_removes_the_planted_backdoor_and_keeps_accuracy(planted):
    model, attack, retain, test = planted
    backdoor = attack.backdoor_test_set(test)
    before = evaluate(model, test.x, test.y, backdoor, device="cpu")
    result = ANP(**FAST)(model, retain, device="cpu", progress=False)
    after = evaluate(result.model, test.x, test.y, backdoor, device="cpu")
    chosen = result.config["pruning_resolved"]
    assert chosen["pruned"] >= 1 and chosen["threshold"] is not None
    assert after["asr"] < 10 < before["asr"] - 50
    assert after["acc"] > before["acc"] - 10
    # the rule: the largest swept threshold whose held-out accuracy stayed within 10 % (relative)
    ok = [r["threshold"] for r in chosen["sweep"] if r["heldout_acc"] > 0.9 * chosen["start_heldout_acc"]]
    assert chosen["threshold"] == max(ok)
    assert chosen["heldout_size"] == len(split_retain(retain, 0.2, 0)[1])  # retain images, never test data


# ---------------------------------------------------------------- pieces


def test_unit_masks_without_noise_reproduce_the_model_and_noise_scales_gamma_and_beta():
    model = tiny_model()
    probe = NeuronMasks(copy.deepcopy(model), batchnorm_layers(model)).eval()
    model.eval()
    x = retain_split(8).x
    with torch.no_grad():
        assert torch.allclose(probe(x), model(x), atol=1e-6)
        # δ = −1 on every neuron of the first BN makes its weight γ·(1 − 1) = 0; ξ = −1 makes β·0
        noise = [(torch.zeros_like(m), torch.zeros_like(m)) for m in probe.masks]
        noise[0] = (-torch.ones_like(probe.masks[0]), -torch.ones_like(probe.masks[0]))
        silenced = copy.deepcopy(model)
        bn = silenced.get_submodule(probe.layers[0])
        bn.weight.zero_()
        bn.bias.zero_()
        assert torch.allclose(probe(x, noise), silenced(x), atol=1e-6)


def test_prune_neurons_zeroes_gamma_only_for_masks_at_or_below_the_threshold():
    model = tiny_model()
    names = batchnorm_layers(model)
    masks = {n: torch.linspace(0, 1, len(model.get_submodule(n).weight)) for n in names}
    before = {n: (model.get_submodule(n).weight.clone(), model.get_submodule(n).bias.clone()) for n in names}
    count = prune_neurons(model, masks, 0.5)
    assert count == sum(int((m <= 0.5).sum()) for m in masks.values())
    for n in names:
        w, b = model.get_submodule(n).weight, model.get_submodule(n).bias
        cut = masks[n] <= 0.5
        assert (w[cut] == 0).all() and torch.equal(w[~cut], before[n][0][~cut])
        assert torch.equal(b, before[n][1])  # β kept, as the reference


def test_threshold_rule_and_sweep():
    assert sweep_thresholds(0.9, 0.05) == [round(0.05 * i, 10) for i in range(19)]
    rows = [{"threshold": 0.0, "heldout_acc": 90.0}, {"threshold": 0.1, "heldout_acc": 85.0},
            {"threshold": 0.2, "heldout_acc": 70.0}, {"threshold": 0.3, "heldout_acc": 82.0}]
    assert select_threshold(rows, 90.0, 0.1) == 0.3  # largest within a 10 % relative drop, not the first break
    assert select_threshold(rows, 90.0, 0.05) == 0.0
    assert select_threshold(rows[2:3], 90.0, 0.1) is None  # nothing qualifies: prune nothing


def test_fixed_threshold_prunes_every_mask_at_or_below_it_without_a_split():
    model, retain = tiny_model(), retain_split(24)
    anp = ANP(iterations=6, batch_size=8, threshold=0.95, augment=False)
    result = anp(model, retain, device="cpu", progress=False)
    masks, _ = ANP(iterations=6, batch_size=8, augment=False).search(model, retain)
    chosen = result.config["pruning_resolved"]
    assert "sweep" not in chosen and chosen["threshold"] == 0.95
    assert chosen["pruned"] == sum(int((m <= 0.95).sum()) for m in masks.values())


def test_iterations_round_up_to_whole_passes_and_epochs_set_passes():
    assert ANP(batch_size=256).passes(2500) == 200  # the reference: 2,000 iterations of 10 batches
    assert ANP(iterations=7, batch_size=10).passes(25) == 3
    assert ANP(epochs=4, batch_size=10).passes(25) == 4
    _, state = ANP(iterations=7, batch_size=10, augment=False).search(tiny_model(), retain_split(25))
    assert len(state.history) == 3


# ---------------------------------------------------------------- errors
class NoNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_model_without_batchnorm_is_a_clear_error_naming_the_requirement():
    retain = retain_split(16)
    with pytest.raises(DefenseError, match="BatchNorm.*NoNorm.*has none"):
        ANP(iterations=2)(NoNorm(), retain, device="cpu", progress=False)
    with pytest.raises(DefenseError, match="BatchNorm"):
        distox.purify(NoNorm(), (retain.x, retain.y), method="anp", iterations=2, verbose=False, label_check="off")
    vit = create_model("small_vit", 4, 1, (0.5,), (0.5,), width=8, depth=1, heads=2, image_size=16)
    with pytest.raises(DefenseError, match="BatchNorm"):
        ANP(iterations=2)(vit, retain, device="cpu", progress=False)


def test_batchnorm_without_affine_parameters_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(2, 1, 16, 16))
    with pytest.raises(DefenseError, match="affine=False"):
        ANP(iterations=2)(model, retain_split(16), device="cpu", progress=False)


@pytest.mark.parametrize("kwargs", [dict(eps=-0.1), dict(alpha=1.5), dict(anp_steps=0), dict(iterations=0),
                                    dict(threshold=1.5), dict(acc_ratio=0), dict(val_fraction=1.0),
                                    dict(iterations=10, epochs=2), dict(lr=0), dict(pruning_step=0)])
def test_bad_hyper_parameters_are_defense_errors(kwargs):
    with pytest.raises(DefenseError):
        ANP(**kwargs)


def test_bad_retain_data_is_a_defense_error():
    retain = retain_split(16)
    one_class = ImageSplit(retain.x, torch.zeros_like(retain.y))
    with pytest.raises(DefenseError, match="one class"):
        ANP(iterations=2)(tiny_model(), one_class, device="cpu", progress=False)


# ---------------------------------------------------------------- shared properties
def test_input_model_is_never_modified_and_same_seed_gives_identical_weights():
    model, retain = tiny_model(), retain_split(40)
    before = copy.deepcopy(model.state_dict())
    kw = dict(iterations=8, batch_size=16, threshold=0.99)  # a threshold that prunes: the weights differ
    a = ANP(**kw)(model, retain, device="cpu", progress=False)
    b = ANP(**kw)(model, retain, device="cpu", progress=False)
    c = ANP(seed=1, **kw)(model, retain, device="cpu", progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert a.model is not model
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.config["pruning_resolved"]["pruned"] > 0
    assert a.config["pruning_resolved"]["mask_mean"] != c.config["pruning_resolved"]["mask_mean"]
