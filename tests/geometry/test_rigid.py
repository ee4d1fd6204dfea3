"""Rays into the head frame: round trips through the inverse transform, and the inverse against a general matrix
inverse."""

from __future__ import annotations

import pytest
import torch
from scipy.spatial.transform import Rotation

from avatar4d.geometry.rays import rays_to_head_space
from avatar4d.geometry.rigid import invert_rigid


def random_rigid(count: int | None, seed: int) -> torch.Tensor:
    """(4, 4) or (count, 4, 4) float64 rigid transforms: random rotations, translations of a few decimetres."""
    n = 1 if count is None else count
    rotation = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())
    translation = torch.from_numpy(Rotation.random(n, random_state=seed + 1).as_rotvec()) * 0.3
    out = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    out[:, :3, :3] = rotation
    out[:, :3, 3] = translation
    return out[0] if count is None else out


def random_rays(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    origins = torch.randn(count, 3, generator=gen, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=gen, dtype=torch.float64), dim=-1)
    return origins, directions


@pytest.mark.parametrize("per_ray", [False, True])
def test_rays_to_head_space_then_back_returns_the_input(per_ray):
    origins, directions = random_rays(50, 0)
    head_from_camera = random_rigid(50 if per_ray else None, seed=1)
    origins_head, directions_head = rays_to_head_space(origins, directions, head_from_camera)
    back_origins, back_directions = rays_to_head_space(origins_head, directions_head, invert_rigid(head_from_camera))
    torch.testing.assert_close(back_origins, origins)
    torch.testing.assert_close(back_directions, directions)
    torch.testing.assert_close(directions_head.norm(dim=-1), torch.ones(50, dtype=torch.float64))


def test_rays_to_head_space_transforms_points_and_rotates_directions():
    """A point along the ray, transformed as a homogeneous point, lies on the transformed ray."""
    origins, directions = random_rays(20, 2)
    head_from_camera = random_rigid(None, seed=3)
    origins_head, directions_head = rays_to_head_space(origins, directions, head_from_camera)
    t = torch.linspace(0.1, 2.0, 20, dtype=torch.float64)[:, None]
    points = torch.cat([origins + t * directions, torch.ones(20, 1, dtype=torch.float64)], 1)
    points_head = (head_from_camera @ points.T).T[:, :3]
    torch.testing.assert_close(points_head, origins_head + t * directions_head)


@pytest.mark.parametrize("count", [None, 7])
def test_invert_rigid_equals_the_matrix_inverse_and_round_trips(count):
    transform = random_rigid(count, seed=4)
    inverse = invert_rigid(transform)
    torch.testing.assert_close(inverse, torch.linalg.inv(transform))
    torch.testing.assert_close(invert_rigid(inverse), transform)
    eye = torch.eye(4, dtype=torch.float64).expand_as(transform)
    torch.testing.assert_close(transform @ inverse, eye)
    assert torch.equal(inverse[..., 3, :], eye[..., 3, :])


def test_invert_rigid_keeps_float32():
    transform = random_rigid(None, seed=5).float()
    inverse = invert_rigid(transform)
    assert inverse.dtype == torch.float32
    torch.testing.assert_close(inverse @ transform, torch.eye(4), atol=1e-6, rtol=0)
