"""The head surface as a mesh: marching cubes of the field's density at one expression, with vertex colours, and a
shaded preview image.

``export_mesh(avatar, "head.ply")`` writes ``head.ply`` (or ``.obj`` / ``.glb``) and ``head_preview.png`` beside it.

- **Where.** The density is sampled on a regular grid of vertices spanning the avatar's head box (head frame,
  metres): ``resolution`` vertices along the box's longest side, the other sides in proportion (near-cubic cells).
- **Which expression.** The neutral face (expression code 0, the video's mean face) or a given code, always with the
  mean of the training frames' latent codes (what novel frames use).
- **Iso level.** :func:`choose_level`. It starts from :func:`iso_level`: the density at which a segment one
  canonical voxel long (the field's own resolution, ``config.field.canonical.voxel_size_m``) has opacity 0.5,
  ``ln 2 / voxel`` (139 per metre for the preview preset's 5 mm voxels). That suits a field with a crisp surface,
  and it depends on the avatar, not on ``resolution``, so a finer grid refines the same surface instead of moving it.
  Briefly trained fields are soft (opacity builds up over centimetres of low density), and there that level leaves
  only fragments. So the level is lowered in steps of sqrt(2), down to 1/64 of it, and the highest level is kept
  whose mesh, seen from the front, covers what the avatar renders as at least half opaque from the front: the
  silhouette of the largest piece of ``density > level`` against the columns where ``1 - exp(-sum density dz)``
  reaches 0.5, by intersection over union, within 0.02 of the best level's. ``level=`` overrides all this.
- **Closed surface.** The grid is padded with empty space before marching cubes, so where the head meets the box
  (the neck at its bottom face) the surface is capped flat on the box face rather than left open; the vertices of
  such caps are put back onto the box face.
- **One piece.** Only the largest connected component (by faces) is kept: floaters of stray density and enclosed
  inner shells are dropped (:attr:`MeshResult.dropped_components` says how many).
- **Colour.** Each vertex gets the field's colour at that point seen from the front (view direction (0, 0, -1): from
  the +z side of the head frame into the face), as uint8 RGB.
- **Preview.** ``<stem>_preview.png``: the mesh from the front and from a three-quarter view, side by side,
  orthographic, Lambert shading times the vertex colour, by the small z-buffer rasteriser :func:`rasterize`.

Head frame: x towards the subject's left, y up, z out of the face (see ``tracking/head_pose.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.measure import marching_cubes

from avatar4d.atomic import atomic_file, disk_errors
from avatar4d.avatar import Avatar, load_avatar
from avatar4d.errors import AvatarError, ControlError, OutputError
from avatar4d.evaluation.strips import write_png
from avatar4d.field.head_field import HeadField, PreparedFrames
from avatar4d.progress import Progress, note
from avatar4d.render.marching import OccupancyGrid

MESH_SUFFIXES = (".ply", ".obj", ".glb")
"""File types :func:`export_mesh` writes (by the output's extension)."""
PREVIEW_SIZE = 512
"""Side of each view of the preview, pixels."""
THREE_QUARTER_YAW_DEG = 40.0
"""The preview's second view: the head turned this far towards its left (its right cheek comes into view)."""
BACKGROUND = (1.0, 1.0, 1.0)
"""Preview backdrop colour, RGB in [0, 1]."""
FRONT_VIEW_DIRECTION = (0.0, 0.0, -1.0)
"""Direction the vertex colours are seen along: from the +z side of the head frame into the face."""
MIN_RESOLUTION = 16


class EmptySurfaceError(AvatarError):
    """The density never crosses the iso level inside the head box (an untrained or empty field, or a level that is
    too high or too low), so there is no surface to extract."""


@dataclass(frozen=True)
class MeshResult:
    """What :func:`export_mesh` wrote."""

    mesh: Path
    preview: Path
    num_vertices: int
    num_faces: int
    bounds_min: tuple[float, float, float]
    """Lowest corner of the mesh's axis-aligned bounding box, head frame, metres."""
    bounds_max: tuple[float, float, float]
    level: float
    """The iso level used, density per metre."""
    voxel_level: float
    """Where the automatic level starts (:func:`iso_level` of the field's voxel); ``level`` is lower for a soft
    field."""
    silhouette_agreement: float
    """IoU of the mesh's front silhouette (voxel estimate) with what the avatar renders as opaque from the front."""
    watertight: bool
    """Every edge is shared by exactly two faces (a closed surface)."""
    boundary_edges: int
    """Edges used by one face only (0 when watertight)."""
    nonmanifold_edges: int
    """Edges used by more than two faces (0 when watertight)."""
    dropped_components: int
    """Connected components removed besides the largest (floaters, inner shells)."""
    dropped_faces: int

    @property
    def size_m(self) -> tuple[float, float, float]:
        """Bounding-box side lengths, metres."""
        return tuple(float(b - a) for a, b in zip(self.bounds_min, self.bounds_max))


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


def opaque_from_front(density: np.ndarray, spacing_z: float) -> np.ndarray:
    """(X, Y, Z) density grid -> (X, Y) bool: the column's opacity seen along z, ``1 - exp(-sum density dz)``, is at
    least 0.5."""
    return density.sum(2, dtype=np.float64) * spacing_z >= math.log(2.0)


def front_silhouette_agreement(density: np.ndarray, level: float, target: np.ndarray) -> float:
    """IoU of the front silhouette (projection along z) of the largest 6-connected piece of ``density > level`` and
    an (X, Y) bool target."""
    from scipy import ndimage

    labels, count = ndimage.label(density > level)
    if count == 0 or not target.any():
        return 0.0
    largest = int(np.argmax(np.bincount(labels.reshape(-1))[1:])) + 1
    silhouette = (labels == largest).any(2)
    return float(np.count_nonzero(silhouette & target) / np.count_nonzero(silhouette | target))


def choose_level(density: np.ndarray, spacing_z: float, voxel_level: float, *, steps: int = 13,
                 tolerance: float = 0.02) -> LevelChoice:
    """The iso level for a density grid (see the module's notes): ``voxel_level`` or lower, as far as needed for the
    mesh's front silhouette to cover what the field renders as opaque from the front.

    Args:
        density: (X, Y, Z) density per metre on a grid spanning the head box (z = the last axis, out of the face).
        spacing_z: grid spacing along z, metres.
        voxel_level: the starting level, :func:`iso_level` of the field's voxel.
        steps: candidate levels ``voxel_level / sqrt(2) ** k`` for k < steps.
        tolerance: the highest candidate whose agreement is within this of the best one's wins.
    """
    target = opaque_from_front(density, spacing_z)
    if not target.any():
        return LevelChoice(voxel_level, voxel_level, 0.0)
    candidates = [voxel_level / math.sqrt(2.0) ** k for k in range(steps)]
    agreements = [front_silhouette_agreement(density, level, target) for level in candidates]
    best = max(agreements)
    chosen = next(k for k, value in enumerate(agreements) if value >= best - tolerance)
    return LevelChoice(candidates[chosen], voxel_level, agreements[chosen])


def grid_shape(extent: np.ndarray, resolution: int) -> tuple[int, int, int]:
    """Vertices per axis for a box of (3,) ``extent``: ``resolution`` along the longest side, the others in proportion
    (at least 2)."""
    longest = float(np.max(extent))
    return tuple(max(2, int(round((resolution - 1) * float(e) / longest)) + 1) for e in extent)


@torch.no_grad()
def sample_density(field: HeadField, frames: PreparedFrames, box_min: np.ndarray, box_max: np.ndarray,
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
    axes = [torch.linspace(float(lo), float(hi), n) for lo, hi, n in zip(box_min, box_max, shape)]
    total = shape[0] * shape[1] * shape[2]
    out = np.empty(total, dtype=np.float32)
    plane = shape[1] * shape[2]
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
    slabs = max(1, chunk // plane)
    with Progress("mesh: density", shape[0], "slices") as progress:
        for start in range(0, shape[0], slabs):
            xs = axes[0][start:start + slabs]
            points = torch.cat([xs.repeat_interleave(plane)[:, None], yz.repeat(len(xs), 1)], 1)
            density = torch.zeros(points.shape[0])
            keep = occupancy.query(points).nonzero().squeeze(1) if occupancy is not None else None
            if keep is None:
                density = field.density(points, torch.zeros(points.shape[0], dtype=torch.long), frames)
            elif keep.numel():
                density[keep] = field.density(points[keep], torch.zeros(keep.numel(), dtype=torch.long), frames)
            out[start * plane:(start + len(xs)) * plane] = torch.nan_to_num(density, nan=0.0).numpy()
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
        (V', 3) vertices and (T', 3) faces of the largest component (unused vertices removed), and the number of
        components dropped.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = vertices.shape[0]
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(count, count))
    num, labels = connected_components(graph, directed=False)
    face_labels = labels[faces[:, 0]]
    faces_per_label = np.bincount(face_labels, minlength=num)
    keep_label = int(np.argmax(faces_per_label))
    kept_faces = faces[face_labels == keep_label]
    used = np.zeros(count, dtype=bool)
    used[kept_faces.reshape(-1)] = True
    remap = np.full(count, -1, dtype=np.int64)
    remap[used] = np.arange(int(used.sum()))
    dropped = int(np.count_nonzero(faces_per_label)) - 1
    return vertices[used], remap[kept_faces], dropped


def edge_counts(faces: np.ndarray) -> tuple[int, int]:
    """(T, 3) faces -> number of edges used by one face only and by more than two faces."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, uses = np.unique(edges[:, 0] * (int(faces.max(initial=0)) + 1) + edges[:, 1], return_counts=True)
    return int(np.sum(uses == 1)), int(np.sum(uses > 2))


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(T, 3) area-weighted face normals (cross product of two edges: length = twice the area)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    return np.cross(b - a, c - a)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit vertex normals: the area-weighted mean of the adjacent faces' normals."""
    normals = np.zeros_like(vertices, dtype=np.float64)
    per_face = face_normals(vertices, faces)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], per_face)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def vertex_colors(field: HeadField, frames: PreparedFrames, vertices: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """The field's colour at each vertex seen from the front.

    Args:
        field: the head field; frames: one prepared frame.
        vertices: (V, 3) head frame, metres.

    Returns:
        (V, 3) uint8 RGB.
    """
    points = torch.from_numpy(vertices.astype(np.float32))
    direction = torch.tensor(FRONT_VIEW_DIRECTION)
    colors = []
    for start in range(0, points.shape[0], chunk):
        part = points[start:start + chunk]
        ids = torch.zeros(part.shape[0], dtype=torch.long)
        _, rgb = field(part, direction.expand(part.shape[0], 3), ids, frames)
        colors.append(rgb)
    rgb = torch.cat(colors) if colors else torch.zeros(0, 3)
    return (rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------- preview


@dataclass(frozen=True)
class OrthoView:
    """An orthographic camera looking at the head from +z, after the head is turned by ``yaw_deg`` about the y axis
    through ``center`` (positive: towards the subject's left, as in ``render/novel_views.py``).

    Image axes: x right (the head frame's +x, the subject's left), y down; a square of ``size`` pixels showing
    ``[-half_extent, half_extent]`` metres around the centre.
    """

    center: tuple[float, float, float]
    half_extent: float
    size: int
    yaw_deg: float = 0.0

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) view-from-head rotation (the yaw about y)."""
        angle = math.radians(self.yaw_deg)
        c, s = math.cos(angle), math.sin(angle)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    def to_view(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) head frame -> (N, 3) view frame (x right, y up, z towards the viewer), metres."""
        return (np.asarray(points, np.float64) - np.asarray(self.center)) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) head-frame points -> (N, 2) pixel coordinates (x, y; pixel (row i, col j) has its centre at
        (j + 0.5, i + 0.5)) and (N,) depth (larger = farther from the viewer)."""
        view = self.to_view(points)
        scale = self.size / (2.0 * self.half_extent)
        xy = np.stack([view[:, 0] * scale + self.size / 2, -view[:, 1] * scale + self.size / 2], 1)
        return xy, -view[:, 2]


def preview_views(vertices: np.ndarray, size: int = PREVIEW_SIZE) -> tuple[OrthoView, OrthoView]:
    """The preview's front and three-quarter views, framing the whole mesh (its bounding sphere about the box
    centre) at the same scale in both."""
    center = 0.5 * (vertices.min(0) + vertices.max(0))
    radius = float(np.linalg.norm(vertices - center, axis=1).max()) if len(vertices) else 1.0
    center_t = tuple(float(v) for v in center)
    half = max(radius, 1e-6) * 1.05
    return OrthoView(center_t, half, size, 0.0), OrthoView(center_t, half, size, THREE_QUARTER_YAW_DEG)


@dataclass(frozen=True)
class Raster:
    """Which triangle each pixel sees, and where on it."""

    face: np.ndarray
    """(H, W) int64 triangle index, -1 where no triangle covers the pixel centre."""
    barycentric: np.ndarray
    """(H, W, 3) weights of the triangle's three vertices at the pixel centre (0 where empty)."""
    depth: np.ndarray
    """(H, W) interpolated depth, +inf where empty."""


