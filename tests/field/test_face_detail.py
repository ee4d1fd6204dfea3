"""The face's detail grid: against a reference read (``grid_sample`` of the same grid times the fade written out per
axis), exactly zero outside its box and continuous where it ends, and in the head field: a zero detail grid leaves
the field as it was, a trained one changes it only inside the face's box."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatar4d.field.face_detail import FaceDetailConfig, FaceDetailGrid, detail_box
from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_grid(template: np.ndarray, config: FaceDetailConfig | None = None) -> FaceDetailGrid:
    grid = FaceDetailGrid(config or FaceDetailConfig(), template, channels=5)
    with torch.no_grad():
        grid.grid.table.copy_(torch.randn(grid.grid.table.shape, generator=torch.Generator().manual_seed(0)))
    return grid


def reference_read(grid: FaceDetailGrid, points: torch.Tensor) -> torch.Tensor:
    """(N, C) ``grid_sample`` (x-major table, align_corners) times the product-free fade: min over the six faces."""
    low, high = grid.box_min, grid.box_max
    volume = grid.grid.table.T.reshape(1, -1, *grid.grid.shape).permute(0, 1, 4, 3, 2)  # (1, C, Z, Y, X)
    coords = ((points - low) / (high - low) * 2 - 1).view(1, -1, 1, 1, 3)
    read = F.grid_sample(volume, coords, align_corners=True, padding_mode="border")[0, :, :, 0, 0].T
    nearest_face = torch.stack([points - low, high - points], -1).flatten(1).min(-1).values
    return read * (nearest_face / grid.config.fade_m).clamp(0, 1)[:, None]


def test_read_matches_grid_sample_and_fade(face_template: np.ndarray) -> None:
    grid = random_grid(face_template)
    low, high = detail_box(face_template, grid.config)
    np.testing.assert_allclose(grid.box_min.numpy(), low, atol=1e-7)
    rng = np.random.default_rng(1)
    points = torch.from_numpy(rng.uniform(low - 0.01, high + 0.01, (2000, 3))).float()
    torch.testing.assert_close(grid(points), reference_read(grid, points), atol=1e-5, rtol=1e-4)


def test_zero_outside_and_continuous_at_the_border(face_template: np.ndarray) -> None:
    grid = random_grid(face_template)
    low, high = grid.box_min, grid.box_max
    centre = (low + high) / 2
    outside = torch.stack([centre.clone() for _ in range(6)])
    for axis in range(3):
        outside[2 * axis, axis] = low[axis] - 1e-4
        outside[2 * axis + 1, axis] = high[axis] + 1e-4
    assert torch.equal(grid(outside), torch.zeros(6, 5))
    # a point on the border reads zero, one a voxel inside reads a fraction of the grid there (the fade is linear)
    on_border = centre.clone()
    on_border[0] = low[0]
    assert torch.equal(grid(on_border[None]), torch.zeros(1, 5))
    deep = centre[None]
    assert grid.fade(deep).item() == 1.0
    assert grid(deep).abs().max() > 0.1


def test_zero_grid_leaves_the_field_unchanged(face_template: np.ndarray) -> None:
    plain_config = HeadFieldConfig()
    config = dataclasses.replace(plain_config, detail=FaceDetailConfig(enabled=True))
    geometry = field_geometry(face_template, plain_config)
    plain = HeadField(plain_config, geometry, 32, 2, face_template, torch.Generator().manual_seed(3))
    detailed = HeadField(config, geometry, 32, 2, face_template, torch.Generator().manual_seed(3))
    assert torch.equal(detailed.detail.grid.table, torch.zeros_like(detailed.detail.grid.table))
    for name, value in plain.state_dict().items():  # same draws: the zero grid takes nothing from the generator
        torch.testing.assert_close(detailed.state_dict()[name], value, rtol=0, atol=0)
    codes = torch.randn(1, 32, generator=torch.Generator().manual_seed(4))
    frames = detailed.prepare(codes, detailed.latents[:1])
    low, high = detailed.box_min, detailed.box_max
    points = low + torch.rand(500, 3, generator=torch.Generator().manual_seed(5)) * (high - low)
    ids = torch.zeros(500, dtype=torch.long)
    torch.testing.assert_close(detailed.density(points, ids, frames), plain.density(points, ids, frames))
    with torch.no_grad():
        detailed.detail.grid.table.normal_(generator=torch.Generator().manual_seed(6))
    moved = detailed.density(points, ids, frames) != plain.density(points, ids, frames)
    inside = detailed.detail.fade(points) > 0
    assert moved.any() and not (moved & ~inside).any()
    assert detailed.total_variation()[0] > plain.total_variation()[0]
