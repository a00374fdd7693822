"""i-BAU (Implicit Backdoor Adversarial Unlearning): the fixed-point hypergradient against the
exact implicit gradient and its truncated Neumann series on a quadratic problem, the universal
perturbation, the outer step's surrogate, the reference's bugs fixed, and the properties every
defense shares."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from distox.data.core import ImageSplit
from distox.defenses import IBAU, DefenseError
from distox.defenses.ibau import fixed_point_hypergradient, universal_perturbation

from .conftest import Interrupted, retain_split, stop_at, tiny_model


# ---------------------------------------------------------------- hypergradient on a quadratic
def quadratic(seed: int = 0):
    """L_in(δ, θ) = ½ δᵀAδ − δᵀBθ (so δ* = A⁻¹Bθ) and L_out(δ, θ) = ½‖δ − c‖² + ½ θᵀDθ, in float64."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)) @ q.T  # eigenvalues 1..3
    b = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    c = torch.randn(3, generator=gen, dtype=torch.float64)
    dm = torch.diag(torch.tensor([0.5, 1.5], dtype=torch.float64))
    theta = torch.randn(2, generator=gen, dtype=torch.float64).requires_grad_(True)

    def inner(d, th=theta):
        return 0.5 * d @ a @ d - d @ b @ th

    def outer(d, th=theta):
        return 0.5 * ((d - c) ** 2).sum() + 0.5 * th @ dm @ th

    def total(th):  # F(θ) = L_out(δ*(θ), θ)
        return outer(torch.linalg.solve(a, b @ th), th)

    return a, b, c, dm, theta, inner, outer, total


def test_hypergradient_converges_to_the_finite_difference_of_the_true_objective():
    a, b, c, dm, theta, inner, outer, total = quadratic()
    d_star = torch.linalg.solve(a, b @ theta.detach())
    _, (hyper,) = fixed_point_hypergradient(outer, inner, d_star, [theta], k=400, step=0.1, tol=0.0)
    h = 1e-6
    fd = torch.stack([(total(theta.detach() + h * e) - total(theta.detach() - h * e)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)])
    assert torch.allclose(hyper, fd, atol=1e-7)
    exact = dm @ theta.detach() + b.T @ torch.linalg.solve(a, d_star - c)  # g_θ + BᵀA⁻¹g_δ
    assert torch.allclose(hyper, exact, atol=1e-9)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_hypergradient_with_k_steps_is_the_truncated_neumann_series(k):
    a, b, c, dm, theta, inner, outer, _ = quadratic(1)
    delta = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))  # any point
    step = 0.1
    value, (hyper,) = fixed_point_hypergradient(outer, inner, delta, [theta], k=k, step=step)
    g_d, g_t = delta - c, dm @ theta.detach()
    jac = torch.eye(3, dtype=torch.float64) - step * a  # ∂Φ/∂δ for Φ = δ − step·(Aδ − Bθ)
    v = sum(torch.linalg.matrix_power(jac, j) @ g_d for j in range(k))
    assert torch.allclose(hyper, g_t + step * b.T @ v, atol=1e-12)  # ∂Φ/∂θ = step·B
    assert value == pytest.approx(float(outer(delta)))


def test_hypergradient_stops_early_once_converged():
    a, b, c, dm, theta, inner, outer, _ = quadratic()
    delta = c.clone()  # g_δ = 0: v stays 0, the hypergradient is ∂L_out/∂θ
    _, (hyper,) = fixed_point_hypergradient(outer, inner, delta, [theta], k=5)
    assert torch.allclose(hyper, dm @ theta.detach())
    unused = torch.zeros(4, requires_grad=True)
    _, grads = fixed_point_hypergradient(outer, inner, delta, [theta, unused], k=5)
    assert torch.equal(grads[1], torch.zeros(4))


# ---------------------------------------------------------------- the defense's pieces


def test_universal_perturbation_raises_the_loss_and_respects_the_radius():
    model, retain = tiny_model(), retain_split(32)
    model.eval()
    batches = [retain.x[:16], retain.x[16:]]
    delta = universal_perturbation(model, batches, (1, 1, 16, 16), lr=10.0, penalty=0.001)
    assert delta.shape == (1, 1, 16, 16) and delta.abs().sum() > 0
    with torch.no_grad():
        pseudo = model(retain.x).argmax(1)
        assert F.cross_entropy(model(retain.x + delta), pseudo) > F.cross_entropy(model(retain.x), pseudo)
    bounded = universal_perturbation(model, batches, (1, 1, 16, 16), lr=10.0, radius=0.5)
    assert float(bounded.norm()) <= 0.5 + 1e-6
    assert all(p.grad is None for p in model.parameters())


