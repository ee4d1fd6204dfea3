"""The pinhole camera of a square head crop, and the crop itself.

Frames: OpenCV camera axes (x right, y down, z forward). Intrinsics are in pixels of the resized crop. The field of
view describes the *source* video frame (a phone front camera: about 70 degrees across its longer side); the crop's
intrinsics follow from it, so an off-centre crop keeps the true principal point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar4d.geometry.camera import PinholeCamera
from avatar4d.tracking.landmarks import FaceBox

PHONE_FRONT_CAMERA_FOV_DEG = 70.0
"""Default field of view across the source frame's longer side (front cameras: 24-28 mm equivalent)."""


@dataclass(frozen=True)
class SquareCrop:
    """A square window of the source frame, resized to ``size`` x ``size``."""

    x0: float
    y0: float
    side: float
    """Side in source pixels."""
    size: int
    """Side of the resized crop in pixels."""

    @property
    def scale(self) -> float:
        """Crop pixels per source pixel."""
        return self.size / self.side

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Cut and resize an (H, W, 3) source frame to (size, size, 3); area filter when shrinking."""
        x0, y0 = int(round(self.x0)), int(round(self.y0))
        side = int(round(self.side))
        window = image[y0:y0 + side, x0:x0 + side]
        if window.shape[0] != side or window.shape[1] != side:
            raise ValueError(f"crop {self} does not fit in a {image.shape[1]}x{image.shape[0]} frame")
        interpolation = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        return cv2.resize(window, (self.size, self.size), interpolation=interpolation)

    def source_to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) source pixel coordinates -> (N, 2) crop pixel coordinates."""
        return (points - np.array([self.x0, self.y0])) * self.scale


def source_camera(width: int, height: int, fov_deg: float) -> PinholeCamera:
    """Intrinsics of a source frame whose longer side spans ``fov_deg``; principal point at its centre."""
    if not 10.0 <= fov_deg <= 150.0:
        raise ValueError(f"field of view must be within 10-150 degrees, got {fov_deg}")
    focal = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return PinholeCamera(focal, focal, width / 2.0, height / 2.0, width, height)


def crop_camera(source: PinholeCamera, crop: SquareCrop) -> PinholeCamera:
    """Intrinsics of the resized crop, derived from the source frame's."""
    s = crop.scale
    return PinholeCamera(source.fx * s, source.fy * s, (source.cx - crop.x0) * s, (source.cy - crop.y0) * s,
                         crop.size, crop.size)


def choose_crop(boxes: list[FaceBox], frame_width: int, frame_height: int, size: int, *,
                margin: float = 2.2) -> SquareCrop:
    """One square crop for the whole video, around the tracked face with room for hair and neck.

    Args:
        boxes: the tracked face's box in the frames that were analysed (source pixels).
        margin: crop side as a multiple of the median face-box size, before adding the face's range of motion.

    Returns:
        the largest-needed square, shifted (never padded) to lie inside the frame, at most the frame's shorter side.
    """
    if not boxes:
        raise ValueError("choose_crop needs at least one face box")
    centers = np.array([b.center for b in boxes])
    sizes = np.array([b.size for b in boxes])
    face = float(np.median(sizes))
    motion = np.percentile(centers, 95, axis=0) - np.percentile(centers, 5, axis=0)
    side = margin * face + float(motion.max())
    side = min(side, float(min(frame_width, frame_height)))
    cx, cy = np.median(centers, axis=0)
    cy -= 0.08 * face  # the face box sits low in the head: leave more room for hair than for chin
    x0 = float(np.clip(cx - side / 2, 0.0, frame_width - side))
    y0 = float(np.clip(cy - side / 2, 0.0, frame_height - side))
    side = float(np.floor(side))
    return SquareCrop(x0=float(np.floor(x0)), y0=float(np.floor(y0)), side=side, size=size)
