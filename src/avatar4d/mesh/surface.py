"""The surface of a density field: the iso level, the density on a grid, marching cubes, the largest piece, and
vertex colours (see :mod:`avatar4d.mesh` for the choices)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from scipy import ndimage
from skimage.measure import marching_cubes

from avatar4d.errors import AvatarError
from avatar4d.images import to_uint8
from avatar4d.progress import Progress
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import Conditioning, RadianceField

FRONT_VIEW_DIRECTION = (0.0, 0.0, -1.0)
"""Vertex colours are the field's colour seen along this direction (from +z into the face)."""


class EmptySurfaceError(AvatarError):
    """The density never crosses the iso level inside the head box (an untrained or empty field, or a level that is
    too high or too low), so there is no surface to extract."""


def iso_level(voxel_size_m: float) -> float:
    """Density (per metre) at which a segment ``voxel_size_m`` long has opacity 0.5: ``1 - exp(-level voxel) = 0.5``,
    so ``level = ln 2 / voxel``."""
    return math.log(2.0) / voxel_size_m


@dataclass(frozen=True)
class LevelChoice:
    """The iso level and why."""

    level: float
    """Density per metre."""
    voxel_level: float
    """:func:`iso_level` of the field's voxel (the starting point)."""
    agreement: float
    """Intersection over union of the largest piece's front silhouette at ``level`` and the region the field renders
    at least half opaque from the front (0 when nothing is)."""
    depth_offset_m: float = float("nan")
    """Median distance, over the columns rendered at least half opaque from the front, between where the surface at
    ``level`` is first met and where the column's light is half absorbed (the renderer's median depth), metres."""
    face_level: float | None = None
    """The level near the face (:func:`face_level`), blended into ``level`` away from it; None: ``level`` everywhere."""
    face_depth_offset_m: float = float("nan")
    """:func:`front_depth_offset` over the face's columns at ``face_level`` (or ``level``), metres."""


def opaque_from_front(density: np.ndarray, spacing_z: float) -> np.ndarray:
    """(X, Y, Z) density grid -> (X, Y) bool: the column's opacity seen along z, ``1 - exp(-sum density dz)``, is at
    least 0.5."""
    return density.sum(2, dtype=np.float64) * spacing_z >= math.log(2.0)


def front_silhouette_agreement(density: np.ndarray, level: float, target: np.ndarray) -> float:
    """IoU of the front silhouette (projection along z) of the largest 6-connected piece of ``density > level`` and
    an (X, Y) bool target."""
    labels, count = ndimage.label(density > level)
    if count == 0 or not target.any():
        return 0.0
    largest = int(np.argmax(np.bincount(labels.reshape(-1))[1:])) + 1
    silhouette = (labels == largest).any(2)
    return float(np.count_nonzero(silhouette & target) / np.count_nonzero(silhouette | target))


