"""Regular lattices over a box: how many vertices, and where they are in normalised coordinates, in the row-major
order (x slowest, z fastest) that every grid table of the package uses."""

from __future__ import annotations

import torch
from torch import Tensor


def grid_cells(shape: tuple[int, int, int]) -> int:
    return shape[0] * shape[1] * shape[2]


def vertex_coordinates(shape: tuple[int, int, int], device: torch.device | str | None = None) -> Tensor:
    """(X * Y * Z, 3) normalised coordinates of every grid vertex, in table order."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    return grid.reshape(-1, 3)
