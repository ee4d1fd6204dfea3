"""Per-frame masks: the person (MediaPipe selfie segmentation, refined) and face regions (from the landmarks)."""

from __future__ import annotations

import os
from types import TracebackType

import cv2
import numpy as np

from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.landmarks import quiet_native_logs, start_quietly

os.environ.setdefault("GLOG_minloglevel", "2")


class PersonSegmenter:
    """Soft person masks: selfie segmentation (general model, 256x256), refined.

    Refinement (:meth:`refine`): the face region from the landmarks is always person (the segmenter sometimes loses
    parts of a face under strong light), and the soft mask is edge-aligned to the image with a guided filter, so hair
    and shoulder borders follow the pixels rather than the model's coarse 256-pixel output.
    The two steps are separate so the model can run in a thread while the landmarks are tracked.
    """

    def __init__(self, *, guided_radius: int = 6, guided_eps: float = 1e-3) -> None:
        import mediapipe as mp

        with quiet_native_logs():
            self._segmenter = start_quietly(mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0))
        self._radius = guided_radius
        self._eps = guided_eps

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 raw person probability from the model."""
        height, width = image.shape[:2]
        small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA) if max(height, width) > 256 else image
        soft = self._segmenter.process(small).segmentation_mask
        return cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR)

    def refine(self, image: np.ndarray, soft: np.ndarray, landmarks_px: np.ndarray | None) -> np.ndarray:
        """Refined (H, W) float32 person probability in [0, 1]."""
        height, width = soft.shape
        if landmarks_px is not None:
            face = face_region_mask(landmarks_px, height, width) > 0
            soft = np.where(face, np.float32(1.0), soft)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        return np.clip(fast_guided_filter(gray, soft.astype(np.float32), self._radius, self._eps), 0.0, 1.0)

    def segment(self, image: np.ndarray, landmarks_px: np.ndarray | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 refined person probability in [0, 1]."""
        return self.refine(image, self.predict(image), landmarks_px)

    def close(self) -> None:
        self._segmenter.close()

    def __enter__(self) -> PersonSegmenter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def fast_guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float, subsample: int = 2) -> np.ndarray:
    """Edge-preserving smoothing of ``source`` steered by the edges of ``guide`` (He & Sun's fast guided filter).

    The local linear coefficients are estimated on images ``subsample`` times smaller and applied at full size;
    ``subsample=1`` is the exact guided filter (He et al. 2010) with a grey guide.

    Args:
        guide: (H, W) float32 grey image in [0, 1].
        source: (H, W) float32 image to filter.
        radius: window radius in full-resolution pixels.
        eps: regularisation (larger = smoother).

    Returns:
        (H, W) float32.
    """
    height, width = source.shape
    if subsample > 1:
        size = (width // subsample, height // subsample)
        small_guide = cv2.resize(guide, size, interpolation=cv2.INTER_AREA)
        small_source = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
    else:
        small_guide, small_source = guide, source
    r = max(1, radius // subsample)
    window = (2 * r + 1, 2 * r + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, window, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(small_guide), box(small_source)
    cov_ip = box(small_guide * small_source) - mean_i * mean_p
    var_i = box(small_guide * small_guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    mean_a, mean_b = box(a), box(b)
    if subsample > 1:
        mean_a = cv2.resize(mean_a, (width, height), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (width, height), interpolation=cv2.INTER_LINEAR)
    return mean_a * guide + mean_b


def _polygon_mask(points: np.ndarray, height: int, width: int, dilate_px: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    hull = cv2.convexHull(np.round(points[:, :2]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    if dilate_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        mask = cv2.dilate(mask, kernel)
    return mask


def face_region_mask(landmarks_px: np.ndarray, height: int, width: int, *, dilate_px: int = 0) -> np.ndarray:
    """(L, >=2) landmarks in pixels -> (H, W) uint8 mask (255 inside the face outline)."""
    return _polygon_mask(landmarks_px[list(lm.FACE_OVAL)], height, width, dilate_px)


def mouth_region_mask(landmarks_px: np.ndarray, height: int, width: int, *, dilate_px: int = 4) -> np.ndarray:
    """(L, >=2) landmarks in pixels -> (H, W) uint8 mask of the lips and mouth (255 inside)."""
    return _polygon_mask(landmarks_px[list(lm.LIPS_OUTER)], height, width, dilate_px)


def eyes_region_mask(landmarks_px: np.ndarray, height: int, width: int, *, dilate_px: int = 3) -> np.ndarray:
    """(L, >=2) landmarks in pixels -> (H, W) uint8 mask of both eyes and brows (255 inside)."""
    right = list(lm.RIGHT_EYE_CORNERS) + [i for pair in lm.RIGHT_EYE_LIDS for i in pair] + list(lm.RIGHT_BROW)
    left = list(lm.LEFT_EYE_CORNERS) + [i for pair in lm.LEFT_EYE_LIDS for i in pair] + list(lm.LEFT_BROW)
    return np.maximum(_polygon_mask(landmarks_px[right], height, width, dilate_px),
                      _polygon_mask(landmarks_px[left], height, width, dilate_px))


def neck_cut_mask(camera_matrix: np.ndarray, camera_from_head: np.ndarray, chin_head: np.ndarray, height: int,
                  width: int, below_chin_m: float = 0.045) -> np.ndarray:
    """Pixels above a cut across the neck, ``below_chin_m`` under the chin (a plane of the head frame, projected).

    The head field models what is above the cut; the torso below it belongs to the static scene plate, so the body's
    own motion does not smear the head.

    Args:
        camera_matrix: (3, 3) intrinsics.
        camera_from_head: (4, 4) head pose.
        chin_head: (3,) the chin landmark of the template, head frame.

    Returns:
        (H, W) bool, True on the head's side of the cut.
    """
    anchor = chin_head + np.array([0.0, -below_chin_m, 0.0])
    points = np.stack([anchor, anchor + np.array([0.1, 0.0, 0.0]), anchor + np.array([0.0, 0.1, 0.0])])
    camera_points = points @ camera_from_head[:3, :3].T + camera_from_head[:3, 3]
    pixels = camera_points[:, :2] / camera_points[:, 2:3] * np.diag(camera_matrix)[:2] + camera_matrix[:2, 2]
    origin, along, up = pixels
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    direction = along - origin
    side = direction[0] * (ys - origin[1]) - direction[1] * (xs - origin[0])
    up_side = direction[0] * (up[1] - origin[1]) - direction[1] * (up[0] - origin[0])
    return side * up_side > 0
