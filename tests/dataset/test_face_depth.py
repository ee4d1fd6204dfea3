"""Tests for src/avatar4d/dataset/face_depth.py: the rasterised distance against ray-triangle intersection one pixel
at a time, normals and validity on planes of known orientation, and the real face mesh against the tracked landmarks'
own distances."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar4d.dataset.face_depth import (
    FaceDepthConfig,
    face_depth,
    face_depth_targets,
    face_mesh_in_camera,
    rasterize_depth,
    sample_face_depth,
)
from avatar4d.dataset.layout import load_dataset
from avatar4d.dataset.sampling import landmark_targets
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rigid import invert_rigid
from avatar4d.geometry.triangles import point_mesh_distance
from avatar4d.tracking.triangulation import face_triangles

EVERY_COVERED_PIXEL = FaceDepthConfig(max_incidence_deg=90.0, margin_fraction=0.0)


def nearest_hit_by_loop(vertices, triangles, camera):
    """(H, W) distance to the nearest triangle along each pixel centre's ray (NaN: none), by Moller-Trumbore, one
    pixel and one triangle at a time, as on paper."""
    out = np.full((camera.height, camera.width), np.nan)
    for i in range(camera.height):
        for j in range(camera.width):
            ray = np.array([(j + 0.5 - camera.cx) / camera.fx, (i + 0.5 - camera.cy) / camera.fy, 1.0])
            ray /= np.linalg.norm(ray)
            for a, b, c in vertices[triangles]:
                e1, e2 = b - a, c - a
                p = np.cross(ray, e2)
                det = e1 @ p
                if abs(det) < 1e-15:
                    continue
                u = (-a @ p) / det
                q = np.cross(-a, e1)
                v = (ray @ q) / det
                t = (e2 @ q) / det
                if u >= 0 and v >= 0 and u + v <= 1 and t > 0 and not t >= out[i, j]:
                    out[i, j] = t
    return out


CAMERA = PinholeCamera(fx=40.0, fy=40.0, cx=16.0, cy=12.0, width=32, height=24)


def test_one_triangle_distance_matches_ray_triangle_intersection():
    vertices = np.array([[-0.1213, -0.0807, 0.5], [0.1519, -0.0211, 0.7], [-0.0317, 0.1093, 0.4]])
    triangles = np.array([[0, 2, 1]])  # counter-clockwise seen from the camera (-z side): normal towards it
    depth = rasterize_depth(vertices, triangles, CAMERA, EVERY_COVERED_PIXEL)
    expected = nearest_hit_by_loop(vertices, triangles, CAMERA)
    assert np.isfinite(expected).sum() > 60
    np.testing.assert_array_equal(depth.valid, np.isfinite(expected))
    np.testing.assert_allclose(depth.distance[depth.valid], expected[depth.valid], rtol=1e-6)
    assert np.all(np.isnan(depth.distance[~depth.valid])) and np.all(depth.normals[~depth.valid] == 0)


def test_nearer_of_two_crossing_triangles_wins_and_distances_match_the_loop():
    vertices = np.array([[-0.2, -0.15, 0.4], [0.2, -0.15, 0.8], [0.0, 0.2, 0.6],
                         [-0.2, 0.15, 0.8], [0.2, 0.15, 0.4], [0.0, -0.2, 0.6]])
    triangles = np.array([[0, 2, 1], [3, 5, 4]])
    depth = rasterize_depth(vertices, triangles, CAMERA, EVERY_COVERED_PIXEL)
    expected = nearest_hit_by_loop(vertices, triangles, CAMERA)
    covered = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(depth.distance) | ~depth.valid, np.ones_like(covered))
    both = depth.valid & covered
    assert both.sum() > 100
    np.testing.assert_allclose(depth.distance[both], expected[both], rtol=1e-6)


def test_plane_normal_points_to_the_camera_and_grazing_or_backfacing_pixels_are_not_valid():
    # a square tilted 60 degrees about the x axis, 0.5 m away: normal (0, sin 60, -cos 60) faces the camera
    angle = np.radians(60.0)
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * 0.1
    vertices = np.stack([corners[:, 0], corners[:, 1] * np.cos(angle), 0.5 + corners[:, 1] * np.sin(angle)], 1)
    facing = np.array([[0, 2, 1], [0, 3, 2]])
    depth = rasterize_depth(vertices, facing, CAMERA, EVERY_COVERED_PIXEL)
    assert depth.valid.sum() > 100
    np.testing.assert_allclose(depth.normals[depth.valid], np.broadcast_to(
        [0.0, np.sin(angle), -np.cos(angle)], (depth.valid.sum(), 3)), atol=1e-6)
    # 60 degrees of incidence on the optical axis, more below it (rays tilt down, away from the normal)
    steep = rasterize_depth(vertices, facing, CAMERA, FaceDepthConfig(max_incidence_deg=60.0, margin_fraction=0.0))
    assert 0 < steep.valid.sum() < depth.valid.sum()
    assert not rasterize_depth(vertices, facing[:, [0, 2, 1]], CAMERA, EVERY_COVERED_PIXEL).valid.any()


def test_margin_erodes_the_covered_region():
    vertices = np.array([[-0.2, -0.2, 0.5], [0.2, -0.2, 0.5], [0.2, 0.2, 0.5], [-0.2, 0.2, 0.5]])
    triangles = np.array([[0, 2, 1], [0, 3, 2]])
    full = rasterize_depth(vertices, triangles, CAMERA, EVERY_COVERED_PIXEL)
    eroded = rasterize_depth(vertices, triangles, CAMERA, FaceDepthConfig(max_incidence_deg=90.0,
                                                                          margin_fraction=1.0 / 32))
    rows, cols = np.nonzero(full.valid)
    assert full.valid.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a full rectangle of pixels
    assert eroded.valid.sum() == (np.ptp(rows) - 1) * (np.ptp(cols) - 1)  # one pixel less on every side


def test_vertices_behind_the_camera_are_refused():
    with pytest.raises(ValueError, match="in front of the camera"):
        rasterize_depth(np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), np.array([[0, 1, 2]]), CAMERA)


# ------------------------------------------------------------------------------------------------ on real frames


def test_real_face_depth_passes_through_the_tracked_landmarks(prepared_dataset: Path):
    """At the pixel centre nearest each landmark (inside the outline), the rasterised distance is the landmark's own
    distance from the camera, to within the surface's slope over half a pixel."""
    dataset = load_dataset(prepared_dataset)
    size = 256
    index = int(dataset.train_indices[len(dataset.train_indices) // 2])
    depth = face_depth(dataset, index, size)
    assert 0.1 < depth.valid.mean() < 0.8
    targets = landmark_targets(dataset, np.array([index]))  # inside the outline, irises included
    pixels = (targets.pixels[0].numpy() * size).astype(int)  # the pixel each landmark falls in
    rows, cols = pixels[:, 1], pixels[:, 0]
    seen = depth.valid[rows, cols]
    assert seen.mean() > 0.5  # the rest: irises, eye and lip contours (holes of the mesh, eroded by the margin)
    error = np.abs(depth.distance[rows, cols][seen] - targets.distance[0].numpy()[seen])
    assert np.median(error) < 0.001 and np.percentile(error, 90) < 0.002, (np.median(error), error.max())
    # normals face the camera
    centre = (np.stack(np.nonzero(depth.valid), 1) + 0.5)[:, ::-1]
    rays = np.concatenate([(centre - size / 2) / dataset.camera.resized(size, size).fx, np.ones((len(centre), 1))], 1)
    assert ((depth.normals[depth.valid] * rays).sum(1) < 0).all()


def test_face_depth_targets_keep_exactly_the_valid_pixels(prepared_dataset: Path):
    dataset = load_dataset(prepared_dataset)
    indices = dataset.train_indices[:3]
    targets = face_depth_targets(dataset, indices, 64)
    assert targets.offsets.shape == (4,) and int(targets.offsets[-1]) == targets.pixels.shape[0]
    for f, index in enumerate(indices):
        depth = face_depth(dataset, int(index), 64)
        span = slice(int(targets.offsets[f]), int(targets.offsets[f + 1]))
        np.testing.assert_array_equal(targets.pixels[span].numpy(), np.flatnonzero(depth.valid))
        np.testing.assert_allclose(targets.distance[span].numpy(), depth.distance[depth.valid])
        np.testing.assert_allclose(targets.normals[span].numpy(), depth.normals[depth.valid])
    assert face_mesh_in_camera(dataset, indices).shape == (3, 468, 3)


def test_sampled_rays_end_on_their_frames_face_surface_in_the_head_frame(prepared_dataset: Path):
    dataset = load_dataset(prepared_dataset)
    indices = dataset.train_indices[:6]
    targets = face_depth_targets(dataset, indices, 96)
    head_from_camera = invert_rigid(torch.from_numpy(dataset.tracking.camera_from_head[indices]).float())
    rows = torch.tensor([4, 1, 2])
    rays = sample_face_depth(targets, head_from_camera, rows, 50, torch.Generator().manual_seed(0))
    assert rays.origins.shape == (150, 3) and rays.frame_ids.tolist() == [0] * 50 + [1] * 50 + [2] * 50
    torch.testing.assert_close(rays.directions.norm(dim=1), torch.ones(150))
    ends = (rays.origins + rays.distance[:, None] * rays.directions).double().numpy()
    model = dataset.face_model
    triangles = face_triangles(model.template)
    for position, row in enumerate(rows.tolist()):
        head = model.landmarks(dataset.tracking.expression[indices[row]][None].astype(np.float64))[0, :468]
        mine = rays.frame_ids.numpy() == position
        distance, nearest = point_mesh_distance(ends[mine], head, triangles)
        assert distance.max() < 1e-5  # float32 rays, metres
        corners = head[triangles[nearest]]
        face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        assert ((face_normals * rays.normals[mine].numpy()).sum(1) > 0).all()  # out of the face, head frame
        assert ((rays.normals[mine] * rays.directions[mine]).sum(1) < 0).all()  # towards the camera


def test_sampling_skips_frames_without_valid_pixels(prepared_dataset: Path):
    dataset = load_dataset(prepared_dataset)
    indices = dataset.train_indices[:2]
    targets = face_depth_targets(dataset, indices, 48)
    emptied = dataclasses.replace(targets, offsets=torch.tensor([0, 0, int(targets.offsets[2] - targets.offsets[1])]),
                                  pixels=targets.pixels[int(targets.offsets[1]):],
                                  distance=targets.distance[int(targets.offsets[1]):],
                                  normals=targets.normals[int(targets.offsets[1]):])
    poses = invert_rigid(torch.from_numpy(dataset.tracking.camera_from_head[indices]).float())
    rays = sample_face_depth(emptied, poses, torch.tensor([0, 1]), 7, torch.Generator().manual_seed(0))
    assert rays.frame_ids.tolist() == [1] * 7
    with pytest.raises(ValueError, match="frames"):
        sample_face_depth(targets, poses[:1], torch.tensor([0]), 7, torch.Generator().manual_seed(0))
