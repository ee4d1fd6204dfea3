"""The pinhole camera: intrinsics in pixels of an image, OpenCV axes (x right, y down, z forward), pixel centres at
integer + 0.5."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])
"""Flips y and z: camera axes with y up and z towards the viewer (a frontal head then has identity rotation)."""


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics in pixels; ``width`` x ``height`` image; pixel centres at integer + 0.5."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fx))

    def resized(self, width: int, height: int) -> PinholeCamera:
        """The same camera for an image resampled to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def project(self, points_camera: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points -> (N, 2) pixels."""
        z = points_camera[:, 2:3]
        return np.concatenate([self.fx * points_camera[:, 0:1] / z + self.cx,
                               self.fy * points_camera[:, 1:2] / z + self.cy], axis=1)

    def to_dict(self) -> dict[str, float | int]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width,
                "height": self.height}
