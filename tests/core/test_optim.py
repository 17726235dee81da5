"""RiemannianSGD against METHOD.md section 4, invariant by invariant."""

import math

import pytest
import torch

from dti.core import sphere
from dti.core.optim import RiemannianSGD


def make(rows=3, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(sphere.normalize(torch.randn(rows, dim, generator=g)))


def reference_step(v, grad, lr, kappa=0.0, mu=None, eps=1e-8):
    """The five lines of METHOD.md section 4 with beta = 0, written out independently."""
    g = grad - kappa * mu if kappa else grad.clone()
    g = g - (g * v).sum(-1, keepdim=True) * v
    g = g / (g.norm(dim=-1, keepdim=True) + eps)
    new = v - lr * g
    return new / new.norm(dim=-1, keepdim=True)


def test_rows_have_unit_norm_after_every_step():
    p = make()
    opt = RiemannianSGD([p], lr=0.3)
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        p.grad = torch.randn(p.shape, generator=g) * 100
        opt.step()
        assert torch.allclose(p.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_step_matches_the_method_exactly():
    p = make()
    mu = sphere.normalize(torch.randn(3, 16))
    grad = torch.randn(3, 16)
    expected = reference_step(p.detach().clone(), grad, lr=0.05, kappa=0.3, mu=mu)
    opt = RiemannianSGD([{"params": [p], "prior": mu}], lr=0.05, kappa=0.3)
    p.grad = grad
    opt.step()
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_update_is_tangent_with_unit_length_at_beta_zero():
    p = make()
    old = p.detach().clone()
    lr = 0.1
    p.grad = torch.randn(3, 16) * 1e-3  # tiny gradient: the step length must not depend on it
    RiemannianSGD([p], lr=lr).step()
    cos = (old * p.detach()).sum(-1)
    # before retraction the point was old + lr * u with u a unit tangent: cos = 1 / sqrt(1 + lr^2)
    assert torch.allclose(cos, torch.full((3,), 1 / math.sqrt(1 + lr**2)), atol=1e-6)
    pre = p.detach() / cos.unsqueeze(-1)  # undo the retraction
    step = pre - old
    assert torch.allclose((step * old).sum(-1), torch.zeros(3), atol=1e-6)  # tangent
    assert torch.allclose(step.norm(dim=-1), torch.full((3,), lr), atol=1e-5)  # length lr


def test_step_length_ignores_gradient_scale():
    a, b = make(seed=3), make(seed=3)
    grad = torch.randn(3, 16)
    a.grad, b.grad = grad, grad * 1e4
    RiemannianSGD([a], lr=0.05).step()
    RiemannianSGD([b], lr=0.05).step()
    assert torch.allclose(a, b, atol=1e-6)


def test_prior_is_the_constant_gradient_minus_kappa_mu():
    mu = sphere.normalize(torch.randn(3, 16))
    grad = torch.randn(3, 16)
    a, b = make(seed=4), make(seed=4)
    a.grad = grad.clone()
    RiemannianSGD([{"params": [a], "prior": mu}], lr=0.05, kappa=0.7).step()
    b.grad = grad - 0.7 * mu
    RiemannianSGD([b], lr=0.05, kappa=0.0).step()
    assert torch.allclose(a, b, atol=1e-7)


def test_prior_alone_pulls_toward_mu():
    p = make()
    mu = sphere.normalize(torch.randn(3, 16))
    opt = RiemannianSGD([{"params": [p], "prior": mu}], lr=0.05, kappa=1.0)
    before = sphere.angle(p.detach(), mu)
    for _ in range(5):
        p.grad = torch.zeros_like(p)
        opt.step()
    after = sphere.angle(p.detach(), mu)
    assert torch.all(after < before - 0.2)


def test_zero_gradient_rows_do_not_move():
    p = make()
    old = p.detach().clone()
    grad = torch.randn(3, 16)
    grad[1] = 0.0
    p.grad = grad
    RiemannianSGD([p], lr=0.1).step()
    assert torch.equal(p[1], old[1])
    assert not torch.equal(p[0], old[0])


def test_parameters_without_gradient_are_skipped():
    p, q = make(seed=1), make(seed=2)
    old = q.detach().clone()
    p.grad = torch.randn(3, 16)
    RiemannianSGD([p, q], lr=0.1).step()
    assert torch.equal(q, old)


def test_beta_normalizes_by_bias_corrected_ema_of_squared_norm():
    beta, lr, eps = 0.9, 0.05, 1e-8
    p = make(rows=1)
    opt = RiemannianSGD([p], lr=lr, beta=beta, eps=eps)
    v = p.detach().clone().double()
    s = torch.zeros(1, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    for t, scale in enumerate([1.0, 10.0, 0.1, 5.0], start=1):
        grad = torch.randn(1, 16, generator=g) * scale
        p.grad = grad.clone()
        opt.step()
        tg = grad.double() - (grad.double() * v).sum(-1, keepdim=True) * v
        s = beta * s + (1 - beta) * tg.square().sum(-1, keepdim=True)
        tg = tg / ((s / (1 - beta**t)).sqrt() + eps)
        v = v - lr * tg
        v = v / v.norm(dim=-1, keepdim=True)
        assert torch.allclose(p.detach().double(), v, atol=1e-6)


def test_first_beta_step_equals_beta_zero_step():
    a, b = make(seed=9), make(seed=9)
    grad = torch.randn(3, 16)
    a.grad, b.grad = grad.clone(), grad.clone()
    RiemannianSGD([a], lr=0.05, beta=0.0).step()
    RiemannianSGD([b], lr=0.05, beta=0.99).step()  # bias correction makes step 1 identical
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(lr=-1.0), dict(lr=0.1, kappa=-1), dict(lr=0.1, beta=1.0), dict(lr=0.1, eps=-1)])
def test_invalid_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError):
        RiemannianSGD([make()], **kwargs)


def test_non_unit_parameters_are_refused():
    with pytest.raises(ValueError, match="unit-norm"):
        RiemannianSGD([torch.nn.Parameter(torch.randn(2, 4) * 3)], lr=0.1)


def test_prior_shape_must_match():
    with pytest.raises(ValueError, match="prior"):
        RiemannianSGD([{"params": [make()], "prior": torch.randn(2, 16)}], lr=0.1)


def test_state_dict_round_trip_continues_identically():
    a = make(seed=11)
    opt = RiemannianSGD([a], lr=0.05, beta=0.5)
    a.grad = torch.randn(3, 16)
    opt.step()
    b = torch.nn.Parameter(a.detach().clone())
    opt_b = RiemannianSGD([b], lr=0.05, beta=0.5)
    opt_b.load_state_dict(opt.state_dict())
    grad = torch.randn(3, 16)
    a.grad, b.grad = grad.clone(), grad.clone()
    opt.step()
    opt_b.step()
    assert torch.equal(a, b)
