"""Tests for src/avatar4d/geometry/triangles.py: closest points against the plane-or-nearest-edge rule one pair at a
time, and the pruned mesh distance against testing every triangle."""

from __future__ import annotations

import numpy as np
import pytest

from avatar4d.geometry.triangles import closest_points_on_triangles, point_mesh_distance


def closest_by_rule(p, a, b, c):
    """The foot of the perpendicular on the plane if it falls inside the triangle, else the nearest point of the
    three edges, as on paper."""
    normal = np.cross(b - a, c - a)
    normal /= np.linalg.norm(normal)
    foot = p - normal * ((p - a) @ normal)
    inside = all(np.cross(v - u, foot - u) @ normal >= 0 for u, v in ((a, b), (b, c), (c, a)))
    if inside:
        return foot
    best, best_distance = None, np.inf
    for u, v in ((a, b), (b, c), (c, a)):
        t = np.clip((p - u) @ (v - u) / ((v - u) @ (v - u)), 0.0, 1.0)
        q = u + t * (v - u)
        if np.linalg.norm(p - q) < best_distance:
            best, best_distance = q, np.linalg.norm(p - q)
    return best


def test_closest_points_match_the_rule_for_random_pairs_in_every_region():
    gen = np.random.default_rng(0)
    a, b, c = (gen.normal(size=(2000, 3)) for _ in range(3))
    points = gen.normal(size=(2000, 3)) * 2.0  # far and near: vertex, edge and face regions all occur
    got = closest_points_on_triangles(points, a, b, c)
    expected = np.stack([closest_by_rule(*args) for args in zip(points, a, b, c)])
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_points_on_the_triangle_are_their_own_closest_points():
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]]), np.array([[0.0, 1, 0]])
    for point in ([0.2, 0.3, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.0]):
        np.testing.assert_allclose(closest_points_on_triangles(np.array([point]), a, b, c)[0], point, atol=1e-12)


@pytest.mark.parametrize("max_pairs", [1 << 21, 97])
def test_point_mesh_distance_equals_testing_every_triangle(max_pairs):
    gen = np.random.default_rng(1)
    # a bumpy sheet of 20 x 20 vertices, and points near and far from it
    u, v = np.meshgrid(np.linspace(0, 1, 20), np.linspace(0, 1, 20), indexing="ij")
    vertices = np.stack([u, v, 0.05 * np.sin(7 * u) * np.cos(5 * v)], -1).reshape(-1, 3)
    idx = np.arange(400).reshape(20, 20)
    triangles = np.concatenate([np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:]], -1).reshape(-1, 3),
                                np.stack([idx[:-1, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 3)])
    points = gen.uniform(-0.3, 1.3, size=(300, 3)) * np.array([1, 1, 0.5])
    distance, nearest = point_mesh_distance(points, vertices, triangles, max_pairs=max_pairs)
    corners = vertices[triangles]
    brute = np.stack([np.linalg.norm(p - closest_points_on_triangles(np.repeat(p[None], len(triangles), 0),
                                                                     corners[:, 0], corners[:, 1], corners[:, 2]),
                                     axis=1) for p in points])
    np.testing.assert_allclose(distance, brute.min(1), atol=1e-12)
    np.testing.assert_allclose(brute[np.arange(len(points)), nearest], brute.min(1), atol=1e-12)
