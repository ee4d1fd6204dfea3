"""Tests for src/avatar4d/geometry/raster.py: the rasteriser against point-in-triangle and nearest-depth loops."""

from __future__ import annotations

import numpy as np
import pytest

from avatar4d.geometry.raster import rasterize


def point_in_triangle(p, a, b, c) -> bool:
    """Same side of all three edges (either winding), as on paper."""
    def cross(o, u, v):
        return (u[0] - o[0]) * (v[1] - o[1]) - (u[1] - o[1]) * (v[0] - o[0])
    d1, d2, d3 = cross(a, b, p), cross(b, c, p), cross(c, a, p)
    return (d1 >= 0 and d2 >= 0 and d3 >= 0) or (d1 <= 0 and d2 <= 0 and d3 <= 0)


def plane_depth(p, a, b, c, za, zb, zc) -> float:
    """Depth of the triangle's plane at pixel point p, by solving for the barycentric weights."""
    matrix = np.array([[a[0], b[0], c[0]], [a[1], b[1], c[1]], [1.0, 1.0, 1.0]])
    weights = np.linalg.solve(matrix, np.array([p[0], p[1], 1.0]))
    return float(weights @ np.array([za, zb, zc]))


def nearest_by_loop(xy, depth, faces, height, width):
    """(H, W) index of the nearest covering triangle (-1 none), one pixel and one triangle at a time."""
    out = np.full((height, width), -1)
    best = np.full((height, width), np.inf)
    for i in range(height):
        for j in range(width):
            p = (j + 0.5, i + 0.5)
            for t, (ia, ib, ic) in enumerate(faces):
                if point_in_triangle(p, xy[ia], xy[ib], xy[ic]):
                    z = plane_depth(p, xy[ia], xy[ib], xy[ic], depth[ia], depth[ib], depth[ic])
                    if z < best[i, j]:
                        best[i, j], out[i, j] = z, t
    return out, best


@pytest.mark.parametrize("winding", ["counter-clockwise", "clockwise"])
def test_rasterize_one_triangle_covers_exactly_the_pixels_inside(winding):
    xy = np.array([[3.3, 2.7], [37.9, 9.2], [12.4, 26.1]])
    if winding == "clockwise":
        xy = xy[[0, 2, 1]]
    depth = np.array([1.0, 2.0, 3.0])
    raster = rasterize(xy, depth, np.array([[0, 1, 2]]), 30, 40)
    expected, expected_depth = nearest_by_loop(xy, depth, [(0, 1, 2)], 30, 40)
    assert expected.max() == 0 and (expected == 0).sum() > 100
    np.testing.assert_array_equal(raster.face, expected)
    inside = raster.face == 0
    np.testing.assert_allclose(raster.depth[inside], expected_depth[inside])
    assert np.all(np.isinf(raster.depth[~inside]))
    # barycentric weights reproduce each pixel centre
    rows, cols = np.nonzero(inside)
    centres = raster.barycentric[rows, cols] @ xy
    np.testing.assert_allclose(centres, np.stack([cols + 0.5, rows + 0.5], 1), atol=1e-9)


def test_rasterize_triangle_larger_than_the_image_is_clipped():
    xy = np.array([[-50.0, -40.0], [90.0, -20.0], [10.0, 80.0]])
    raster = rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), 16, 20)
    expected, _ = nearest_by_loop(xy, np.zeros(3), [(0, 1, 2)], 16, 20)
    np.testing.assert_array_equal(raster.face, expected)


def test_rasterize_z_buffer_keeps_the_nearer_of_two_overlapping_triangles():
    # two triangles covering the same region, their depth planes crossing in the middle
    xy = np.array([[2.2, 2.1], [30.7, 3.3], [15.1, 27.6], [1.6, 24.9], [31.4, 25.3], [16.3, 1.2]])
    depth = np.array([1.0, 1.0, 5.0, 4.0, 4.0, 0.5])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    raster = rasterize(xy, depth, faces, 30, 34)
    expected, expected_depth = nearest_by_loop(xy, depth, faces.tolist(), 30, 34)
    assert (expected == 0).sum() > 20 and (expected == 1).sum() > 20
    np.testing.assert_array_equal(raster.face, expected)
    covered = expected >= 0
    np.testing.assert_allclose(raster.depth[covered], expected_depth[covered])
    # the order of the triangles does not matter
    swapped = rasterize(xy, depth, faces[::-1], 30, 34)
    np.testing.assert_array_equal(np.where(swapped.face >= 0, 1 - swapped.face, -1), expected)


def test_rasterize_degenerate_and_offscreen_triangles_draw_nothing():
    xy = np.array([[1.0, 1.0], [5.0, 5.0], [9.0, 9.0], [-9.0, -9.0], [-5.0, -9.0], [-7.0, -3.0]])
    raster = rasterize(xy, np.zeros(6), np.array([[0, 1, 2], [3, 4, 5]]), 12, 12)
    assert np.all(raster.face == -1)
