"""How well an avatar follows its driver, measured on pictures: the driver's frames and the rendered avatar are both
tracked with the project's own tracker (Face Mesh, a face model fitted to the sequence, the semantic controls of
:mod:`avatar4d.tracking.controls`) and compared control by control over time.

Per control: the correlation over time (at no lag), the lag at which the correlation peaks, and the avatar's range
against the driver's (5th to 95th percentile, raw units, which are metric in the head frame for both). For the whole
face: the frame-to-frame jitter of the head-frame landmarks (the median size of their second difference), avatar
against driver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from avatar4d.geometry.camera import PinholeCamera
from avatar4d.tracking.controls import CONTROL_NAMES, measure_controls
from avatar4d.tracking.face_model import canonical_landmarks, fit_face_model
from avatar4d.tracking.head_pose import contiguous_segments
from avatar4d.tracking.landmarks import FaceMeshTracker

MIN_TRACKED_FRAMES = 5
"""Fewer frames with a face than this give no measurement."""


@dataclass(frozen=True)
class TrackedSequence:
    """A sequence of pictures of one face, tracked."""

    found: np.ndarray
    """(F,) bool: the face was found."""
    raw: np.ndarray
    """(F, C) raw controls (NaN where no face was found)."""
    points: np.ndarray
    """(F, L, 3) head-frame landmarks with rigid motion removed, metres (NaN where no face was found)."""


def track_sequence(images: Iterable[np.ndarray], camera: PinholeCamera, rate_hz: float) -> TrackedSequence:
    """Track (H, W, 3) uint8 pictures in order (Face Mesh in video mode) and measure the controls of every frame in
    the head frame of a face model fitted to this sequence.

    Args:
        camera: intrinsics of the pictures.
        rate_hz: pictures per second (for the pose smoother).
    """
    found, landmarks = [], []
    with FaceMeshTracker() as mesh:
        for image in images:
            points = mesh.track(np.ascontiguousarray(image))
            found.append(points is not None)
            if points is not None:
                landmarks.append(points)
    found_array = np.asarray(found, dtype=bool)
    count = len(found_array)
    raw = np.full((count, len(CONTROL_NAMES)), np.nan)
    if len(landmarks) < MIN_TRACKED_FRAMES:
        return TrackedSequence(found=np.zeros(count, dtype=bool), raw=raw, points=np.full((count, 478, 3), np.nan))
    stacked = np.stack(landmarks).astype(np.float64)
    segments = contiguous_segments(np.nonzero(found_array)[0])
    model, fit = fit_face_model(stacked, camera, segments, rate_hz=rate_hz, num_components=min(32, len(stacked) - 1))
    canonical = canonical_landmarks(stacked, fit.camera_from_head, camera, model.template)
    points = np.full((count, *canonical.shape[1:]), np.nan)
    points[found_array] = canonical
    raw[found_array] = measure_controls(canonical)
    return TrackedSequence(found=found_array, raw=raw, points=points)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (F,) series over the frames where both are finite (NaN when either is constant
    there or fewer than 3 frames remain)."""
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return float("nan")
    x, y = a[both] - a[both].mean(), b[both] - b[both].mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def best_lag(driver: np.ndarray, avatar: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The shift of the avatar's series that correlates best with the driver's.

    Returns:
        (lag, correlation at it); a positive lag means the avatar follows ``lag`` frames late, i.e. ``avatar[t + lag]``
        matches ``driver[t]``. (0, NaN) when no shift gives a correlation.
    """
    best = (0, float("nan"))
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            r = correlation(driver[:len(driver) - lag], avatar[lag:])
        else:
            r = correlation(driver[-lag:], avatar[:len(avatar) + lag])
        if np.isfinite(r) and not (np.isfinite(best[1]) and r <= best[1]):
            best = (lag, r)
    return best


def spread(values: np.ndarray) -> float:
    """5th to 95th percentile of the finite values of an (F,) series."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan")
    low, high = np.percentile(finite, [5, 95])
    return float(high - low)


def jitter(points: np.ndarray) -> float:
    """Median over frames of the mean size of the landmarks' second difference ``x[t+1] - 2 x[t] + x[t-1]`` (metres),
    over the frames whose two neighbours are tracked too.

    Args:
        points: (F, L, 3) with NaN rows where no face was found.
    """
    second = points[2:] - 2.0 * points[1:-1] + points[:-2]
    per_frame = np.linalg.norm(second, axis=-1).mean(-1)
    per_frame = per_frame[np.isfinite(per_frame)]
    return float(np.median(per_frame)) if len(per_frame) else float("nan")


@dataclass(frozen=True)
class ControlAgreement:
    """How the avatar follows the driver in one control."""

    correlation: float
    """Over time, at no lag."""
    lag_frames: int
    """Shift of the best correlation (positive: the avatar is late)."""
    lag_correlation: float
    range_ratio: float
    """The avatar's spread over the driver's (5th to 95th percentile)."""
    driver_spread: float
    avatar_spread: float


def compare(driver: TrackedSequence, avatar: TrackedSequence, max_lag: int) -> dict:
    """Per control a :class:`ControlAgreement`, plus the jitter of both and the frames where both faces were found.

    Returns:
        ``{"frames": F, "both_found": n, "controls": {name: ControlAgreement}, "jitter_driver_m": ...,
        "jitter_avatar_m": ..., "jitter_ratio": ...}``
    """
    both = driver.found & avatar.found
    controls = {}
    for i, name in enumerate(CONTROL_NAMES):
        d = np.where(both, driver.raw[:, i], np.nan)
        a = np.where(both, avatar.raw[:, i], np.nan)
        lag, lag_r = best_lag(d, a, max_lag)
        d_spread, a_spread = spread(d), spread(a)
        controls[name] = ControlAgreement(correlation=correlation(d, a), lag_frames=lag, lag_correlation=lag_r,
                                          range_ratio=a_spread / d_spread if d_spread > 0 else float("nan"),
                                          driver_spread=d_spread, avatar_spread=a_spread)
    jitter_driver, jitter_avatar = jitter(driver.points), jitter(avatar.points)
    return {"frames": len(both), "both_found": int(both.sum()), "controls": controls,
            "jitter_driver_m": jitter_driver, "jitter_avatar_m": jitter_avatar,
            "jitter_ratio": jitter_avatar / jitter_driver if jitter_driver > 0 else float("nan")}
