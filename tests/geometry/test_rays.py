"""Pixels to rays: ray directions project back onto their pixels through the camera matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rays import pixel_centers, pixel_directions

CAMERAS = [
    PinholeCamera(fx=300.0, fy=300.0, cx=128.0, cy=128.0, width=256, height=256),
    # an off-centre crop with non-square pixels and a principal point outside the image
    PinholeCamera(fx=210.5, fy=190.25, cx=-20.0, cy=70.3, width=96, height=64),
]


def test_pixel_centers_are_row_major_at_half_integers():
    centers = pixel_centers(4, 3)
    assert centers.shape == (12, 2)
    expected = [[x + 0.5, y + 0.5] for y in range(3) for x in range(4)]
    assert centers.tolist() == expected


@pytest.mark.parametrize("camera", CAMERAS)
def test_pixel_directions_reproject_to_their_pixels(camera):
    pixels = pixel_centers(camera.width, camera.height)
    rng = np.random.default_rng(0)
    pixels = torch.cat([pixels, torch.from_numpy(rng.uniform(-10, 300, (100, 2))).float()])  # anywhere, sub-pixel
    directions = pixel_directions(camera, pixels)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(len(pixels)))
    assert (directions[:, 2] > 0).all()  # in front of the camera
    for depth in (0.3, 2.0):
        points = directions.double().numpy() * depth / directions[:, 2:].double().numpy()
        np.testing.assert_allclose(camera.project(points), pixels.double().numpy(), atol=2e-4)
    # and the scale along the ray does not matter
    np.testing.assert_allclose(camera.project(directions.double().numpy() * 5.0), pixels.double().numpy(), atol=2e-4)


def test_the_principal_point_looks_straight_ahead():
    camera = CAMERAS[0]
    direction = pixel_directions(camera, torch.tensor([[camera.cx, camera.cy]]))
    assert direction.tolist() == [[0.0, 0.0, 1.0]]
