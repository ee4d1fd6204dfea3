"""The occupancy grid saved for rendering: its cell size, and occupied exactly where some chosen frame's density
exceeds the threshold (then grown by one cell), against a brute-force evaluation at the cell centres."""

from __future__ import annotations

import torch

from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.render.marching import OccupancyGrid
from avatar4d.training.occupancy import frame_density, rendering_occupancy


def test_rendering_occupancy_is_the_grown_union_of_the_frames_densities(face_template):
    config = HeadFieldConfig()
    field = HeadField(config, field_geometry(face_template, config), 4, 3, face_template,
                      torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        field.expression.tables.normal_(generator=gen)
        field.latents.normal_(generator=gen)
    codes = torch.randn(3, 4, generator=gen)
    shape = OccupancyGrid.with_cell_size(field.box_min, field.box_max, 0.02).shape
    centres = OccupancyGrid(field.box_min, field.box_max, shape).cell_centers()
    with torch.no_grad():
        density = torch.stack([frame_density(field, codes[row], field.latents[row])(centres) for row in range(3)])
    threshold = float(density.max(0).values.quantile(0.97))  # a few cells above it: most of the box stays empty
    grid = rendering_occupancy(field, codes, field.latents.detach(), threshold=threshold, cell_m=0.02)
    assert grid.shape == shape
    expected = OccupancyGrid(field.box_min, field.box_max, shape)
    expected.occupied.copy_(density.max(0).values > threshold)
    expected.dilate(1)
    assert 0.0 < expected.occupied_fraction < 1.0, "the test's field must be partly empty"
    assert torch.equal(grid.occupied, expected.occupied)
