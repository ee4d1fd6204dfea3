"""How good a head mesh is, in numbers a person can check: how rough its face is and how far its face lies from the
tracked face surface.

- **Face region.** The mesh's vertices that are seen from the front (orthographic along -z of the head frame, the
  nearest surface only) inside the face outline of the tracked template (its ``FACE_OVAL`` landmarks projected on the
  x-y plane). Hair, ears, neck and any inner layer are left out.
- **Roughness.** Per vertex, the angle between its normal (area-weighted) and its Laplacian-smoothed normal (the
  normalised mean of its edge neighbours' normals: one umbrella step); the mean over the face region, degrees. A smooth
  face is a few degrees; terraces and scales are over ten.
- **Coverage.** The fraction of the face outline (front view) where the mesh is seen at all: holes in the cheeks
  lower it, while they would leave the distance untouched.
- **Distance to the template.** Each face-region vertex's distance to the tracked template surface (the face model's
  neutral landmarks triangulated by MediaPipe's face mesh, :mod:`avatar4d.tracking.triangulation`), millimetres, mean
  and 95th percentile. The template is the face the mesh should have at the neutral expression; it ends at the face
  outline, so the distance is measured only inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import trimesh
from scipy import sparse

from avatar4d.geometry.raster import rasterize
from avatar4d.geometry.triangles import point_mesh_distance
from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.triangulation import NUM_MESH_LANDMARKS, face_triangles

REGION_PIXEL_M = 0.0005
"""Pixel size of the front view that finds the face region (finer than any mesh's cells)."""


@dataclass(frozen=True)
class MeshQuality:
    """Roughness and template distance of a mesh's face region (see the module's notes)."""

    face_vertices: int
    """Vertices in the face region."""
    roughness_deg: float
    """Mean angle between vertex normals and their Laplacian-smoothed normals over the face region, degrees."""
    template_distance_mean_mm: float
    """Mean distance of the face region's vertices to the tracked template surface, millimetres."""
    template_distance_p95_mm: float
    """95th percentile of the same."""
    face_coverage: float
    """Fraction of the face outline's area (seen from the front) that the mesh covers."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def vertex_neighbours(faces: np.ndarray, num_vertices: int) -> sparse.csr_matrix:
    """(V, V) 0/1 adjacency of vertices sharing an edge."""
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices))
    adjacency.data[:] = 1.0
    return adjacency


def normal_roughness_deg(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V,) angle between each vertex normal and the normalised mean of its neighbours' normals, degrees (0 for a
    vertex without neighbours)."""
    normals = trimesh.Trimesh(vertices=vertices, faces=faces, process=False).vertex_normals
    smoothed = vertex_neighbours(faces, len(vertices)) @ normals
    length = np.linalg.norm(smoothed, axis=1)
    cosine = np.einsum("ij,ij->i", normals, smoothed) / np.maximum(length, 1e-12)
    return np.where(length > 0, np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))), 0.0)


def face_region(vertices: np.ndarray, faces: np.ndarray, template: np.ndarray,
                pixel_m: float = REGION_PIXEL_M) -> tuple[np.ndarray, float]:
    """Vertices of triangles seen from the front inside the template's face outline.

    Args:
        vertices: (V, 3) head frame, metres; faces: (T, 3).
        template: (L, 3) the face model's landmarks, head frame.

    Returns:
        (V,) bool region, and the fraction of the outline's pixels where the mesh is seen.
    """
    outline = template[list(lm.FACE_OVAL), :2]
    low = outline.min(0) - 2 * pixel_m
    width, height = (np.ceil((outline.max(0) + 2 * pixel_m - low) / pixel_m)).astype(int)
    # image x = head x, image y = -head y (rows go down); depth = -z (nearer the viewer in front = smaller)
    xy = np.stack([(vertices[:, 0] - low[0]) / pixel_m, (low[1] + height * pixel_m - vertices[:, 1]) / pixel_m], 1)
    raster = rasterize(xy, -vertices[:, 2], faces, int(height), int(width))
    polygon = np.stack([(outline[:, 0] - low[0]) / pixel_m, (low[1] + height * pixel_m - outline[:, 1]) / pixel_m], 1)
    inside = np.zeros((int(height), int(width)), np.uint8)
    cv2.fillPoly(inside, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    covered = (inside > 0) & (raster.face >= 0)
    region = np.zeros(len(vertices), bool)
    region[faces[np.unique(raster.face[covered])].reshape(-1)] = True
    return region, float(covered.sum() / max(int(inside.sum()), 1))


def template_distance_m(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(N,) distance of head-frame points to the template's triangulated face surface, metres."""
    distance, _ = point_mesh_distance(points, template[:NUM_MESH_LANDMARKS], face_triangles(template))
    return distance


def mesh_quality(vertices: np.ndarray, faces: np.ndarray, template: np.ndarray) -> MeshQuality:
    """Roughness and template distance of a head-frame mesh's face region (NaN when the region is empty).

    Args:
        vertices: (V, 3) head frame, metres; faces: (T, 3).
        template: (L >= 468, 3) the face model's landmarks at the mesh's expression, head frame, metres.
    """
    region, coverage = face_region(vertices, faces, template)
    if not region.any():
        return MeshQuality(0, float("nan"), float("nan"), float("nan"), coverage)
    roughness = normal_roughness_deg(vertices, faces)[region]
    distance_mm = 1000.0 * template_distance_m(vertices[region], template)
    return MeshQuality(face_vertices=int(region.sum()), roughness_deg=float(roughness.mean()),
                       template_distance_mean_mm=float(distance_mm.mean()),
                       template_distance_p95_mm=float(np.percentile(distance_mm, 95)), face_coverage=coverage)
