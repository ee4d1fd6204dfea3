"""Dense feature voxel grids with trilinear interpolation written as an 8-corner gather from a (cells, C) table.

Equal to ``F.grid_sample(..., align_corners=True, padding_mode="border")`` but faster on the CPU (its backward is an
``index_add``; without gradients it is one ``embedding_bag``), and the same table layout serves the per-frame mixed
expression grids. Coordinates are normalised to ``[-1, 1]`` per axis
over the grid's box; grid vertices sit on the box corners (``align_corners=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatar4d.geometry.lattice import grid_cells


def corner_indices_and_weights(coords: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Flat indices of the 8 grid vertices around each point, and their trilinear weights.

    Args:
        coords: (N, 3) points in normalised grid coordinates, [-1, 1] per axis (clamped), order (x, y, z).
        shape: vertices per axis (X, Y, Z); the table is laid out x-major: ``index = (ix * Y + iy) * Z + iz``.

    Returns:
        (N, 8) int64 indices and (N, 8) weights that sum to 1; corner ``(dx, dy, dz)`` is column ``4 dx + 2 dy + dz``.
    """
    size = torch.tensor(shape, dtype=coords.dtype, device=coords.device)
    half = (size - 1) * 0.5
    continuous = torch.addcmul(half, coords.clamp(-1.0, 1.0), half)  # in [0, size - 1]
    low = torch.minimum(continuous.floor(), size - 2)
    frac = continuous - low
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], dtype=coords.dtype, device=coords.device)
    base = (low @ strides).long()  # exact: a float32 holds every integer below 2 ** 24 cells
    steps = torch.tensor([(dx * shape[1] + dy) * shape[2] + dz for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
                         device=coords.device)
    fx, fy, fz = frac.T.contiguous()
    gx, gy, gz = 1 - fx, 1 - fy, 1 - fz
    xy = torch.stack([gx * gy, gx * fy, fx * gy, fx * fy], -1)
    return base[:, None] + steps, torch.stack([xy * gz[:, None], xy * fz[:, None]], -1).reshape(-1, 8)


class _TrilinearGather(torch.autograd.Function):
    """Weighted sum of 8 table rows per point (one ``embedding_bag``: on the CPU 10x faster than a gather and a
    product, or than a 3D ``grid_sample``); the backward scatters straight into the table's gradient (one
    ``index_add``, faster than ``embedding_bag``'s own backward), without the (N, 8, C) intermediates that autograd
    would keep and multiply."""

    @staticmethod
    def forward(ctx, table: Tensor, indices: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(table if ctx.needs_input_grad[2] else None, indices, weights)
        ctx.table_rows = table.shape[0]
        return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        table, indices, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            spread = (weights.unsqueeze(-1) * grad.unsqueeze(1)).reshape(-1, grad.shape[-1])
            grad_table = grad.new_zeros(ctx.table_rows, grad.shape[-1]).index_add_(0, indices.reshape(-1), spread)
        if ctx.needs_input_grad[2]:  # only when the points themselves are learned (a pose or a code fitted to pixels)
            grad_weights = (table[indices] * grad.unsqueeze(1)).sum(-1)
        return grad_table, None, grad_weights


def trilinear_gather(table: Tensor, indices: Tensor, weights: Tensor, offsets: Tensor | None = None) -> Tensor:
    """Interpolate features from a (cells, C) table (differentiable with respect to the table, and to the weights
    where they need it: through them, to the points).

    Args:
        table: (T, C) features; T = cells, or F * cells for a stack of per-frame grids.
        indices: (N, 8) corner indices within one grid.
        weights: (N, 8) trilinear weights.
        offsets: (N,) added to the indices (``frame * cells`` to read frame ``frame``'s grid), or None.

    Returns:
        (N, C) features.
    """
    if offsets is not None:
        indices = indices + offsets[:, None]
    return _TrilinearGather.apply(table, indices, weights.to(table.dtype))


def total_variation(table: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Mean squared difference between neighbouring vertices along each axis.

    Args:
        table: (..., X * Y * Z, C) one or several grids sharing ``shape``.

    Returns:
        () scalar.
    """
    grid = table.reshape(*table.shape[:-2], *shape, table.shape[-1])
    dx = grid[..., 1:, :, :, :] - grid[..., :-1, :, :, :]
    dy = grid[..., :, 1:, :, :] - grid[..., :, :-1, :, :]
    dz = grid[..., :, :, 1:, :] - grid[..., :, :, :-1, :]
    return (dx.square().mean() + dy.square().mean() + dz.square().mean()) / 3.0


def sampled_total_variation(table: Tensor, shape: tuple[int, int, int], count: int,
                            generator: torch.Generator | None = None) -> Tensor:
    """Unbiased estimate of :func:`total_variation` from ``count`` random vertices (and their +x, +y, +z
    neighbours): a few thousand gathers instead of a pass over the whole grid.

    Args:
        table: (..., X * Y * Z, C).

    Returns:
        () scalar; its expectation is the mean squared neighbour difference over edges starting at vertices that have
        all three forward neighbours.
    """
    sx, sy, sz = shape
    ix = torch.randint(sx - 1, (count,), generator=generator)
    iy = torch.randint(sy - 1, (count,), generator=generator)
    iz = torch.randint(sz - 1, (count,), generator=generator)
    base = ((ix * sy + iy) * sz + iz).to(table.device)
    neighbours = (torch.tensor([sy * sz, sz, 1], device=table.device)[:, None] + base).reshape(-1)
    flat = table.reshape(-1, *table.shape[-2:])
    return _MeanSquaredDifference.apply(flat, base, neighbours)


class _MeanSquaredDifference(torch.autograd.Function):
    """``mean((table[:, neighbours] - table[:, vertices]) ** 2)`` for a (L, cells, C) table, (3 n,) neighbours of
    (n,) vertices. The table is read as (cells, L * C) rows, so that each vertex is one contiguous row to gather and
    to scatter its gradient into (along the middle dimension both run 5-10x slower), and the gradient goes straight
    into one table (autograd would zero and fill one per gather and keep every intermediate)."""

    @staticmethod
    def forward(ctx, table: Tensor, vertices: Tensor, neighbours: Tensor) -> Tensor:  # type: ignore[override]
        rows = table.transpose(0, 1).reshape(table.shape[1], -1)  # (cells, L * C): a copy only when L > 1
        here = rows.index_select(0, vertices)
        difference = rows.index_select(0, neighbours).view(-1, *here.shape) - here  # (3, n, L * C)
        ctx.save_for_backward(difference, vertices, neighbours)
        ctx.table_shape = table.shape
        flat = difference.reshape(-1)
        return torch.dot(flat, flat) / flat.numel()  # one pass, no squared copy

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        difference, vertices, neighbours = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        layers, cells, channels = ctx.table_shape
        spread = difference * (2.0 * grad / difference.numel())
        rows = spread.new_zeros(cells, layers * channels)
        rows.index_add_(0, neighbours, spread.flatten(0, 1))
        rows.index_add_(0, vertices, spread.sum(0), alpha=-1.0)
        return rows.view(cells, layers, channels).transpose(0, 1), None, None


@dataclass(frozen=True)
class VoxelGridConfig:
    """A dense feature grid over the head box."""

    voxel_size_m: float = 0.005
    """Edge of one voxel in metres (vertices per axis follow from the box)."""
    channels: int = 12
    """Feature channels per vertex."""
    init_std: float = 0.1
    """Standard deviation of the random initial features."""


def grid_shape_for_box(extent_m: tuple[float, float, float], voxel_size_m: float) -> tuple[int, int, int]:
    """Vertices per axis so that voxels are (close to) cubes of ``voxel_size_m``; at least 2 per axis."""
    return tuple(max(2, int(round(e / voxel_size_m)) + 1) for e in extent_m)  # type: ignore[return-value]


class VoxelGrid(nn.Module):
    """A learnable (cells, C) feature table on a regular grid."""

    def __init__(self, shape: tuple[int, int, int], channels: int, init_std: float,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        cells = grid_cells(self.shape)  # a zero grid draws nothing from ``generator``
        self.table = nn.Parameter(torch.randn(cells, channels, generator=generator) * init_std if init_std > 0
                                  else torch.zeros(cells, channels))

    def forward(self, coords: Tensor) -> Tensor:
        """(N, 3) normalised coordinates -> (N, C) features."""
        indices, weights = corner_indices_and_weights(coords, self.shape)
        return trilinear_gather(self.table, indices, weights)

    def total_variation(self, samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """() :func:`total_variation` of the table: exact, or estimated from ``samples`` random vertices."""
        if samples is None:
            return total_variation(self.table, self.shape)
        return sampled_total_variation(self.table, self.shape, samples, generator)
