"""A finer feature grid over the face only: its features are added to the canonical grid's where the face is, so
that the eyes, lips and nostrils get voxels a fraction of the head's without paying for them over the whole head box
(the coarse-where-it-does-not-matter, fine-where-it-does split that multi-resolution grids make by level, here made
by region, because the region is known from the tracked landmarks).

The grid covers the template landmarks' bounding box plus a margin; its contribution fades linearly to zero over the
box's last ``fade_m`` so that the features are continuous where the box ends, and it starts at zero, so that a field
with the detail grid begins as the same field without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from avatar4d.field.voxel_grid import VoxelGrid, grid_shape_for_box


@dataclass(frozen=True)
class FaceDetailConfig:
    """The face's fine feature grid."""

    enabled: bool = False
    voxel_size_m: float = 0.0025
    """Edge of one voxel, metres (the canonical grid's is 5 mm in the preview)."""
    margin_m: float = 0.015
    """Beyond the template landmarks' bounding box on every side."""
    fade_m: float = 0.01
    """Over the box's outermost ``fade_m`` the features fade linearly to zero."""
    init_std: float = 0.0
    """Standard deviation of the initial features (0: the field starts as the one without detail)."""


def detail_box(template: np.ndarray, config: FaceDetailConfig) -> tuple[np.ndarray, np.ndarray]:
    """(3,), (3,) the detail grid's corners around a (L, 3) landmark template, head frame, metres."""
    return template.min(0) - config.margin_m, template.max(0) + config.margin_m


class FaceDetailGrid(nn.Module):
    """Features of the face's fine grid at head-frame points, zero outside its box.

    Args:
        config: the grid's configuration.
        template: (L, 3) the landmark template, head frame, metres.
        channels: C, feature channels (the canonical grid's, to which these are added).
        generator: seeds the initial features (used only when ``config.init_std > 0``).
    """

    def __init__(self, config: FaceDetailConfig, template: np.ndarray, channels: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        low, high = detail_box(template, config)
        self.register_buffer("box_min", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(high, dtype=torch.float32))
        self.grid = VoxelGrid(grid_shape_for_box(tuple(high - low), config.voxel_size_m), channels, config.init_std,
                              generator)

    def fade(self, points: Tensor) -> Tensor:
        """(N, 3) head-frame points -> (N,) weight in [0, 1]: 1 deeper than ``fade_m`` inside the box, 0 outside."""
        inside = torch.minimum(points - self.box_min, self.box_max - points).amin(-1)
        return (inside / self.config.fade_m).clamp(0.0, 1.0)

    def forward(self, points: Tensor) -> Tensor:
        """(N, 3) head-frame points, metres -> (N, C) features (exactly 0 outside the box, where the grid is not
        read: most of a ray's samples lie in hair, neck or background)."""
        weight = self.fade(points)
        inside = weight.nonzero().squeeze(1)
        coords = (points[inside] - self.box_min) / (self.box_max - self.box_min) * 2.0 - 1.0
        read = self.grid(coords) * weight[inside].unsqueeze(-1)
        return read.new_zeros(points.shape[0], read.shape[1]).index_copy(0, inside, read)
