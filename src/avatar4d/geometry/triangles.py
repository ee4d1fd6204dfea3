"""Distances from points to a triangle mesh (numpy, vectorised, exact): the closest point of a triangle by its Voronoi
regions (Ericson, Real-Time Collision Detection, 5.1.5), and the nearest triangle of a mesh found through a k-d tree
of triangle centres with a bound that cannot miss it."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N, 3) closest point of triangle (a[i], b[i], c[i]) to points[i]; all arguments (N, 3)."""
    ab, ac, ap = b - a, c - a, points - a
    bp, cp = points - b, points - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = va + vb + vc
        out = a + ab * (vb / denominator)[:, None] + ac * (vc / denominator)[:, None]  # inside the face
        bc_weight = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        ac_weight = d2 / (d2 - d6)
        ab_weight = d1 / (d1 - d3)
    # the regions from last to first priority, so the first that applies is the one written last
    regions = [
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), lambda: b + (c - b) * bc_weight[:, None]),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), lambda: a + ac * ac_weight[:, None]),
        ((d6 >= 0) & (d5 <= d6), lambda: c),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), lambda: a + ab * ab_weight[:, None]),
        ((d3 >= 0) & (d4 <= d3), lambda: b),
        ((d1 <= 0) & (d2 <= 0), lambda: a),
    ]
    for mask, point in regions:
        if mask.any():
            out = np.where(mask[:, None], point(), out)
    return out


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", u, v)


def point_mesh_distance(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                        *, max_pairs: int = 1 << 21) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each point to the nearest point of a triangle mesh.

    The distance to the nearest vertex bounds the answer from above; a triangle can only hold a nearer point if its
    centre is within that bound plus the largest centre-to-corner distance of any triangle, so only those are tested.

    Args:
        points: (N, 3); vertices: (V, 3); triangles: (T, 3) vertex indices (T >= 1).
        max_pairs: (point, triangle) pairs tested at once (memory bound).

    Returns:
        (N,) distances and (N,) int64 index of the nearest triangle.
    """
    points = np.asarray(points, np.float64).reshape(-1, 3)
    vertices = np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles, np.int64).reshape(-1, 3)
    used = np.unique(triangles)
    bound, _ = cKDTree(vertices[used]).query(points)
    corners = vertices[triangles]
    centres = corners.mean(1)
    reach = float(np.linalg.norm(corners - centres[:, None], axis=2).max())
    candidates = cKDTree(centres).query_ball_point(points, bound + reach + 1e-12)
    best = np.full(len(points), np.inf)
    nearest = np.full(len(points), -1, dtype=np.int64)
    counts = np.fromiter((len(c) for c in candidates), dtype=np.int64, count=len(points))
    start = 0
    while start < len(points):
        stop = start + max(1, int(np.searchsorted(np.cumsum(counts[start:]), max_pairs, side="right")))
        owner = np.repeat(np.arange(start, stop), counts[start:stop])
        tri = np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates[start:stop]] + [np.zeros(0, np.int64)])
        closest = closest_points_on_triangles(points[owner], *(corners[tri, k] for k in range(3)))
        distance = np.linalg.norm(points[owner] - closest, axis=1)
        order = np.lexsort((distance, owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]] if len(order) else order
        best[owner[first]] = distance[first]
        nearest[owner[first]] = tri[first]
        start = stop
    return best, nearest