def test_outer_step_leaves_the_hypergradient_in_grad_and_perturbs_at_least_one_image():
    model, retain = tiny_model(), retain_split(8)
    ibau = IBAU()
    params = list(model.parameters())
    delta = torch.full((1, 1, 16, 16), 0.5)
    x, y = retain.x, retain.y
    torch.manual_seed(3)
    loss, stats = ibau.loss(model, params, delta, x, y)
    # a batch of 8: the reference's int(0.01·8) = 0 images would get δ; here one does
    assert stats["loss"] != pytest.approx(float(F.cross_entropy(model.eval()(x), y)))
    loss.backward()
    torch.manual_seed(3)
    chosen = torch.randperm(8)[:1]
    sel = torch.zeros(8, 1, 1, 1)
    sel[chosen] = 1

    def outer(d):
        return F.cross_entropy(model(x + sel * d), y)

    def inner(d):
        return -F.cross_entropy(model(x + d), y) + 0.001 * d.pow(2).sum()

    _, expected = fixed_point_hypergradient(outer, inner, delta, params, k=5, step=0.1)
    assert loss.item() == pytest.approx(stats["loss"])
    for p, g in zip(params, expected):
        assert torch.allclose(p.grad, g, atol=1e-6)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs", [dict(k=0), dict(inner_lr=0), dict(delta_lr=-1), dict(penalty=-1),
                                    dict(portion=0), dict(portion=1.5), dict(radius=0), dict(betas=(0.9,)),
                                    dict(scheduler="step"), dict(epochs=0), dict(lr=0)])
def test_bad_hyper_parameters_are_defense_errors(kwargs):
    with pytest.raises(DefenseError):
        IBAU(**kwargs)


def test_bad_retain_data_is_a_defense_error():
    retain = retain_split(16)
    with pytest.raises(DefenseError, match="one class"):
        IBAU(epochs=1)(tiny_model(), ImageSplit(retain.x, torch.zeros_like(retain.y)), device="cpu", progress=False)
    with pytest.raises(DefenseError, match="shape"):
        IBAU(epochs=1)(tiny_model(), ImageSplit(torch.rand(8, 3, 16, 16), retain.y[:8]), device="cpu", progress=False)


# ---------------------------------------------------------------- shared properties
def test_runs_on_cpu_input_untouched_and_same_seed_gives_identical_weights():
    model, retain = tiny_model(), retain_split(40)
    before = copy.deepcopy(model.state_dict())
    kw = dict(epochs=2, batch_size=16, lr=1e-3)
    a = IBAU(**kw)(model, retain, device="cpu", progress=False)
    b = IBAU(**kw)(model, retain, device="cpu", progress=False)
    c = IBAU(seed=1, **kw)(model, retain, device="cpu", progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], before[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    # BatchNorm statistics stay frozen (the model is in eval mode throughout, as the reference)
    assert all(torch.equal(sa[k], before[k]) for k in sa if "running" in k)
    assert [r["epoch"] for r in a.history] == [1, 2] and all(r["delta_norm"] > 0 for r in a.history)


def test_an_interrupted_run_resumes_bit_identical(tmp_path):
    model, retain = tiny_model(), retain_split(32)
    kw = dict(epochs=3, batch_size=16, lr=1e-3)
    tracked = lambda epoch, m: {}  # noqa: E731  (a run with an evaluator, as the interrupted one)
    full = IBAU(**kw)(model, retain, evaluator=tracked, device="cpu", progress=False)
    ckpt = tmp_path / "ibau.pt"
    with pytest.raises(Interrupted):
        IBAU(**kw)(model, retain, evaluator=stop_at(3), device="cpu", progress=False, checkpoint=ckpt)
    resumed = IBAU(**kw)(model, retain, evaluator=tracked, device="cpu", progress=False, checkpoint=ckpt)
    assert resumed.resumed_from_epoch == 2
    sf, sr = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sf[k], sr[k]) for k in sf)
