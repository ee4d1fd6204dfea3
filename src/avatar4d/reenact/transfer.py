"""Cross-identity transfer of a driver's tracking onto an avatar.

Expression: the driver's non-rigid landmark residuals relative to the driver's own neutral (mean) face, laid on the
avatar's template and projected onto the avatar's expression basis. Both head frames are defined the same way (eye
axis, up, metric scale from the eye distance), so residuals in metres carry over without retargeting. Another face
moves in ways the avatar's minor components explain only by large values (on the shared drivers their spread is 2 to 5
times what the avatar's own video gave them, and the field breaks up there): :func:`match_spread` scales each
component of a driven clip down to the avatar's own spread, and :func:`clamp_to_range` keeps each within what training
saw.

Head motion: the driver's pose relative to its mean pose, applied around the avatar's mean pose.
"""

from __future__ import annotations

import numpy as np

from avatar4d.geometry.rigid import invert_rigid
from avatar4d.tracking.face_model import FaceModel


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
