"""Cross-identity transfer of a driver's tracking onto an avatar.

Expression, two ways:

- ``controls`` (the default): the driver's semantic controls (jaw open, smile, blinks, brows, pucker, gaze; see
  :mod:`avatar4d.tracking.controls`), smoothed without lag, taken as changes from the driver's *neutral* face (closed
  mouth, open eyes, relaxed brows: :func:`avatar4d.tracking.coverage.estimate_neutral`), added to the avatar's neutral
  face in the same metric units, kept within what the avatar's video showed, and turned into the avatar's code by a
  joint linear regression of its training frames' codes on their controls. The eyelids and brows, which a face-wide
  PCA ranks below the mouth, count as much as the mouth; another person's face shape does not leak into the code.
- ``residuals`` (the earlier transfer): the driver's non-rigid landmark residuals relative to the driver's mean face,
  laid on the avatar's template and projected onto the avatar's expression basis. Both head frames are defined the
  same way (eye axis, up, metric scale from the eye distance), so residuals in metres carry over without retargeting.
  Another face moves in ways the avatar's minor components explain only by large values: :func:`match_spread` scales
  each component of a driven clip down to the avatar's own spread, and :func:`clamp_to_range` keeps each within what
  training saw.

Head motion: the driver's pose relative to its mean pose, applied around the avatar's mean pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar4d.geometry.rigid import invert_rigid
from avatar4d.tracking.controls import ControlMap
from avatar4d.tracking.face_model import FaceModel
from avatar4d.tracking.head_pose import zero_phase_one_euro


def transfer_expressions(driver: FaceModel, driver_codes: np.ndarray, avatar: FaceModel) -> np.ndarray:
    """Driver expression codes -> avatar expression codes.

    Args:
        driver: the driver's face model (its template is the driver's neutral face).
        driver_codes: (F, K_d) codes in the driver's basis.
        avatar: the avatar's face model.

    Returns:
        (F, K_a) codes in the avatar's basis.
    """
    residuals = driver.basis.decode(driver_codes)  # (F, L, 3) metres, relative to the driver's neutral face
    return avatar.basis.encode(residuals)


def match_spread(codes: np.ndarray, reference_std: np.ndarray) -> np.ndarray:
    """Scale each component down (never up) so that its spread over the clip is at most the reference's.

    Args:
        codes: (F, K) transferred codes of a driven clip.
        reference_std: (K,) the avatar's spread of each component over its training frames.

    Returns:
        (F, K) ``codes * min(1, reference_std / std(codes))``, per component.
    """
    spread = codes.std(axis=0)
    factor = np.minimum(1.0, reference_std / np.maximum(spread, 1e-12))
    return codes * factor


def clamp_to_range(codes: np.ndarray, code_min: np.ndarray, code_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip each component to the range seen in training.

    Args:
        codes: (F, K).
        code_min, code_max: (K,) the range of each component over the training frames.

    Returns:
        The (F, K) clipped codes and an (F,) bool that says which frames were changed.
    """
    clipped = np.clip(codes, code_min, code_max)
    return clipped, (clipped != codes).any(axis=1)


def transfer_poses(driver_camera_from_head: np.ndarray, driver_mean: np.ndarray, avatar_mean: np.ndarray) -> np.ndarray:
    """Driver head motion around its mean pose -> the same motion around the avatar's mean pose.

    Args:
        driver_camera_from_head: (F, 4, 4) driver poses.
        driver_mean: (4, 4) the driver's mean pose.
        avatar_mean: (4, 4) the avatar's mean training pose.

    Returns:
        (F, 4, 4) avatar poses: ``avatar_mean @ inv(driver_mean) @ driver_pose``.
    """
    mean_from_frame = np.einsum("ij,fjk->fik", invert_rigid(driver_mean), driver_camera_from_head)
    return np.einsum("ij,fjk->fik", avatar_mean, mean_from_frame)


def mean_pose(camera_from_head: np.ndarray) -> np.ndarray:
    """(4, 4) the average of (F, 4, 4) poses (rotations averaged on the sphere)."""
    from scipy.spatial.transform import Rotation

    out = np.eye(4)
    out[:3, :3] = Rotation.from_matrix(camera_from_head[:, :3, :3]).mean().as_matrix()
    out[:3, 3] = camera_from_head[:, :3, 3].mean(0)
    return out


