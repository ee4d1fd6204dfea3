"""The pinhole camera against OpenCV's projection, the crop camera against the source camera, and the crop choice."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from avatar4d.geometry.camera import PinholeCamera
from avatar4d.tracking.camera import SquareCrop, choose_crop, crop_camera, source_camera
from avatar4d.tracking.landmarks import FaceBox, FaceDetector


def random_points_in_front(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-0.2, 0.2, count), rng.uniform(-0.2, 0.2, count), rng.uniform(0.3, 1.0, count)])


def test_project_matches_opencv():
    camera = PinholeCamera(fx=500.0, fy=480.0, cx=320.5, cy=181.0, width=640, height=360)
    points = random_points_in_front(50)
    expected, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera.matrix, None)
    np.testing.assert_allclose(camera.project(points), expected.reshape(-1, 2), rtol=0, atol=1e-9)


@pytest.mark.parametrize("width, height", [(640, 360), (1080, 1920), (512, 512)])
def test_source_camera_spans_the_field_of_view_across_the_longer_side(width, height):
    camera = source_camera(width, height, 70.0)
    longer_focal = camera.fx if width >= height else camera.fy
    longer = max(width, height)
    assert math.degrees(2 * math.atan(0.5 * longer / longer_focal)) == pytest.approx(70.0)
    assert camera.fx == camera.fy
    assert (camera.cx, camera.cy) == (width / 2, height / 2)
    if width >= height:
        assert camera.fov_x_deg == pytest.approx(70.0)


@pytest.mark.parametrize("fov", [5.0, 170.0])
def test_source_camera_refuses_impossible_field_of_view(fov):
    with pytest.raises(ValueError, match="field of view"):
        source_camera(640, 360, fov)


def test_crop_camera_projects_where_the_crop_moves_source_pixels():
    source = source_camera(1920, 1080, 70.0)
    crop = SquareCrop(x0=700.0, y0=100.0, side=900.0, size=256)
    camera = crop_camera(source, crop)
    points = random_points_in_front(40, seed=1)
    np.testing.assert_allclose(camera.project(points), crop.source_to_crop(source.project(points)), atol=1e-9)
    assert (camera.width, camera.height) == (256, 256)


def test_resized_camera_scales_pixel_coordinates():
    camera = PinholeCamera(300.0, 300.0, 120.0, 130.0, 256, 256)
    points = random_points_in_front(20, seed=2)
    np.testing.assert_allclose(camera.resized(512, 512).project(points), 2.0 * camera.project(points), atol=1e-9)
    np.testing.assert_allclose(camera.resized(64, 128).project(points),
                               camera.project(points) * np.array([0.25, 0.5]), atol=1e-9)


def test_crop_apply_cuts_and_resizes(face_frames):
    frame = face_frames[0]
    crop = SquareCrop(x0=112.0, y0=0.0, side=360.0, size=256)
    expected = cv2.resize(frame[0:360, 112:472], (256, 256), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop.apply(frame), expected)
    np.testing.assert_allclose(crop.source_to_crop(np.array([[112.0, 0.0], [472.0, 360.0]])), [[0, 0], [256, 256]])
    with pytest.raises(ValueError, match="does not fit"):
        SquareCrop(x0=400.0, y0=0.0, side=360.0, size=256).apply(frame)


def assert_square_inside(crop: SquareCrop, width: int, height: int) -> None:
    assert crop.side == int(crop.side) and crop.x0 == int(crop.x0) and crop.y0 == int(crop.y0)
    assert crop.x0 >= 0 and crop.y0 >= 0
    assert crop.x0 + crop.side <= width and crop.y0 + crop.side <= height


def test_crop_around_the_real_face_is_square_inside_the_frame_and_holds_the_face(face_frames):
    with FaceDetector() as detector:
        boxes = [detector.detect(image)[0] for image in face_frames[::6]]
    crop = choose_crop(boxes, 640, 360, 256)
    assert_square_inside(crop, 640, 360)
    frame = face_frames[0]
    assert crop.apply(frame).shape == (256, 256, 3)
    for box in boxes:
        assert crop.x0 <= box.x0 and box.x1 <= crop.x0 + crop.side
        assert crop.y0 <= box.y0 and box.y1 <= crop.y0 + crop.side


@pytest.mark.parametrize("width, height", [(640, 360), (360, 640), (3840, 2160), (500, 500)])
def test_crop_stays_square_and_inside_for_faces_anywhere(width, height):
    rng = np.random.default_rng(width + height)
    for _ in range(200):
        size = rng.uniform(0.05, 1.2) * min(width, height)
        cx, cy = rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height
        motion = rng.uniform(0, 0.3) * min(width, height)
        boxes = []
        for _ in range(int(rng.integers(1, 8))):
            x, y = cx + rng.uniform(-motion, motion), cy + rng.uniform(-motion, motion)
            boxes.append(FaceBox(x - size / 2, y - size / 2, x + size / 2, y + size / 2, 0.9))
        crop = choose_crop(boxes, width, height, 256, margin=float(rng.uniform(1.5, 3.0)))
        assert_square_inside(crop, width, height)
        assert crop.side <= min(width, height)


def test_crop_needs_a_face():
    with pytest.raises(ValueError, match="at least one face box"):
        choose_crop([], 640, 360, 256)
