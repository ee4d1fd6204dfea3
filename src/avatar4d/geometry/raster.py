"""A small z-buffer rasteriser of triangles in pixel space (numpy, vectorised): which triangle each pixel centre
sees, its barycentric weights there, and the interpolated depth. Used by the mesh preview (orthographic) and by the
face depth targets (perspective, with ``-1/z`` as the depth so that the interpolation stays exact)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    fragments = [_fragments(a, b, c, area, faces, depth, ids, i0, j0, i1, j1, k, width)
                 for k, ids in _groups_by_side(side, max_candidates)]
    fragments = [f for f in fragments if f is not None]
    face_image = np.full(height * width, -1, dtype=np.int64)
    bary_image = np.zeros((height * width, 3))
    depth_image = np.full(height * width, np.inf)
    if fragments:
        pixel, frag_depth, owner, bary = (np.concatenate(parts) for parts in zip(*fragments))
        order = np.lexsort((frag_depth, pixel))
        first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]]
        face_image[pixel[first]] = owner[first]
        bary_image[pixel[first]] = bary[first]
        depth_image[pixel[first]] = frag_depth[first]
    return Raster(face=face_image.reshape(height, width), barycentric=bary_image.reshape(height, width, 3),
                  depth=depth_image.reshape(height, width))


def _groups_by_side(side: np.ndarray, max_candidates: int):
    """(k, triangle ids) for triangles whose pixel bounding box fits a k x k square, in chunks of at most
    ``max_candidates`` (triangle, pixel) pairs."""
    for k in np.unique(side[side > 0]):
        members = np.nonzero(side == k)[0]
        per_chunk = max(1, max_candidates // int(k * k))
        for start in range(0, len(members), per_chunk):
            yield int(k), members[start:start + per_chunk]


def _fragments(a, b, c, area, faces, depth, ids, i0, j0, i1, j1, k: int, width: int):
    """The pixels that triangles ``ids`` cover inside their k x k boxes: (pixel, depth, triangle, barycentric), or
    None when they cover none."""
    offsets = np.arange(k * k)
    jj = j0[ids, None] + (offsets % k)[None, :]
    ii = i0[ids, None] + (offsets // k)[None, :]
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
        return None
    owner = ids[rows]
    bary = np.stack([w0[rows, cols], w1[rows, cols], w2[rows, cols]], 1)
    pixel = (ii[rows, cols] * width + jj[rows, cols]).astype(np.int64)
    return pixel, (bary * depth[faces[owner]]).sum(1), owner, bary
