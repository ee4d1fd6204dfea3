"""Expression conditioning, ManVatar-style: one motion feature grid per expression component, mixed linearly with a
frame's expression code, and (FLAME-in-NeRF's spatial prior) only inside the face region of canonical space.

The mix ``sum_k code_k * grid_k`` is formed once per frame over the whole (small) region grid, then read with one
trilinear gather per point; outside the region the features are exactly zero, so hair, neck and background cannot
change with expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from avatar4d.field.voxel_grid import (
    corner_indices_and_weights,
    sampled_total_variation,
    total_variation,
    trilinear_gather,
)
from avatar4d.geometry.lattice import grid_cells


@dataclass(frozen=True)
class ExpressionGridsConfig:
    """Motion feature grids, one per expression component."""

    voxel_size_m: float = 0.008
    """Edge of one voxel of the motion grids, metres."""
    channels: int = 8
    """Feature channels of each motion grid."""
    region_dilation_m: float = 0.02
    """The face region: within this distance of the subject's landmark template (covers the mouth interior)."""
    region_falloff_m: float = 0.01
    """Soft edge of the region (weight goes from 1 to 0 over this distance)."""
    code_weight_power: float = 0.0
    """Each component's code is weighted by ``(stddev_k / stddev_0) ** power`` before the grids are mixed (stddev:
    how far the component moves the landmarks over the video). 0 treats every component alike, though the codes
    have unit variance and the last ones move the landmarks by hundredths of a millimetre (mostly tracking noise, a
    key per frame for the grids to memorise); 1 lets a component change the field only as much as it moves the
    face."""


@dataclass(frozen=True)
class RegionGeometry:
    """Where the motion grids live (head frame, metres) and their vertices per axis."""

    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    shape: tuple[int, int, int]


def face_region_weights(template: np.ndarray, geometry: RegionGeometry, config: ExpressionGridsConfig) -> np.ndarray:
    """Spatial prior on the motion-grid vertices: 1 near the face, falling to 0 away from it.

    Args:
        template: (L, 3) the subject's landmark template, head frame, metres.

    Returns:
        (cells,) float32 weights in [0, 1], table order (x-major).
    """
    from scipy.spatial import cKDTree

    axes = [np.linspace(lo, hi, n) for lo, hi, n in zip(geometry.box_min, geometry.box_max, geometry.shape)]
    vertices = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    distance, _ = cKDTree(template).query(vertices)
    weights = np.clip((config.region_dilation_m + config.region_falloff_m - distance) / config.region_falloff_m,
                      0.0, 1.0)
    return weights.astype(np.float32)


def code_weights(stddev: np.ndarray, power: float) -> np.ndarray:
    """(K,) weight of each component's code: ``(stddev_k / stddev_0) ** power``.

    Args:
        stddev: (K,) the expression basis's standard deviation per component, largest first.
    """
    stddev = np.asarray(stddev, dtype=np.float64)
    return ((stddev / stddev[0]) ** power).astype(np.float32)


class ExpressionGrids(nn.Module):
    """K motion grids over a region box, and the region's spatial prior weights.

    Args:
        num_components: K, the length of the expression code.
        geometry: the region box and grid shape.
        region_weights: (cells,) the spatial prior (all ones to switch the prior off).
        component_weights: (K,) the weight of each component's code (:func:`code_weights`; default all ones).
    """

    def __init__(self, config: ExpressionGridsConfig, num_components: int, geometry: RegionGeometry,
                 region_weights: Tensor, component_weights: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry
        self.shape = geometry.shape
        cells = grid_cells(self.shape)
        if region_weights.shape != (cells,):
            raise ValueError(f"region_weights must be ({cells},), got {tuple(region_weights.shape)}")
        self.tables = nn.Parameter(torch.zeros(num_components, cells, config.channels))
        self.register_buffer("region_weights", region_weights.float())
        if component_weights is None:
            component_weights = torch.ones(num_components)
        if component_weights.shape != (num_components,):
            raise ValueError(f"component_weights must be ({num_components},), got {tuple(component_weights.shape)}")
        # derived from the config and the face model at construction, so not saved with the weights
        self.register_buffer("component_weights", component_weights.float(), persistent=False)
        self.register_buffer("box_min", torch.tensor(geometry.box_min, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(geometry.box_max, dtype=torch.float32))

    @property
    def channels(self) -> int:
        return self.tables.shape[-1]

    def mix(self, codes: Tensor) -> Tensor:
        """Per-frame motion grids ``region_weights * sum_k component_weights[k] * codes[f, k] * tables[k]``.

        Args:
            codes: (F, K) expression codes.

        Returns:
            (F, cells, C).
        """
        mixed = torch.einsum("fk,kpc->fpc", codes * self.component_weights, self.tables)
        return mixed * self.region_weights[None, :, None]

    def features(self, mixed: Tensor, points: Tensor, frame_ids: Tensor) -> Tensor:
        """Motion features of points; exactly zero outside the region box.

        Args:
            mixed: (F, cells, C) from :meth:`mix`.
            points: (N, 3) head-frame points, metres.
            frame_ids: (N,) row of ``mixed`` for each point.

        Returns:
            (N, C).
        """
        coords = (points - self.box_min) / (self.box_max - self.box_min) * 2.0 - 1.0
        inside = (coords.abs() <= 1.0).all(-1)
        table = mixed.reshape(-1, mixed.shape[-1])
        offsets = frame_ids * mixed.shape[1] if mixed.shape[0] > 1 else None
        out = points.new_zeros(points.shape[0], mixed.shape[-1])
        if inside.any():
            index = inside.nonzero().squeeze(1)
            corners, weights = corner_indices_and_weights(coords[index], self.shape)
            values = trilinear_gather(table, corners, weights, offsets[index] if offsets is not None else None)
            out = out.index_copy(0, index, values)
        return out

    def total_variation(self, samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Total variation of the motion grids: exact, or estimated from ``samples`` random vertices."""
        if samples is None:
            return total_variation(self.tables, self.shape)
        return sampled_total_variation(self.tables, self.shape, samples, generator)
