"""Head angles in degrees, one convention everywhere: yaw turns the face to the subject's left, pitch lifts it,
roll tilts it counter-clockwise as the camera sees it (intrinsic yaw about y, then pitch about x, then roll about z,
in a frame with y up and z towards the viewer)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

_PITCH_UP = np.array([1.0, -1.0, 1.0])
"""A rotation about +x turns the nose down; pitch counts up as positive."""


def yaw_pitch_roll_deg(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations (y up, z towards the viewer) -> (..., 3) yaw, pitch, roll in degrees."""
    return Rotation.from_matrix(rotation).as_euler("YXZ", degrees=True) * _PITCH_UP


def rotation_from_yaw_pitch_roll(angles_deg: np.ndarray) -> np.ndarray:
    """Inverse of :func:`yaw_pitch_roll_deg`: (..., 3) degrees -> (..., 3, 3) rotations."""
    return Rotation.from_euler("YXZ", np.asarray(angles_deg, dtype=np.float64) * _PITCH_UP,
                               degrees=True).as_matrix()


@dataclass(frozen=True)
class HeadRotation:
    """A head rotation in its own frame relative to a reference pose, degrees (the angles of the module doc)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def matrix(self) -> np.ndarray:
        """(3, 3) rotation in the head frame."""
        return rotation_from_yaw_pitch_roll(np.array([self.yaw, self.pitch, self.roll]))

    @classmethod
    def from_matrix(cls, rotation: np.ndarray) -> HeadRotation:
        """Inverse of :meth:`matrix`."""
        yaw, pitch, roll = yaw_pitch_roll_deg(rotation)
        return cls(float(yaw), float(pitch), float(roll))


def rotated_pose(camera_from_head: np.ndarray, rotation: HeadRotation) -> np.ndarray:
    """(4, 4) ``camera_from_head`` with the head turned about its own origin."""
    turn = np.eye(4)
    turn[:3, :3] = rotation.matrix()
    return camera_from_head @ turn
