"""Expression as motion: the subject's face model says where each landmark moves for a frame's expression code;
spread over the face region that is a displacement field, and a point of the frame maps back to the canonical (mean)
face by subtracting it (the deformation that INSTA and IMavatar take from a tracked mesh, here from the subject's own
landmark basis, fixed, not learned).

The displacement is linear in the code, so it is precomputed per component on a grid over the face region and mixed
once per frame, like the motion grids: ``displacement(v) = sum_k code_k * basis_k(v)``, where ``basis_k(v)`` blends
component k's displacement of the template landmarks nearest to vertex v (a normalised Gaussian of their distance)
and fades to zero away from the face. What the landmarks cannot say (the inside of the mouth, wrinkles) is left to
the motion grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from avatar4d.field.voxel_grid import corner_indices_and_weights, grid_shape_for_box, trilinear_gather
from avatar4d.geometry.lattice import vertex_coordinates


@dataclass(frozen=True)
class FaceWarpConfig:
    """The landmark-driven deformation of the face region."""

    enabled: bool = False
    voxel_size_m: float = 0.004
    """Edge of one voxel of the displacement grids, metres."""
    kernel_m: float = 0.004
    """Width (standard deviation) of the Gaussian that blends the nearest landmarks' displacements."""
    neighbours: int = 8
    """Landmarks blended per vertex."""
    reach_m: float = 0.02
    """Full displacement within this distance of the nearest landmark."""
    falloff_m: float = 0.01
    """Beyond ``reach_m`` the displacement fades to zero over this distance."""
    iterations: int = 1
    """Fixed-point steps of the inverse ``x_canonical = x - displacement(x_canonical)`` (the displacement is defined
    at canonical positions). 1 reads it at the frame's point: on hdtf_speaker_8s as good as 2 (held-out PSNR 25.47
    against 25.51 dB, LPIPS 0.123 against 0.122) and 15 ms less per 512 px frame on a 2-core CPU."""


def displacement_basis(template: np.ndarray, displacements: np.ndarray, vertices: np.ndarray,
                       config: FaceWarpConfig) -> np.ndarray:
    """Each component's displacement at grid vertices, blended from the nearest template landmarks.

    Args:
        template: (L, 3) the landmark template, head frame, metres.
        displacements: (K, L, 3) each landmark's displacement per unit of each component's code, metres.
        vertices: (V, 3) head-frame points, metres.

    Returns:
        (K, V, 3) float32.
    """
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    neighbours = min(config.neighbours, len(template))
    distance, index = cKDTree(template).query(vertices, k=neighbours)
    distance, index = distance.reshape(len(vertices), -1), index.reshape(len(vertices), -1)
    # relative to the nearest landmark's, so that far vertices do not underflow to 0 / 0
    weights = np.exp(-(distance**2 - distance[:, :1] ** 2) / (2.0 * config.kernel_m**2))
    weights /= weights.sum(1, keepdims=True)
    fade = np.clip((config.reach_m + config.falloff_m - distance[:, 0]) / config.falloff_m, 0.0, 1.0)
    weights *= fade[:, None]
    # one sparse (V, L) x (L, K * 3) product: each vertex's row holds its neighbours' weights
    blend = csr_matrix((weights.ravel(), index.ravel(), np.arange(0, weights.size + 1, neighbours)),
                       shape=(len(vertices), len(template)))
    per_landmark = np.asarray(displacements, np.float64).transpose(1, 0, 2).reshape(len(template), -1)
    basis = (blend @ per_landmark).reshape(len(vertices), len(displacements), 3)
    return np.ascontiguousarray(basis.transpose(1, 0, 2), dtype=np.float32)


class FaceWarp(nn.Module):
    """Displacement grids over a box (one per expression component) and the inverse warp they define.

    Args:
        box_min, box_max: the grids' box (head frame, metres); the outermost vertices are held at zero displacement,
            so a point outside the box (clamped onto its border) does not move.
        template: (L, 3) the landmark template.
        displacements: (K, L, 3) landmark displacement per unit code.
    """

    def __init__(self, config: FaceWarpConfig, box_min: tuple[float, float, float],
                 box_max: tuple[float, float, float], template: np.ndarray, displacements: np.ndarray) -> None:
        super().__init__()
        self.config = config
        low, high = np.asarray(box_min, np.float64), np.asarray(box_max, np.float64)
        self.shape = grid_shape_for_box(tuple(high - low), config.voxel_size_m)
        coords = vertex_coordinates(self.shape).double().numpy()
        basis = displacement_basis(template, displacements, low + (coords + 1.0) * 0.5 * (high - low), config)
        basis[:, (np.abs(coords) >= 1.0 - 1e-6).any(-1)] = 0.0  # the border
        # all derived from the config, the field's geometry and the face model at construction: nothing to save
        self.register_buffer("basis", torch.from_numpy(basis), persistent=False)
        self.register_buffer("box_min", torch.tensor(box_min, dtype=torch.float32), persistent=False)
        self.register_buffer("box_max", torch.tensor(box_max, dtype=torch.float32), persistent=False)

    def mix(self, codes: Tensor) -> Tensor:
        """(F, K) expression codes -> (F, V, 3) each frame's displacement at the grid vertices."""
        return torch.einsum("fk,kvc->fvc", codes.to(self.basis.dtype), self.basis)

    def displacement(self, mixed: Tensor, points: Tensor, frame_ids: Tensor) -> Tensor:
        """(N, 3) displacement at (N, 3) head-frame points of frames ``frame_ids`` (rows of the (F, V, 3) ``mixed``)."""
        coords = (points - self.box_min) / (self.box_max - self.box_min) * 2.0 - 1.0
        corners, weights = corner_indices_and_weights(coords, self.shape)
        offsets = frame_ids * mixed.shape[1] if mixed.shape[0] > 1 else None
        return trilinear_gather(mixed.reshape(-1, 3), corners, weights, offsets)

    def to_canonical(self, mixed: Tensor, points: Tensor, frame_ids: Tensor) -> Tensor:
        """(N, 3) points of the frames -> (N, 3) where they sit in the canonical face (no gradient to the points)."""
        canonical = points
        for _ in range(max(1, self.config.iterations)):
            canonical = points - self.displacement(mixed, canonical, frame_ids)
        return canonical
