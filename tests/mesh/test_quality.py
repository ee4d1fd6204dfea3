"""Tests for src/avatar4d/mesh/quality.py and the smoothing in surface.py: roughness on analytic surfaces, the face
region and template distance on the real tracked template (its own surface, and the surface moved by a known
amount), and Taubin smoothing lowering roughness without moving a sphere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from avatar4d.dataset.layout import load_dataset
from avatar4d.mesh.quality import face_region, mesh_quality, normal_roughness_deg, template_distance_m
from avatar4d.mesh.surface import extract_surface, grid_shape, smooth_surface
from avatar4d.tracking.triangulation import face_triangles


def _sphere_density(radius: float, bumps: float = 0.0, resolution: int = 96):
    box_min, box_max = np.full(3, -0.12), np.full(3, 0.12)
    shape = grid_shape(box_max - box_min, resolution)
    axes = [np.linspace(a, b, n) for a, b, n in zip(box_min, box_max, shape)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    distance = np.linalg.norm(grid, axis=-1)
    surface = radius * (1.0 + bumps * np.sign(np.sin(60 * grid[..., 0]) * np.sin(60 * grid[..., 1])))
    return (1000.0 / (1.0 + np.exp(300.0 * (distance - surface)))).astype(np.float32), box_min, box_max


def test_roughness_of_an_icosphere_is_near_zero_and_of_a_plane_zero():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.1)
    roughness = normal_roughness_deg(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    assert roughness.mean() < 0.5  # the neighbours' normals average to the vertex's own on a sphere
    u, v = np.meshgrid(np.linspace(0, 0.1, 8), np.linspace(0, 0.1, 8), indexing="ij")
    vertices = np.stack([u, v, 0.3 * u + 0.1 * v], -1).reshape(-1, 3)  # a tilted plane
    idx = np.arange(64).reshape(8, 8)
    faces = np.concatenate([np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:]], -1).reshape(-1, 3),
                            np.stack([idx[:-1, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 3)])
    np.testing.assert_allclose(normal_roughness_deg(vertices, faces), 0.0, atol=1e-5)


def test_marching_cubes_terraces_are_rough_and_taubin_smoothing_lowers_that_without_moving_the_sphere():
    smooth_density, box_min, box_max = _sphere_density(0.08)
    vertices, faces = extract_surface(smooth_density, 500.0, box_min, box_max)
    terraced_density, _, _ = _sphere_density(0.08, bumps=0.03)
    t_vertices, t_faces = extract_surface(terraced_density, 500.0, box_min, box_max)
    smooth = normal_roughness_deg(vertices, faces).mean()
    terraced = normal_roughness_deg(t_vertices, t_faces).mean()
    assert terraced > smooth + 2.0
    smoothed = smooth_surface(vertices, faces, 10, box_min, box_max)
    assert normal_roughness_deg(smoothed, faces).mean() < smooth
    radii = np.linalg.norm(smoothed, axis=1)
    assert abs(radii.mean() - 0.08) < 0.0005  # Taubin does not shrink the sphere
    np.testing.assert_array_equal(smooth_surface(vertices, faces, 0, box_min, box_max), vertices)


@pytest.fixture(scope="module")
def template(prepared_dataset: Path) -> np.ndarray:
    return load_dataset(prepared_dataset).face_model.template


def test_the_templates_own_surface_is_the_face_region_at_zero_distance(template: np.ndarray):
    vertices, faces = template[:468], face_triangles(template)
    region, coverage = face_region(vertices, faces, template)
    assert region.mean() > 0.8  # all but a few outline vertices
    assert 0.85 < coverage <= 1.0  # the eye openings and the mouth are holes
    quality = mesh_quality(vertices, faces, template)
    assert quality.template_distance_mean_mm < 1e-6 and quality.template_distance_p95_mm < 1e-6
    assert quality.face_vertices == int(region.sum())
    assert 0 < quality.roughness_deg < 30


def test_a_face_moved_out_along_its_normals_is_that_far_from_the_template(template: np.ndarray):
    faces = face_triangles(template)
    normals = trimesh.Trimesh(template[:468], faces, process=False).vertex_normals
    moved = template[:468] + 0.003 * normals
    distance_mm = 1000 * template_distance_m(moved, template)
    assert np.median(distance_mm) == pytest.approx(3.0, abs=0.15)
    quality = mesh_quality(moved, faces, template)
    assert 2.5 < quality.template_distance_mean_mm < 3.05


def test_a_mesh_outside_the_face_outline_has_no_face_region(template: np.ndarray):
    faces = face_triangles(template)
    quality = mesh_quality(template[:468] + np.array([1.0, 0.0, 0.0]), faces, template)
    assert quality.face_vertices == 0 and quality.face_coverage == 0.0 and np.isnan(quality.roughness_deg)