def rasterize(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, height: int, width: int,
              *, max_candidates: int = 1 << 22) -> Raster:
    """Z-buffer rasterisation of triangles at pixel centres (no anti-aliasing, both windings drawn).

    A pixel belongs to a triangle when its centre's barycentric weights are all >= 0; of the triangles covering it,
    the one with the smallest depth there wins (depth is interpolated linearly, which is exact for an orthographic
    camera). Triangles are grouped by the size of their pixel bounding box and each group is tested vectorised
    over (triangle, candidate pixel) pairs.

    Args:
        xy: (V, 2) vertex positions in pixels (x right, y down; pixel (i, j) has its centre at (j + 0.5, i + 0.5)).
        depth: (V,) vertex depth, smaller = nearer.
        faces: (T, 3) vertex indices.
        height, width: image size.
        max_candidates: (triangle, pixel) pairs tested at once (memory bound).
    """
    xy = np.asarray(xy, np.float64)
    depth = np.asarray(depth, np.float64)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    tri = xy[faces]  # (T, 3, 2)
    j0 = np.maximum(np.ceil(tri[..., 0].min(1) - 0.5), 0)
    j1 = np.minimum(np.floor(tri[..., 0].max(1) - 0.5), width - 1)
    i0 = np.maximum(np.ceil(tri[..., 1].min(1) - 0.5), 0)
    i1 = np.minimum(np.floor(tri[..., 1].max(1) - 0.5), height - 1)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    live = (j1 >= j0) & (i1 >= i0) & (np.abs(area) > 1e-12) & np.isfinite(area)
    extent = np.maximum(j1 - j0, i1 - i0) + 1
    side = np.where(live, 2 ** np.ceil(np.log2(np.maximum(extent, 1))), 0).astype(np.int64)
    pixels, depths, owners, weights = [], [], [], []
    for k in np.unique(side[side > 0]):
        members = np.nonzero(side == k)[0]
        offsets = np.arange(k * k)
        dx, dy = offsets % k, offsets // k
        per_chunk = max(1, max_candidates // int(k * k))
        for start in range(0, len(members), per_chunk):
            ids = members[start:start + per_chunk]
            jj = j0[ids, None] + dx[None, :]
            ii = i0[ids, None] + dy[None, :]
            px, py = jj + 0.5, ii + 0.5
            ax, ay = a[ids, 0, None], a[ids, 1, None]
            bx, by = b[ids, 0, None], b[ids, 1, None]
            cx, cy = c[ids, 0, None], c[ids, 1, None]
            inv = 1.0 / area[ids, None]
            w0 = ((bx - px) * (cy - py) - (by - py) * (cx - px)) * inv
            w1 = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) * inv
            w2 = 1.0 - w0 - w1
            inside = (jj <= j1[ids, None]) & (ii <= i1[ids, None]) & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            rows, cols = np.nonzero(inside)
            if rows.size == 0:
                continue
            owner = ids[rows]
            bary = np.stack([w0[rows, cols], w1[rows, cols], w2[rows, cols]], 1)
            pixels.append((ii[rows, cols] * width + jj[rows, cols]).astype(np.int64))
            depths.append((bary * depth[faces[owner]]).sum(1))
            owners.append(owner)
            weights.append(bary)
    face_image = np.full(height * width, -1, dtype=np.int64)
    bary_image = np.zeros((height * width, 3))
    depth_image = np.full(height * width, np.inf)
    if pixels:
        pixel = np.concatenate(pixels)
        frag_depth = np.concatenate(depths)
        order = np.lexsort((frag_depth, pixel))
        first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]]
        face_image[pixel[first]] = np.concatenate(owners)[first]
        bary_image[pixel[first]] = np.concatenate(weights)[first]
        depth_image[pixel[first]] = frag_depth[first]
    return Raster(face=face_image.reshape(height, width), barycentric=bary_image.reshape(height, width, 3),
                  depth=depth_image.reshape(height, width))


