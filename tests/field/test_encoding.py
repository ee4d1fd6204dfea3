"""Real spherical harmonics of view directions: orthonormal over the sphere, and the closed forms of degree 1."""

from __future__ import annotations

import math

import pytest
import torch

from avatar4d.field.encoding import num_sh_coefficients, spherical_harmonics


def fibonacci_sphere(count: int) -> torch.Tensor:
    """(count, 3) nearly uniform unit vectors (equal-area spiral)."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / count
    radius = torch.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), z], -1)


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_spherical_harmonics_are_orthonormal_over_the_sphere(degree):
    directions = fibonacci_sphere(20000)
    basis = spherical_harmonics(directions, degree)
    assert basis.shape == (20000, num_sh_coefficients(degree))
    gram = basis.T @ basis * (4 * math.pi / directions.shape[0])  # integral over the sphere
    torch.testing.assert_close(gram, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-3, rtol=0)


def test_degree_one_terms_are_proportional_to_y_z_x():
    directions = torch.nn.functional.normalize(torch.randn(10, 3, dtype=torch.float64), dim=-1)
    basis = spherical_harmonics(directions, 1)
    c0, c1 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(basis[:, 0], torch.full((10,), c0, dtype=torch.float64))
    torch.testing.assert_close(basis[:, 1:], c1 * torch.stack([-directions[:, 1], directions[:, 2],
                                                               -directions[:, 0]], -1))


def test_degree_three_is_refused():
    with pytest.raises(ValueError, match="degree 3"):
        spherical_harmonics(torch.tensor([[0.0, 0.0, 1.0]]), 3)
