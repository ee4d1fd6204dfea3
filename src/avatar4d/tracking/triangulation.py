"""MediaPipe's canonical face-mesh triangulation of the 468 face landmarks, read from the installed wheel.

The ``mediapipe==0.10.21`` wheel ships no ``canonical_face_model.obj``; what it ships is the triangulation's edge set,
``mp.solutions.face_mesh_connections.FACEMESH_TESSELATION`` (2556 directed edges, 1322 undirected). The triangles are
its 3-cliques (three landmarks joined pairwise), less the two cliques that close a loop around the nostrils without
being a face (each of their edges is already shared by two faces): 852 triangles, every edge used by one or two of them,
Euler characteristic -2 (a disc with three holes: the two eye openings and the mouth). The irises (468-477) are not
part of it.

The triangles are wound consistently (neighbours traverse their shared edge in opposite directions), and
:func:`face_triangles` orients them so their normals point out of the face of a given template (head frame: z out of
the face).
"""

from __future__ import annotations

import functools
import importlib.util
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

NUM_MESH_LANDMARKS = 468
"""Landmarks the triangulation uses (the irises are left out)."""


@functools.lru_cache(maxsize=1)
def tessellation_edges() -> np.ndarray:
    """(E, 2) int64 undirected edges of MediaPipe's face mesh, sorted, each pair (low, high).

    Read from ``mediapipe/python/solutions/face_mesh_connections.py`` of the installed wheel, a module of plain
    constants, loaded on its own: importing the ``mediapipe`` package would start its native runtime (over a second
    on a quiet machine, half a minute on a busy one).
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("mediapipe is not installed; it ships the face mesh's triangulation")
    path = Path(spec.submodule_search_locations[0]) / "python" / "solutions" / "face_mesh_connections.py"
    module_spec = importlib.util.spec_from_file_location("_avatar4d_face_mesh_connections", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    edges = np.array(sorted({tuple(sorted(edge)) for edge in module.FACEMESH_TESSELATION}), dtype=np.int64)
    edges.setflags(write=False)
    return edges


def triangles_from_edges(edges: np.ndarray) -> np.ndarray:
    """(E, 2) undirected edges of a triangulated surface -> (T, 3) triangles, consistently wound.

    Every 3-clique is a candidate; cliques all of whose edges are shared by three candidates are loops, not faces,
    and are removed. Winding: breadth-first from the first triangle of each connected piece, each neighbour traversing
    the shared edge in the opposite direction.
    """
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in edges.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges.tolist() for c in neighbours[a] & neighbours[b]})
    uses: dict[tuple[int, int], int] = defaultdict(int)
    for tri in cliques:
        for edge in _edges_of(tri):
            uses[tuple(sorted(edge))] += 1
    faces = [tri for tri in cliques if not all(uses[tuple(sorted(edge))] > 2 for edge in _edges_of(tri))]
    return _wind_consistently(faces)


def _edges_of(tri: tuple[int, int, int]) -> list[tuple[int, int]]:
    return [(tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])]


def _wind_consistently(faces: list[tuple[int, int, int]]) -> np.ndarray:
    by_edge: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, tri in enumerate(faces):
        for edge in _edges_of(tri):
            by_edge[tuple(sorted(edge))].append(index)
    wound: list[tuple[int, int, int] | None] = [None] * len(faces)
    for start in range(len(faces)):
        if wound[start] is not None:
            continue
        wound[start] = faces[start]
        queue = deque([start])
        while queue:
            current = queue.popleft()
            for a, b in _edges_of(wound[current]):
                for other in by_edge[tuple(sorted((a, b)))]:
                    if wound[other] is None:
                        tri = faces[other]
                        # the neighbour must traverse the shared edge as (b, a)
                        wound[other] = tri if (b, a) in _edges_of(tri) else (tri[0], tri[2], tri[1])
                        queue.append(other)
    return np.array(wound, dtype=np.int64).reshape(-1, 3)


@functools.lru_cache(maxsize=1)
def _tessellation_triangles() -> np.ndarray:
    triangles = triangles_from_edges(tessellation_edges())
    triangles.setflags(write=False)
    return triangles


def face_triangles(template: np.ndarray) -> np.ndarray:
    """MediaPipe's face-mesh triangles, wound so that their normals point out of the face.

    Args:
        template: (L >= 468, 3) landmarks in the head frame (x to the subject's left, y up, z out of the face),
            e.g. ``FaceModel.template``; only the sign of the summed normal's z matters.

    Returns:
        (852, 3) int64 landmark indices, counter-clockwise seen from outside.
    """
    if template.ndim != 2 or template.shape[0] < NUM_MESH_LANDMARKS or template.shape[1] != 3:
        raise ValueError(f"template must be (L >= {NUM_MESH_LANDMARKS}, 3), got {template.shape}")
    triangles = _tessellation_triangles()
    corners = np.asarray(template, np.float64)[triangles]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).sum(0)
    return triangles.copy() if normal[2] >= 0 else triangles[:, [0, 2, 1]].copy()
