"""Where to sample along rays: the head box, stratified samples, and an occupancy grid for empty-space skipping."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from avatar4d.geometry.lattice import grid_cells, vertex_coordinates


def intersect_box(origins: Tensor, directions: Tensor, box_min: Tensor,
                  box_max: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays against an axis-aligned box.

    Args:
        origins: (R, 3).
        directions: (R, 3) (need not be unit; distances are in units of their length).
        box_min, box_max: (3,) the box's corners.

    Returns:
        (R,) entry distance (>= 0), (R,) exit distance, (R,) bool: the ray meets the box in front of its origin.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (box_min - origins) / safe
    t1 = (box_max - origins) / safe
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit


def stratified_samples(near: Tensor, far: Tensor, num_samples: int,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Samples along each ray's [near, far]: one per equal interval, jittered when a generator is given.

    Args:
        near, far: (R,) interval ends.
        num_samples: S.
        generator: random jitter within each interval (training); None puts samples at interval centres.

    Returns:
        (R, S) sample distances and (R, S) interval lengths.
    """
    count = near.shape[0]
    if generator is None:
        offsets = torch.full((count, num_samples), 0.5, device=near.device)
    else:  # drawn where the generator lives (a CPU generator keeps training reproducible on any device)
        offsets = torch.rand(count, num_samples, generator=generator, device=generator.device).to(near.device)
    step = (far - near) / num_samples
    steps = torch.arange(num_samples, device=near.device, dtype=near.dtype)
    distances = near[:, None] + (steps[None, :] + offsets) * step[:, None]
    return distances, step[:, None].expand(count, num_samples)


class OccupancyGrid(nn.Module):
    """Coarse grid over the head box marking where the field may be non-empty (for any expression seen).

    Each update evaluates the density at jittered cell centres for one training frame and keeps a decaying maximum,
    so space that any recent frame filled stays occupied. Samples in unoccupied cells are skipped.

    Args:
        box_min, box_max: (3,) the head box, metres.
        shape: cells per axis.
    """

    def __init__(self, box_min: Tensor, box_max: Tensor, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.register_buffer("box_min", box_min.clone().float())
        self.register_buffer("box_max", box_max.clone().float())
        self.register_buffer("density", torch.full((grid_cells(self.shape),), float("inf")))
        self.register_buffer("occupied", torch.ones(grid_cells(self.shape), dtype=torch.bool))

    @classmethod
    def with_cell_size(cls, box_min: Tensor, box_max: Tensor, cell_m: float) -> OccupancyGrid:
        """A grid over the box with cells of (at least) ``cell_m`` metres a side, every cell occupied."""
        extent = (box_max - box_min).tolist()
        return cls(box_min, box_max, tuple(max(2, math.ceil(e / cell_m)) for e in extent))

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_index(self, points: Tensor) -> Tensor:
        """(N, 3) head-frame points -> (N,) flat cell index (points outside are clamped to the border cells)."""
        size = torch.tensor(self.shape, dtype=points.dtype, device=points.device)
        scale = size / (self.box_max - self.box_min)
        cell = torch.addcmul(-self.box_min * scale, points, scale)  # in cells from the lower corner
        cell = cell.clamp_(min=torch.zeros_like(size), max=size - 1).int()  # >= 0: truncation is the floor
        return ((cell[:, 0] * self.shape[1] + cell[:, 1]) * self.shape[2] + cell[:, 2]).long()

    def query(self, points: Tensor) -> Tensor:
        """(N, 3) head-frame points -> (N,) bool occupied."""
        return self.occupied[self.cell_index(points)]

    def cell_centers(self, generator: torch.Generator | None = None) -> Tensor:
        """(cells, 3) head-frame points: cell centres, jittered within their cells when a generator is given."""
        device = self.box_min.device
        corners = (vertex_coordinates(self.shape, device) + 1.0) * 0.5  # in [0, 1], vertices of a (shape) lattice
        size = torch.tensor(self.shape, dtype=torch.float32, device=device)
        lattice = corners * (size - 1) / size  # lower corners of the cells
        jitter = (torch.rand(lattice.shape, generator=generator, device=generator.device).to(device)
                  if generator is not None else torch.full(lattice.shape, 0.5, device=device))
        unit = lattice + jitter / size
        return self.box_min + unit * (self.box_max - self.box_min)

    @torch.no_grad()
    def update(self, density_at: Callable[[Tensor], Tensor], threshold: float, *, decay: float = 0.9,
               generator: torch.Generator | None = None, chunk: int = 65536) -> None:
        """Refresh from the field.

        Args:
            density_at: (N, 3) head-frame points -> (N,) density (one frame's conditioning).
            threshold: density above which a cell counts as occupied.
            decay: how fast old maxima fade (per update).
        """
        points = self.cell_centers(generator)
        fresh = torch.cat([density_at(points[i:i + chunk]) for i in range(0, points.shape[0], chunk)])
        previous = torch.where(torch.isinf(self.density), torch.zeros_like(self.density), self.density)
        self.density.copy_(torch.maximum(previous * decay, fresh))
        self.occupied.copy_(self.density > threshold)

    @torch.no_grad()
    def dilate(self, cells: int = 1) -> None:
        """Grow the occupied region by ``cells`` in every direction (a safety margin for unseen expressions)."""
        grid = self.occupied.view(1, 1, *self.shape).float()
        grown = torch.nn.functional.max_pool3d(grid, 2 * cells + 1, stride=1, padding=cells)
        self.occupied.copy_(grown.view(-1) > 0)
