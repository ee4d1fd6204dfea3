"""Head-pose edits and expression edits (geometry/angles.py): angle conventions, parsing, clamping."""

from __future__ import annotations

import numpy as np
import pytest

from avatar4d.geometry.angles import HeadRotation, rotated_pose
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.tracking.head_pose import head_angles_deg, pose_from_head_angles, project_template

CAMERA = PinholeCamera(500.0, 500.0, 256.0, 256.0, 512, 512)
FRONTAL = pose_from_head_angles(np.zeros(3), np.array([0.0, 0.0, 0.45]))
NOSE = np.array([[0.0, -0.01, 0.05]])  # in front of the head origin, as the nose tip is
LEFT = np.array([[0.05, 0.0, 0.0]])  # the subject's left (image right in a frontal view)


def nose_pixel(rotation: HeadRotation) -> np.ndarray:
    return project_template(NOSE, rotated_pose(FRONTAL, rotation), CAMERA)[0]


def test_positive_pitch_lifts_the_face():
    assert nose_pixel(HeadRotation(pitch=20.0))[1] < nose_pixel(HeadRotation())[1] - 5


def test_positive_yaw_turns_the_face_to_the_subjects_left():
    assert nose_pixel(HeadRotation(yaw=20.0))[0] > nose_pixel(HeadRotation())[0] + 5


def test_positive_roll_is_counter_clockwise_as_the_camera_sees_it():
    """Counter-clockwise on screen (y down): the subject's left side, on the image right, moves up."""
    before = project_template(LEFT, rotated_pose(FRONTAL, HeadRotation()), CAMERA)[0]
    after = project_template(LEFT, rotated_pose(FRONTAL, HeadRotation(roll=20.0)), CAMERA)[0]
    assert after[1] < before[1] - 5


@pytest.mark.parametrize("angles", [(10.0, 0.0, 0.0), (0.0, -15.0, 0.0), (0.0, 0.0, 7.0), (12.0, 8.0, -5.0)])
def test_head_rotation_angles_match_the_tracking_angles_from_a_frontal_pose(angles):
    """Editing a frontal head by (yaw, pitch, roll) gives the pose that tracking would report with those angles."""
    pose = rotated_pose(FRONTAL, HeadRotation(*angles))
    np.testing.assert_allclose(head_angles_deg(pose[None])[0], angles, atol=1e-9)


@pytest.mark.parametrize("angles", [(10.0, -20.0, 5.0), (-30.0, 12.0, -8.0)])
def test_head_rotation_round_trips_through_its_matrix(angles):
    rotation = HeadRotation.from_matrix(HeadRotation(*angles).matrix())
    np.testing.assert_allclose([rotation.yaw, rotation.pitch, rotation.roll], angles, atol=1e-9)

