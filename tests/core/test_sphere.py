import math

import pytest
import torch

from dti.core import sphere


def unit(*shape, seed=0):
    return sphere.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)))


def test_normalize_gives_unit_rows():
    x = torch.randn(5, 7) * 10
    assert torch.allclose(sphere.normalize(x).norm(dim=-1), torch.ones(5), atol=1e-6)


def test_tangent_projection_is_orthogonal_and_idempotent():
    v, g = unit(4, 16), torch.randn(4, 16)
    t = sphere.project_tangent(v, g)
    assert torch.allclose((t * v).sum(-1), torch.zeros(4), atol=1e-6)
    assert torch.allclose(sphere.project_tangent(v, t), t, atol=1e-6)


def test_angle_of_known_vectors():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 3.0]])
    assert sphere.angle(a, b).item() == pytest.approx(math.pi / 2)


def test_slerp_endpoints_are_the_inputs_bit_for_bit():
    a, b = unit(3, 8, seed=1), unit(3, 8, seed=2)
    assert torch.equal(sphere.slerp(a, b, 0.0), a)
    assert torch.equal(sphere.slerp(a, b, 1.0), b)


def test_slerp_stays_on_sphere_with_evenly_spaced_angles():
    a, b = unit(2, 8, seed=3), unit(2, 8, seed=4)
    total = sphere.angle(a, b)
    for t in [0.1, 0.25, 0.5, 0.8]:
        v = sphere.slerp(a, b, t)
        assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-6)
        assert torch.allclose(sphere.angle(a, v), t * total, atol=1e-5)
        assert torch.allclose(sphere.angle(v, b), (1 - t) * total, atol=1e-5)


def test_slerp_of_identical_directions_is_constant():
    a = unit(1, 8)
    assert torch.allclose(sphere.slerp(a, a.clone(), 0.5), a, atol=1e-7)


def test_slerp_refuses_antipodal_directions():
    a = unit(1, 8)
    with pytest.raises(ValueError, match="antipodal"):
        sphere.slerp(a, -a, 0.5)


def test_lerp_is_linear_and_shrinks_the_norm_between_distinct_directions():
    a, b = unit(1, 8, seed=5), unit(1, 8, seed=6)
    mid = sphere.lerp(a, b, 0.5)
    assert torch.allclose(mid, (a + b) / 2, atol=1e-7)
    assert mid.norm() < 1.0
