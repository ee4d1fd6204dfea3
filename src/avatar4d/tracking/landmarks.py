"""MediaPipe face detection (all faces, boxes) and Face Mesh (478 landmarks with irises) behind small wrappers.

Both models ship inside the ``mediapipe==0.10.21`` wheel (legacy ``mp.solutions`` API), so nothing is downloaded.
Landmarks are returned in pixels of the image they were found in: ``(x, y, z)`` with ``z`` MediaPipe's relative
depth scaled like ``x`` (by the image width); smaller ``z`` is closer to the camera.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_LANDMARKS = 478


_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_stderr: int | None = None


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence what MediaPipe's C++ side prints on stderr while its graphs start (XNNPACK, absl, calculator notes).

    Process-wide (file descriptor 2) and reference-counted, so nested or concurrent uses restore stderr once.
    """
    global _quiet_depth, _saved_stderr
    with _quiet_lock:
        if _quiet_depth == 0:
            sys.stderr.flush()
            _saved_stderr = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _saved_stderr is not None:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None


def start_quietly(solution, size: int = 64):
    """Warm a MediaPipe solution up on a blank image with native logs silenced, so its start-up messages never reach
    the terminal later (from whichever thread first uses it). Returns the solution."""
    with quiet_native_logs():
        solution.process(np.zeros((size, size, 3), np.uint8))
    return solution


STABLE_LANDMARKS: tuple[int, ...] = (
    # forehead and glabella
    10, 151, 9, 8, 109, 338, 67, 297, 108, 337,
    # nose bridge and tip
    168, 6, 197, 195, 5, 4, 1,
    # eye corners
    33, 133, 362, 263,
    # cheekbones and temples
    116, 345, 117, 346, 123, 352, 50, 280, 127, 356, 234, 454, 162, 389, 21, 251,
    # nose wings
    129, 358,
)
"""Points that move with the skull but hardly with expression: the rigid head pose is solved on these."""

RIGHT_EYE_CORNERS = (33, 133)
"""Subject's right eye, outer then inner corner (image left in a frontal view)."""
LEFT_EYE_CORNERS = (362, 263)
"""Subject's left eye, inner then outer corner."""
RIGHT_EYE_LIDS = ((159, 145), (158, 153), (160, 144))
"""Upper/lower eyelid pairs of the right eye."""
LEFT_EYE_LIDS = ((386, 374), (385, 380), (387, 373))
RIGHT_IRIS_CENTER = 468
LEFT_IRIS_CENTER = 473
RIGHT_BROW = (70, 63, 105, 66, 107)
LEFT_BROW = (300, 293, 334, 296, 336)
MOUTH_CORNERS = (61, 291)
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
UPPER_LIP_OUTER, LOWER_LIP_OUTER = 0, 17
NOSE_TIP = 4
CHIN = 152
FOREHEAD = 10

FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149,
    150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
"""The face outline, in order around the face."""
LIPS_OUTER: tuple[int, ...] = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
)
"""The outer lip line, in order."""


@dataclass(frozen=True)
class FaceBox:
    """A detected face, in pixels of the image it was found in."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

    @property
    def size(self) -> float:
        """Side of the square with the box's area."""
        return float(np.sqrt(max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)))

    def iou(self, other: FaceBox) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = (self.x1 - self.x0) * (self.y1 - self.y0) + (other.x1 - other.x0) * (other.y1 - other.y0) - inter
        return inter / union if union > 0 else 0.0


class FaceDetector:
    """MediaPipe BlazeFace (full-range model): every face in an image, largest first."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        with quiet_native_logs():
            self._detector = start_quietly(mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence))

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an (H, W, 3) uint8 RGB image, sorted by area, largest first."""
        height, width = image.shape[:2]
        result = self._detector.process(image)
        boxes = []
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            boxes.append(FaceBox(x0=box.xmin * width, y0=box.ymin * height, x1=(box.xmin + box.width) * width,
                                 y1=(box.ymin + box.height) * height, score=float(detection.score[0])))
        return sorted(boxes, key=lambda b: b.size, reverse=True)

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class FaceMeshTracker:
    """MediaPipe Face Mesh with attention (irises) in video mode: one face, tracked from frame to frame.

    Args:
        static_images: detect afresh in every image instead of tracking (for unrelated stills).
    """

    def __init__(self, *, static_images: bool = False, min_confidence: float = 0.5) -> None:
        self._options = {"static_image_mode": static_images, "max_num_faces": 1, "refine_landmarks": True,
                         "min_detection_confidence": min_confidence, "min_tracking_confidence": min_confidence}
        self._mesh = None
        self.reset()

    def reset(self) -> None:
        """Forget the face being tracked: the next frame starts with a fresh detection."""
        import mediapipe as mp

        self.close()
        with quiet_native_logs():
            self._mesh = start_quietly(mp.solutions.face_mesh.FaceMesh(**self._options))
        # the landmark calculators log a warning the first time a face goes through them (a blank warm-up image has
        # none): keep native logs silent until then
        self._before_first_face = True

    def track(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of the face in an (H, W, 3) uint8 RGB image.

        Returns:
            (478, 3) float32 ``(x, y, z)`` in pixels (``z`` scaled by the width, smaller is closer), or None when no
            face is found.
        """
        height, width = image.shape[:2]
        if self._before_first_face:
            with quiet_native_logs():
                result = self._mesh.process(image)
            self._before_first_face = not result.multi_face_landmarks
        else:
            result = self._mesh.process(image)
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)
        out[:, 0] *= width
        out[:, 1] *= height
        out[:, 2] *= width
        return out

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> FaceMeshTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