def hold_last_good(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Fill rows where ``good`` is False with the last good row before them (the first good one at the start).

    Args:
        values: (F_good, ...) values of the good rows, in order.
        good: (F,) bool.

    Returns:
        (F, ...).
    """
    if not good.any():
        raise ValueError("no good rows to hold")
    rank = np.cumsum(good) - 1  # index of the latest good row at or before each frame
    rank = np.where(rank < 0, 0, rank)
    return values[rank]


@dataclass(frozen=True)
class ControlSmoothing:
    """Zero-phase adaptive smoothing of a driver's controls (a One-Euro filter forwards and backwards, as the head
    poses are smoothed): tracker noise on a still face goes, a blink or a fast jaw drop passes, and no lag is added."""

    min_cutoff_hz: float = 2.0
    """Cut-off frequency when a control is still."""
    beta: float = 1.0
    """Added cut-off (Hz) per unit of speed (the driver's own range of the control per second)."""
    derivative_cutoff_hz: float = 1.0


def smooth_controls(raw: np.ndarray, scale: np.ndarray, segments: list[slice], rate_hz: float,
                    config: ControlSmoothing = ControlSmoothing()) -> np.ndarray:
    """Smooth (F, C) raw controls within each run of consecutive frames (never across a gap).

    Args:
        raw: (F, C) raw controls of the tracked frames.
        scale: (C,) each control's range in the driver's video (speeds are measured in it, so one setting suits
            metres and ratios alike).
        segments: runs of consecutive tracked frames; runs shorter than 3 frames are left as they are.
        rate_hz: frames per second.
    """
    out = raw.astype(np.float64).copy()
    for segment in segments:
        if segment.stop - segment.start < 3:
            continue
        out[segment] = scale * zero_phase_one_euro(raw[segment] / scale, rate_hz, config.min_cutoff_hz, config.beta,
                                                   config.derivative_cutoff_hz)
    return out


@dataclass(frozen=True)
class ControlRegression:
    """``code = mean_code + (controls - mean_controls) @ weights``: the expression code that goes with a set of
    normalised controls, all of them together (unlike :class:`ControlMap`'s per-control slopes, which are for one
    slider at a time)."""

    mean_controls: np.ndarray
    """(C,)."""
    mean_code: np.ndarray
    """(K,)."""
    weights: np.ndarray
    """(C, K)."""

    def __call__(self, controls: np.ndarray) -> np.ndarray:
        """(F, C) normalised controls -> (F, K) codes."""
        return self.mean_code + (controls - self.mean_controls) @ self.weights


def fit_control_regression(controls: np.ndarray, codes: np.ndarray, ridge: float = 1e-3) -> ControlRegression:
    """Ridge regression of (F, K) codes on (F, C) normalised controls of the same frames (the avatar's training
    frames). ``ridge`` is relative to the controls' mean variance, so a control that hardly varies gets a small weight
    instead of a wild one."""
    mean_controls, mean_code = controls.mean(0), codes.mean(0)
    x, y = controls - mean_controls, codes - mean_code
    gram = x.T @ x
    penalty = ridge * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    weights = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), x.T @ y)
    return ControlRegression(mean_controls=mean_controls, mean_code=mean_code, weights=weights)


def retarget_controls(driver_raw: np.ndarray, driver_neutral: np.ndarray, avatar_neutral: np.ndarray,
                      avatar: ControlMap) -> np.ndarray:
    """A driver's raw controls -> the avatar's normalised controls: each frame's change from the driver's neutral
    face, in the controls' metric units, added to the avatar's neutral face.

    Args:
        driver_raw: (F, C) raw controls of the driver.
        driver_neutral, avatar_neutral: (C,) raw controls of each one's neutral face.
        avatar: the avatar's control map (its normalisation).

    Returns:
        (F, C) normalised avatar controls (not yet limited to the avatar's range).
    """
    return avatar.normalise(avatar_neutral + (driver_raw - driver_neutral))


def clamp_controls(controls: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip (F, C) normalised controls to the (C,) range the avatar's video showed; also returns the (F, C) bool of
    the clipped entries."""
    clipped = np.clip(controls, low, high)
    return clipped, clipped != controls
