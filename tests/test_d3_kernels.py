"""D3's fused weight terms (distox.defenses.d3_kernels): same values and gradients as the
per-weight code, used exactly where the loop runs in reduced precision."""
from __future__ import annotations

import pytest
import torch

from distox import acceleration
from distox.defenses import D3
from distox.defenses import d3 as d3_module
from distox.defenses.d3 import d3_loss, lp_norm, project_to_norms
from distox.defenses.d3_kernels import fused_distances, fused_project, use_fused

from .conftest import retain_split, tiny_model


def _weights(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 4, 3, 3), (16, 8), (5,), (3, 3)]
    init = [torch.randn(s, generator=g) for s in shapes]
    weights = [(w0 + 0.3 * torch.randn(w0.shape, generator=g)).requires_grad_() for w0 in init]
    with torch.no_grad():
        weights[-1].copy_(init[-1])  # one weight still at its start: zero distance, zero gradient
    return weights, init


def test_fused_distances_match_the_per_weight_values_and_gradients():
    weights, init = _weights()
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0])
    (fused_distances(weights, init) * scale).sum().backward()
    fused = [w.grad.clone() for w in weights]
    for w in weights:
        w.grad = None
    per_weight = torch.stack([lp_norm(w - w0, 2.0) for w, w0 in zip(weights, init)])
    (per_weight * scale).sum().backward()
    torch.testing.assert_close(fused_distances(weights, init).detach(), per_weight.detach())
    for a, b in zip(fused, (w.grad for w in weights)):
        torch.testing.assert_close(a, b)
    assert float(fused[-1].abs().sum()) == 0.0 and float(fused[0].abs().sum()) > 0


def test_fused_projection_matches_the_per_weight_one():
    weights, init = _weights(1)
    norms = [lp_norm(w0, 2.0) for w0 in init]
    a = [w.detach().clone() for w in weights]
    b = [w.detach().clone() for w in weights]
    project_to_norms(a, norms, 2.0)
    fused_project(b, torch.stack(norms))
    for x, y, n in zip(a, b, norms):
        torch.testing.assert_close(x, y)
        torch.testing.assert_close(lp_norm(y, 2.0), n)


def test_d3_loss_is_the_same_fused_or_not():
    weights, init = _weights(2)
    logits, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3, 0, 1])
    a, sa = d3_loss(logits, y, weights, init, 10.0, 0.1, 2.0)
    b, sb = d3_loss(logits, y, weights, init, 10.0, 0.1, 2.0, fused=True)
    torch.testing.assert_close(a, b)
    assert sa == pytest.approx(sb)


@pytest.mark.parametrize("precision, p, expected", [("fp32", 2.0, False), ("bf16", 2.0, True), ("fp16", 2.0, True),
                                                    ("bf16", 1.0, False)])
def test_the_fused_path_is_for_reduced_precision_and_p2_only(precision, p, expected):
    assert use_fused(precision, p) is expected


def _spy(monkeypatch) -> dict[str, int]:
    calls = {"distances": 0, "project": 0}

    def distances(*args):
        calls["distances"] += 1
        return fused_distances(*args)

    def project(*args):
        calls["project"] += 1
        return fused_project(*args)

    monkeypatch.setattr(d3_module, "fused_distances", distances)
    monkeypatch.setattr(d3_module, "fused_project", project)
    return calls


@pytest.mark.parametrize("precision", ["fp32", "auto", "bf16"])
def test_d3_takes_the_fused_path_exactly_under_bf16(monkeypatch, precision):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)  # any CI CPU
    calls = _spy(monkeypatch)
    retain = retain_split(32)
    D3(epochs=1, batch_size=16, blend=0, precision=precision)(tiny_model(), retain, device="cpu", progress=False)
    steps = 2 if precision == "bf16" else 0  # 32 images at batch 16; fp32 ("auto" on a CPU) keeps per-weight code
    assert calls == {"distances": steps, "project": steps}


def test_fused_d3_under_bf16_ends_where_the_per_weight_code_does(monkeypatch):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    retain = retain_split(32)
    fused = D3(epochs=2, batch_size=16, precision="bf16")(tiny_model(), retain, device="cpu", progress=False)
    monkeypatch.setattr(d3_module, "use_fused", lambda precision, p: False)
    plain = D3(epochs=2, batch_size=16, precision="bf16")(tiny_model(), retain, device="cpu", progress=False)
    for (name, a), b in zip(fused.model.state_dict().items(), plain.model.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3, msg=name)
    assert fused.history[-1]["distance"] == pytest.approx(plain.history[-1]["distance"], rel=1e-4)