def shade_view(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, view: OrthoView,
               *, ambient: float = 0.25) -> np.ndarray:
    """Render the mesh from one view: Lambert shading (a light from the viewer, a little above and to the left) times
    the vertex colour, both interpolated across triangles, over :data:`BACKGROUND`.

    Args:
        vertices: (V, 3) head frame, metres; faces: (T, 3); colors: (V, 3) uint8 RGB.

    Returns:
        (size, size, 3) float image in [0, 1].
    """
    xy, depth = view.project(vertices)
    raster = rasterize(xy, depth, faces, view.size, view.size)
    normals = vertex_normals(vertices, faces) @ view.rotation.T
    light = np.array([-0.35, 0.45, 1.0])
    light /= np.linalg.norm(light)
    image = np.empty((view.size, view.size, 3))
    image[:] = BACKGROUND
    covered = raster.face >= 0
    corners = faces[raster.face[covered]]  # (P, 3)
    bary = raster.barycentric[covered][..., None]  # (P, 3, 1)
    normal = (normals[corners] * bary).sum(1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    lambert = np.clip(normal @ light, 0.0, 1.0)
    albedo = ((colors[corners].astype(np.float64) / 255.0) * bary).sum(1)
    image[covered] = albedo * (ambient + (1.0 - ambient) * lambert)[:, None]
    return np.clip(image, 0.0, 1.0)


def render_preview(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
                   size: int = PREVIEW_SIZE) -> np.ndarray:
    """(size, 2 size, 3) uint8: the front view | the three-quarter view (see :func:`preview_views`)."""
    views = preview_views(vertices, size)
    image = np.concatenate([shade_view(vertices, faces, colors, view) for view in views], 1)
    return (image * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------- export


def preview_path_for(out: Path) -> Path:
    """``head.ply`` -> ``head_preview.png`` beside it."""
    return out.with_name(out.stem + "_preview.png")


def _check_output(out: Path) -> None:
    if out.suffix.lower() not in MESH_SUFFIXES:
        raise OutputError(f"{out}: unknown mesh type {out.suffix or '(no extension)'!r}; choose a file ending in "
                          f"{', '.join(MESH_SUFFIXES)}")
    if not out.parent.exists():
        raise OutputError(f"{out.parent} does not exist")


def _check_code(avatar: Avatar, code: np.ndarray | None) -> np.ndarray:
    expected = avatar.field.num_components
    if code is None:
        return np.zeros(expected, dtype=np.float32)
    value = np.asarray(code, dtype=np.float64)
    if value.ndim != 1 or value.shape[0] != expected:
        raise ControlError(f"the expression code must have {expected} values (one per component of this avatar), "
                           f"got shape {tuple(value.shape)}")
    if not np.all(np.isfinite(value)):
        raise ControlError("the expression code contains values that are not finite numbers")
    return value.astype(np.float32)


def export_mesh(avatar_dir: Path, out: Path, *, code: np.ndarray | None = None, resolution: int = 160,
                level: float | None = None) -> MeshResult:
    """Extract the head surface of an avatar at one expression and write it with vertex colours and a preview.

    Args:
        avatar_dir: a trained avatar folder.
        out: the mesh file, ``.ply``, ``.obj`` or ``.glb``; the preview goes to ``<stem>_preview.png`` beside it.
        code: (K,) expression code (default: zeros, the neutral / mean face).
        resolution: grid vertices along the head box's longest side.
        level: iso level, density per metre (default: :func:`choose_level`).

    Raises:
        AvatarError: the avatar folder is missing, incomplete or damaged.
        OutputError: an unknown extension, a missing folder, a full disk.
        ControlError: a code of the wrong length or not finite, a resolution below 16, a level that is not a positive
            number.
        EmptySurfaceError: the density never crosses the level (untrained or empty field).
    """
    import trimesh

    out = Path(out)
    _check_output(out)
    if resolution < MIN_RESOLUTION:
        raise ControlError(f"the resolution must be at least {MIN_RESOLUTION} vertices along the longest side, "
                           f"got {resolution}")
    if level is not None and not (np.isfinite(level) and level > 0):
        raise ControlError(f"the iso level must be a positive density per metre, got {level}")
    avatar = load_avatar(avatar_dir)
    code_value = _check_code(avatar, code)
    field = avatar.field
    latent = field.mean_latent()[None] if avatar.config.field.use_latent_code else None
    frames = field.prepare(torch.from_numpy(code_value)[None], latent)
    box_min = field.box_min.numpy().astype(np.float64)
    box_max = field.box_max.numpy().astype(np.float64)
    shape = grid_shape(box_max - box_min, resolution)
    density = sample_density(field, frames, box_min, box_max, shape, occupancy=avatar.occupancy)
    voxel_level = iso_level(avatar.config.field.canonical.voxel_size_m)
    spacing_z = float(box_max[2] - box_min[2]) / (shape[2] - 1)
    if level is None:
        choice = choose_level(density, spacing_z, voxel_level)
        if choice.level < voxel_level:
            note(f"mesh: the field is soft (briefly trained?): surface level lowered from {voxel_level:.4g} to "
                 f"{choice.level:.4g} per metre so the mesh covers what the avatar renders as opaque "
                 f"(front silhouette agreement {choice.agreement:.2f}); set it with --level")
    else:
        target = opaque_from_front(density, spacing_z)
        choice = LevelChoice(float(level), voxel_level, front_silhouette_agreement(density, float(level), target))
    level = choice.level
    vertices, faces = extract_surface(density, level, box_min, box_max)
    total_faces = faces.shape[0]
    vertices, faces, dropped = largest_component(vertices, faces)
    if dropped:
        note(f"mesh: kept the largest connected piece ({faces.shape[0]} faces); dropped {dropped} smaller ones "
             f"({total_faces - faces.shape[0]} faces: floaters or inner shells)")
    colors = vertex_colors(field, frames, vertices)
    boundary, nonmanifold = edge_counts(faces)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    file_type = out.suffix.lower()[1:]
    with atomic_file(out) as tmp:
        mesh.export(str(tmp), file_type=file_type)
    preview = preview_path_for(out)
    with disk_errors(preview):
        write_png(preview, render_preview(vertices, faces, colors))
    note(f"mesh: {out} ({vertices.shape[0]} vertices, {faces.shape[0]} faces, level {level:.4g}/m"
         f"{', watertight' if boundary == 0 and nonmanifold == 0 else ''}); preview {preview}")
    return MeshResult(mesh=out, preview=preview, num_vertices=int(vertices.shape[0]),
                      num_faces=int(faces.shape[0]), bounds_min=tuple(float(v) for v in vertices.min(0)),
                      bounds_max=tuple(float(v) for v in vertices.max(0)), level=level,
                      voxel_level=voxel_level, silhouette_agreement=choice.agreement,
                      watertight=boundary == 0 and nonmanifold == 0, boundary_edges=boundary,
                      nonmanifold_edges=nonmanifold, dropped_components=dropped,
                      dropped_faces=total_faces - int(faces.shape[0]))
