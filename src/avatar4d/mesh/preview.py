"""The mesh preview a person looks at: the mesh from the front, a three-quarter view and the side (profile),
orthographic, Lambert shading times the vertex colour, by a small numpy z-buffer rasteriser. The profile is where a
face that is flat as a sheet, or hair that sticks out like a shelf, shows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh

from avatar4d.geometry.raster import rasterize

PREVIEW_SIZE = 512
THREE_QUARTER_YAW_DEG = 40.0
PROFILE_YAW_DEG = 90.0
BACKGROUND = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class OrthoView:
    """An orthographic camera looking at the head from +z, after the head is turned by ``yaw_deg`` about the y axis
    through ``center`` (positive: towards the subject's left, as in :class:`avatar4d.geometry.angles.HeadRotation`).

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


def preview_views(vertices: np.ndarray, size: int = PREVIEW_SIZE) -> tuple[OrthoView, OrthoView, OrthoView]:
    """The preview's front, three-quarter and profile views, framing the whole mesh (its bounding sphere about the box
    centre) at the same scale in all three."""
    center = 0.5 * (vertices.min(0) + vertices.max(0))
    radius = float(np.linalg.norm(vertices - center, axis=1).max()) if len(vertices) else 1.0
    center_t = tuple(float(v) for v in center)
    half = max(radius, 1e-6) * 1.05
    return (OrthoView(center_t, half, size, 0.0), OrthoView(center_t, half, size, THREE_QUARTER_YAW_DEG),
            OrthoView(center_t, half, size, PROFILE_YAW_DEG))


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
    normals = trimesh.Trimesh(vertices=vertices, faces=faces, process=False).vertex_normals
    normals = normals @ view.rotation.T
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
    """(size, 3 size, 3) uint8: the front view | the three-quarter view | the profile (see :func:`preview_views`)."""
    views = preview_views(vertices, size)
    image = np.concatenate([shade_view(vertices, faces, colors, view) for view in views], 1)
    return (image * 255).round().astype(np.uint8)
