"""The occupancy grid from the field: one frame's density at head-frame points, for the refreshes during training,
and the finer grid saved with the avatar for rendering."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from avatar4d.field.head_field import HeadField
from avatar4d.render.marching import OccupancyGrid


def frame_density(field: HeadField, code: Tensor, latent: Tensor | None) -> Callable[[Tensor], Tensor]:
    """(N, 3) head-frame points -> (N,) density per metre of one frame, with (K,) expression code and (D,) latent code
    (None without latent codes)."""
    frames = field.prepare(code[None], latent[None] if latent is not None else None)
    device = field.box_min.device

    def density_at(points: Tensor) -> Tensor:
        points = points.to(device)
        return field.density(points, torch.zeros(points.shape[0], dtype=torch.long, device=device), frames)

    return density_at


@torch.no_grad()
def rendering_occupancy(field: HeadField, codes: Tensor, latents: Tensor | None, threshold: float,
                        cell_m: float) -> OccupancyGrid:
    """The occupancy grid to render with: cells of ``cell_m`` (finer than training's, so that fewer samples fall in
    empty space), occupied where any of 24 frames spread across training or the 8 most extreme expressions has
    density above ``threshold``, grown by one cell as a margin for expressions between them.

    Args:
        codes: (F, K) the training frames' expression codes.
        latents: (F, D) their latent codes, or None.
    """
    count = codes.shape[0]
    rows = set(np.linspace(0, count - 1, min(count, 24)).round().astype(int).tolist())
    rows |= set(torch.topk(codes.norm(dim=1), min(8, count)).indices.tolist())
    grid = OccupancyGrid.with_cell_size(field.box_min, field.box_max, cell_m).to(field.box_min.device)
    grid.density.fill_(0.0)
    for row in sorted(rows):
        latent = latents[row] if latents is not None else None
        grid.update(frame_density(field, codes[row], latent), threshold, decay=1.0)
    grid.dilate(1)
    return grid
