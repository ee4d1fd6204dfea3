"""Tests for src/avatar4d/tracking/triangulation.py: MediaPipe's face-mesh triangles from the wheel's edge set."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from avatar4d.tracking.triangulation import NUM_MESH_LANDMARKS, face_triangles, tessellation_edges, triangles_from_edges


def _undirected_uses(triangles: np.ndarray) -> Counter:
    return Counter(tuple(sorted(e)) for t in triangles.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))


def test_tessellation_gives_a_disc_with_three_holes_every_edge_once_or_twice():
    edges = tessellation_edges()
    triangles = triangles_from_edges(edges)
    assert triangles.shape == (852, 3)
    assert set(np.unique(triangles)) == set(range(NUM_MESH_LANDMARKS))
    uses = _undirected_uses(triangles)
    assert set(uses) == {tuple(e) for e in edges.tolist()}  # every edge of the set is used, no other
    assert set(uses.values()) == {1, 2}
    assert NUM_MESH_LANDMARKS - len(edges) + len(triangles) == -2  # Euler: disc minus eyes and mouth
    boundary = sum(1 for v in uses.values() if v == 1)
    assert boundary == 88


def test_triangles_are_wound_consistently():
    triangles = triangles_from_edges(tessellation_edges())
    directed = Counter(e for t in triangles.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert max(directed.values()) == 1  # an interior edge is traversed once each way


def test_triangles_from_edges_of_a_tetrahedron_minus_nothing_is_closed_and_consistent():
    edges = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
    triangles = triangles_from_edges(edges)
    assert len(triangles) == 4
    directed = Counter(e for t in triangles.tolist() for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert set(directed.values()) == {1} and len(directed) == 12


def test_face_triangles_point_out_of_the_face_of_a_real_template(prepared_dataset: Path):
    from avatar4d.dataset.layout import load_dataset

    template = load_dataset(prepared_dataset).face_model.template
    triangles = face_triangles(template)
    corners = template[triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    assert (normals[:, 2] > 0).mean() > 0.8  # most of the face looks along +z (out of the face)
    turned = template * np.array([-1.0, 1.0, -1.0])  # the face turned 180 degrees about y: it looks along -z
    np.testing.assert_array_equal(face_triangles(turned), triangles[:, [0, 2, 1]])


def test_face_triangles_reject_a_template_without_the_mesh_landmarks():
    with pytest.raises(ValueError, match="468"):
        face_triangles(np.zeros((100, 3)))


def test_edges_read_without_importing_mediapipe_are_its_own():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    expected = {tuple(sorted(edge)) for edge in FACEMESH_TESSELATION}
    assert {tuple(edge) for edge in tessellation_edges().tolist()} == expected