def _first_crossing(values: np.ndarray, threshold: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, Z) columns, each read from index 0 -> (C,) fractional index where each first exceeds ``threshold``
    (linear between vertices) and (C,) whether it does."""
    above = values > threshold
    found = above.any(1)
    index = np.argmax(above, 1)
    after = values[np.arange(len(values)), index]
    before = values[np.arange(len(values)), np.maximum(index - 1, 0)]
    step = np.where((index > 0) & (after > before), (threshold - before) / np.maximum(after - before, 1e-12), 0.0)
    return index - 1 + np.clip(step, 0.0, 1.0) + (index == 0), found


def front_depth_offset(density: np.ndarray, level: float, spacing_z: float, columns: np.ndarray) -> float:
    """Median over ``columns`` ((X, Y) bool) of the distance along z, metres, between the first crossing of ``level``
    seen from the front (+z) and the column's median depth (where ``sum density dz`` from the front reaches ln 2:
    half the light absorbed); inf when no column crosses."""
    from_front = density[columns][:, ::-1].astype(np.float64)
    if from_front.size == 0:
        return float("inf")
    optical = np.cumsum(from_front, 1) * spacing_z
    median, _ = _first_crossing(optical, math.log(2.0) - 1e-12)
    crossing, found = _first_crossing(from_front, level)
    if not found.any():
        return float("inf")
    return float(np.median(np.abs(crossing[found] - median[found]))) * spacing_z


def choose_level(density: np.ndarray, spacing_z: float, voxel_level: float, *, steps: int = 13, above: int = 4,
                 tolerance: float = 0.02) -> LevelChoice:
    """The iso level for a density grid (see the module's notes): the level whose surface lies where the rendered
    light ends, among those whose mesh covers what the field renders as opaque from the front.

    Args:
        density: (X, Y, Z) density per metre on a grid spanning the head box (z = the last axis, out of the face).
        spacing_z: grid spacing along z, metres.
        voxel_level: :func:`iso_level` of the field's voxel.
        steps, above: candidate levels ``voxel_level * sqrt(2) ** k`` for ``-steps < k <= above``.
        tolerance: candidates whose silhouette agreement is within this of the best one's qualify; of those, the one
            with the smallest :func:`front_depth_offset` wins (ties: the higher level).
    """
    target = opaque_from_front(density, spacing_z)
    if not target.any():
        return LevelChoice(voxel_level, voxel_level, 0.0)
    candidates = [voxel_level * math.sqrt(2.0) ** k for k in range(above, -steps, -1)]  # highest first
    agreements = [front_silhouette_agreement(density, level, target) for level in candidates]
    best = max(agreements)
    qualified = [k for k, value in enumerate(agreements) if value >= best - tolerance]
    offsets = {k: front_depth_offset(density, candidates[k], spacing_z, target) for k in qualified}
    chosen = min(qualified, key=lambda k: (round(offsets[k], 6), k))
    return LevelChoice(candidates[chosen], voxel_level, agreements[chosen], offsets[chosen])


def face_level(density: np.ndarray, spacing_z: float, voxel_level: float, face_columns: np.ndarray, *,
               steps: int = 13, above: int = 4, coverage: float = 0.95) -> float | None:
    """The level at which the surface lies where the rendered light ends over the face alone: of the levels
    ``voxel_level * sqrt(2) ** k`` (``-steps < k <= above``) that at least ``coverage`` of the face's columns cross,
    the one with the smallest :func:`front_depth_offset` over them (None when no column renders opaque).

    The face is the crispest part of a trained field (what the video shows best, and what the landmark and face
    depth losses shape), so it takes a higher level than hair and clothes, which need a low one to be covered at all.

    Args:
        density: (X, Y, Z) as for :func:`choose_level`.
        face_columns: (X, Y) bool columns that look at the face (and render opaque).
    """
    if not face_columns.any():
        return None
    columns = density[face_columns]
    best_level, best_offset = None, float("inf")
    for k in range(above, -steps, -1):  # highest first: ties keep the higher level
        level = voxel_level * math.sqrt(2.0) ** k
        if (columns > level).any(1).mean() < coverage:
            continue
        offset = front_depth_offset(density, level, spacing_z, face_columns)
        if offset < best_offset - 1e-6:
            best_level, best_offset = level, offset
    return best_level


def blended_levels(cover_level: float, face_level: float, face_weight: np.ndarray) -> np.ndarray:
    """Per-vertex iso level: ``face_level`` where ``face_weight`` is 1, ``cover_level`` where it is 0, geometric in
    between (the surface of ``density / levels`` at 1 then moves smoothly from one to the other)."""
    return np.exp(np.log(cover_level) + face_weight * (np.log(face_level) - np.log(cover_level))).astype(np.float32)


def near_points_weight(shape: tuple[int, int, int], box_min: np.ndarray, box_max: np.ndarray, points: np.ndarray,
                       inner_m: float, fade_m: float) -> np.ndarray:
    """(X, Y, Z) weight on the box's vertex grid: 1 within ``inner_m`` of any of the (P, 3) points, falling linearly
    to 0 at ``inner_m + fade_m`` (distance by the Euclidean distance transform of the grid, in metres)."""
    spacing = (np.asarray(box_max, np.float64) - box_min) / (np.array(shape) - 1)
    seeds = np.ones(shape, dtype=bool)
    index = np.round((points - box_min) / spacing).astype(int)
    inside = np.all((index >= 0) & (index < np.array(shape)), axis=1)
    seeds[tuple(index[inside].T)] = False
    distance = ndimage.distance_transform_edt(seeds, sampling=spacing)
    return np.clip((inner_m + fade_m - distance) / fade_m, 0.0, 1.0).astype(np.float32)


def in_front_extended(weight: np.ndarray) -> np.ndarray:
    """(X, Y, Z) weight -> the same with every vertex given at least the weight of any vertex behind it in its column
    (z, the last axis, points out of the face): what lies in front of the face takes the face's level, because the
    light of a column through the face ends at the face, and density in front of it that is thinner than the face's
    is haze the renders see through, not a surface."""
    return np.maximum.accumulate(weight, axis=2)


def smoothed_density(density: np.ndarray, sigma_m: float, spacing: np.ndarray) -> np.ndarray:
    """(X, Y, Z) density per metre -> the same blurred by a Gaussian of ``sigma_m`` (metres; per axis in samples by
    the grid's (3,) ``spacing``) in the log domain (densities span decades: a blur of the values would spread the
    dense inside outwards, one of their logarithm moves a level set only where it wiggles). Densities below 1e-3 per
    metre count as 1e-3. ``sigma_m`` 0 returns the input."""
    if sigma_m <= 0:
        return density
    log = np.log(np.maximum(density, 1e-3, dtype=np.float32))
    return np.exp(ndimage.gaussian_filter(log, sigma=tuple(sigma_m / np.asarray(spacing, np.float64)))).astype(
        np.float32)


def grid_shape(extent: np.ndarray, resolution: int) -> tuple[int, int, int]:
    """Vertices per axis for a box of (3,) ``extent``: ``resolution`` along the longest side, the others in proportion
    (at least 2)."""
    longest = float(np.max(extent))
    return tuple(max(2, int(round((resolution - 1) * float(e) / longest)) + 1) for e in extent)


@torch.no_grad()
def sample_density(field: RadianceField, frames: Conditioning, box_min: np.ndarray, box_max: np.ndarray,
                   shape: tuple[int, int, int], *, occupancy: OccupancyGrid | None = None,
                   chunk: int = 65536) -> np.ndarray:
    """The density on a regular grid of vertices spanning the box (corners included).

    Args:
        field: the head field.
        frames: one prepared frame (the expression and latent code to mesh).
        box_min, box_max: (3,) head frame, metres.
        shape: (X, Y, Z) vertices per axis.
        occupancy: the avatar's occupancy grid: points in cells it marks empty get density 0 without evaluating the
            field (as the renderer skips them).

    Returns:
        (X, Y, Z) float32 density per metre; entry [i, j, k] is at ``box_min + (i, j, k) * spacing``.
    """
    device = field.box_min.device
    axes = [torch.linspace(float(lo), float(hi), n, device=device) for lo, hi, n in zip(box_min, box_max, shape)]
    total = shape[0] * shape[1] * shape[2]
    out = np.empty(total, dtype=np.float32)
    plane = shape[1] * shape[2]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
    slabs = max(1, chunk // plane)
    with Progress("mesh: density", shape[0], "slices") as progress:
        for start in range(0, shape[0], slabs):
            xs = axes[0][start:start + slabs]
            points = torch.cat([xs.repeat_interleave(plane)[:, None], yz.repeat(len(xs), 1)], 1)
            density = points.new_zeros(points.shape[0])
            keep = occupancy.query(points).nonzero().squeeze(1) if occupancy is not None else None
            if keep is None:
                density = field.density(points, points.new_zeros(points.shape[0], dtype=torch.long), frames)
            elif keep.numel():
                density[keep] = field.density(points[keep], keep.new_zeros(keep.numel()), frames)
            out[start * plane:(start + len(xs)) * plane] = torch.nan_to_num(density, nan=0.0).cpu().numpy()
            progress.update(len(xs))
    return out.reshape(shape)


def extract_surface(density: np.ndarray, level: float, box_min: np.ndarray,
                    box_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of a density grid spanning a box, closed at the box's faces, outward-facing.

    Args:
        density: (X, Y, Z) density on the box's vertex grid (as :func:`sample_density` returns).
        level: the iso level; inside is where the density exceeds it.
        box_min, box_max: (3,) the box, metres.

    Returns:
        (V, 3) float64 vertices (head frame, metres, inside the box) and (T, 3) int64 faces, counter-clockwise seen
        from outside (normals point from high density to low).

    Raises:
        EmptySurfaceError: the density does not cross ``level`` anywhere in the grid.
    """
    low, high = float(density.min()), float(density.max())
    if not low < level < high:
        raise EmptySurfaceError(
            f"the density never crosses the surface level {level:.4g} (it ranges {low:.4g}..{high:.4g} in the head "
            f"box): the field is {'empty (untrained?)' if high <= level else 'full'}; train the avatar (longer) "
            f"or pass another level (--level)")
    spacing = (np.asarray(box_max, np.float64) - box_min) / (np.array(density.shape) - 1)
    padded = np.pad(density, 1, constant_values=min(0.0, low))
    vertices, faces, _, _ = marching_cubes(padded, level, spacing=tuple(spacing), gradient_direction="ascent",
                                           allow_degenerate=False)
    vertices = vertices.astype(np.float64) - spacing + np.asarray(box_min, np.float64)
    vertices = np.clip(vertices, box_min, box_max)
    return vertices, faces.astype(np.int64)


def largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the connected component with the most faces (components share vertices).

    Args:
        vertices: (V, 3); faces: (T, 3) vertex indices.

    Returns:
        (V', 3) vertices and (T', 3) faces of the largest component (unused vertices removed, order kept), and the
        number of components dropped.
    """
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.edges_unique, node_count=len(vertices))
    face_labels = labels[faces[:, 0]]
    faces_per_label = np.bincount(face_labels)
    mesh.update_faces(face_labels == int(np.argmax(faces_per_label)))
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64), int(np.count_nonzero(faces_per_label)) - 1


def smooth_surface(vertices: np.ndarray, faces: np.ndarray, iterations: int, box_min: np.ndarray,
                   box_max: np.ndarray) -> np.ndarray:
    """Taubin smoothing (``lambda`` 0.5, ``mu`` -0.53, uniform umbrella weights): each iteration a shrinking step
    towards the neighbours' mean and an inflating step back, which smooths the marching-cubes stair steps without the
    shrinkage of plain Laplacian smoothing. Vertices stay inside the box.

    Args:
        vertices: (V, 3); faces: (T, 3); iterations: 0 = none.
        box_min, box_max: (3,) the head box.

    Returns:
        (V, 3) float64 smoothed vertices (the faces are unchanged).
    """
    if iterations <= 0:
        return np.asarray(vertices, np.float64).copy()
    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, np.float64).copy(), faces=faces, process=False)
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=iterations)
    return np.clip(np.asarray(mesh.vertices, np.float64), box_min, box_max)


def edge_counts(faces: np.ndarray) -> tuple[int, int]:
    """(T, 3) faces -> number of edges used by one face only and by more than two faces."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, uses = np.unique(edges[:, 0] * (int(faces.max(initial=0)) + 1) + edges[:, 1], return_counts=True)
    return int(np.sum(uses == 1)), int(np.sum(uses > 2))


@torch.no_grad()
def vertex_colors(field: RadianceField, frames: Conditioning, vertices: np.ndarray, *,
                  chunk: int = 65536) -> np.ndarray:
    """The field's colour at each vertex seen from the front.

    Args:
        field: the head field; frames: one prepared frame.
        vertices: (V, 3) head frame, metres.

    Returns:
        (V, 3) uint8 RGB.
    """
    device = field.box_min.device
    points = torch.from_numpy(vertices.astype(np.float32)).to(device)
    direction = torch.tensor(FRONT_VIEW_DIRECTION, device=device)
    colors = [np.zeros((0, 3), np.uint8)]
    for start in range(0, points.shape[0], chunk):
        part = points[start:start + chunk]
        _, rgb = field(part, direction.expand(part.shape[0], 3), part.new_zeros(part.shape[0], dtype=torch.long),
                       frames)
        colors.append(to_uint8(rgb[:, :3]))  # the colour, not the features an upsampler reads
    return np.concatenate(colors)
