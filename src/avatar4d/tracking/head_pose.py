"""Rigid head pose: PnP of the subject's landmark template, zero-lag smoothing, jump flags, and the change of the
tracked landmarks into the head's canonical frame.

Frames: ``camera`` is OpenCV's (x right, y down, z forward); ``head`` is the canonical head frame of the face model
(x towards the subject's left, y up, z out of the face, metres). Poses are ``camera_from_head`` 4x4 matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from avatar4d.geometry.angles import rotation_from_yaw_pitch_roll, yaw_pitch_roll_deg
from avatar4d.geometry.camera import OPENGL_FROM_OPENCV, PinholeCamera
from avatar4d.geometry.rigid import invert_rigid, make_pose, transform_points
from avatar4d.tracking.landmarks import STABLE_LANDMARKS


def solve_head_pose(template: np.ndarray, landmarks_px: np.ndarray, camera: PinholeCamera, *,
                    indices: tuple[int, ...] = STABLE_LANDMARKS, initial: np.ndarray | None = None) -> np.ndarray:
    """Head pose from 2D landmarks by PnP against the template (SQPnP, refined by Levenberg-Marquardt).

    Args:
        template: (L, 3) canonical landmarks, head frame, metres.
        landmarks_px: (L, 2) or (L, 3) tracked landmarks, pixels (only x, y are used).
        camera: intrinsics of the image the landmarks are in.
        indices: the landmarks the pose is solved on (rigid ones by default).
        initial: (4, 4) a starting pose (e.g. the previous frame's); SQPnP's global solution otherwise.

    Returns:
        (4, 4) ``camera_from_head``.
    """
    index = np.asarray(indices)
    object_points = np.ascontiguousarray(template[index], dtype=np.float64)
    image_points = np.ascontiguousarray(landmarks_px[index, :2], dtype=np.float64)
    K = camera.matrix
    if initial is None:
        ok, rvec, tvec = cv2.solvePnP(object_points, image_points, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            raise RuntimeError("PnP found no pose")
    else:
        rvec = cv2.Rodrigues(initial[:3, :3])[0]
        tvec = initial[:3, 3].reshape(3, 1).copy()
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, K, None, rvec, tvec)
    return make_pose(cv2.Rodrigues(rvec)[0], tvec.ravel())


def project_template(template: np.ndarray, camera_from_head: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """(L, 3) head-frame points -> (L, 2) pixels under a pose."""
    return camera.project(transform_points(camera_from_head, template))


def reprojection_errors(points_head: np.ndarray, camera_from_head: np.ndarray, landmarks_px: np.ndarray,
                        camera: PinholeCamera) -> np.ndarray:
    """(L,) pixel distances between projected head-frame points and tracked landmarks."""
    projected = project_template(points_head, camera_from_head, camera)
    return np.linalg.norm(projected - landmarks_px[:, :2], axis=1)


@dataclass(frozen=True)
class PoseSmoothingConfig:
    """Zero-phase adaptive smoothing of head poses (a One-Euro filter run forwards and backwards).

    The cut-off frequency rises with the head's speed: still heads are smoothed strongly (tracker jitter goes),
    fast turns hardly at all (no blunted moves), and averaging the forward and backward passes cancels the lag of each.
    """

    min_cutoff_hz: float = 1.5
    """Cut-off frequency when the head is still."""
    beta_rotation: float = 100.0
    """Added cut-off (Hz) per radian per second of rotation speed."""
    beta_translation: float = 500.0
    """Added cut-off (Hz) per metre per second of translation speed."""
    derivative_cutoff_hz: float = 1.0
    """Cut-off of the speed estimate."""


def one_euro(values: np.ndarray, rate_hz: float, min_cutoff_hz: float, beta: float,
             derivative_cutoff_hz: float = 1.0) -> np.ndarray:
    """Causal One-Euro filter (Casiez et al. 2012) of a (F, D) signal sampled at ``rate_hz``.

    The cut-off of each step is ``min_cutoff_hz + beta * |speed|`` with the speed low-pass filtered.
    """

    def smoothing(cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * rate_hz)

    out = np.empty_like(values, dtype=np.float64)
    out[0] = values[0]
    speed = np.zeros(values.shape[1:])
    a_speed = smoothing(derivative_cutoff_hz)
    for i in range(1, len(values)):
        speed = a_speed * (values[i] - values[i - 1]) * rate_hz + (1.0 - a_speed) * speed
        a = smoothing(min_cutoff_hz + beta * np.abs(speed))
        out[i] = a * values[i] + (1.0 - a) * out[i - 1]
    return out


def zero_phase_one_euro(values: np.ndarray, rate_hz: float, min_cutoff_hz: float, beta: float,
                        derivative_cutoff_hz: float = 1.0) -> np.ndarray:
    """The mean of the One-Euro filter run forwards and backwards: the two lags cancel (a ramp passes unchanged)."""
    forward = one_euro(values, rate_hz, min_cutoff_hz, beta, derivative_cutoff_hz)
    backward = one_euro(values[::-1], rate_hz, min_cutoff_hz, beta, derivative_cutoff_hz)[::-1]
    return 0.5 * (forward + backward)


def smooth_poses(camera_from_head: np.ndarray, segments: list[slice], rate_hz: float,
                 config: PoseSmoothingConfig = PoseSmoothingConfig()) -> np.ndarray:
    """Smooth rotation (as rotation vectors about each segment's mean) and translation, per contiguous segment.

    Args:
        camera_from_head: (F, 4, 4) raw poses.
        segments: runs of consecutive kept frames (smoothing never crosses a gap of dropped frames).
        rate_hz: frames per second of the kept frames.

    Returns:
        (F, 4, 4) smoothed poses; segments shorter than 3 frames are left as they are.
    """
    out = camera_from_head.copy()
    for segment in segments:
        poses = camera_from_head[segment]
        if len(poses) < 3:
            continue
        rotations = Rotation.from_matrix(poses[:, :3, :3])
        reference = rotations.mean()
        rotvecs = (reference.inv() * rotations).as_rotvec()
        rotvecs = zero_phase_one_euro(rotvecs, rate_hz, config.min_cutoff_hz, config.beta_rotation,
                                      config.derivative_cutoff_hz)
        translations = zero_phase_one_euro(poses[:, :3, 3], rate_hz, config.min_cutoff_hz, config.beta_translation,
                                           config.derivative_cutoff_hz)
        out[segment, :3, :3] = (reference * Rotation.from_rotvec(rotvecs)).as_matrix()
        out[segment, :3, 3] = translations
    return out


def contiguous_segments(source_frames: np.ndarray, every: int = 1) -> list[slice]:
    """Slices of an increasing frame-index array where consecutive kept frames are ``every`` apart."""
    if len(source_frames) == 0:
        return []
    breaks = np.nonzero(np.diff(source_frames) != every)[0] + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(source_frames)]])
    return [slice(int(s), int(e)) for s, e in zip(starts, ends)]


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees of the rotation between the rotation parts of (F, 4, 4) poses ``a`` and ``b``."""
    relative = np.einsum("fji,fjk->fik", a[:, :3, :3], b[:, :3, :3])
    cos = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def head_angles_deg(camera_from_head: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll of the head seen by the camera, degrees; (0, 0, 0) faces the camera.

    Args:
        camera_from_head: (F, 4, 4).

    Returns:
        (F, 3): yaw (turn, positive to the subject's left), pitch (nod, positive when the face looks up), roll
        (tilt, positive counter-clockwise as the camera sees it, i.e. towards the subject's right shoulder).
    """
    return yaw_pitch_roll_deg(np.einsum("ij,fjk->fik", OPENGL_FROM_OPENCV, camera_from_head[:, :3, :3]))


def pose_from_head_angles(yaw_pitch_roll: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`head_angles_deg`: (3,) yaw, pitch, roll and (3,) translation -> (4, 4) camera_from_head."""
    return make_pose(OPENGL_FROM_OPENCV @ rotation_from_yaw_pitch_roll(yaw_pitch_roll), translation)


def landmarks_to_head_space(landmarks_px: np.ndarray, camera_from_head: np.ndarray, camera: PinholeCamera,
                            template: np.ndarray) -> np.ndarray:
    """Lift tracked landmarks to 3D in the head frame, with perspective.

    Image positions are exact; depth is the posed template's mean depth of the rigid points plus MediaPipe's
    relative depth (converted from pixels to metres at that distance). The result is then taken into the head frame.

    Args:
        landmarks_px: (L, 3) pixels, ``z`` as MediaPipe gives it (scaled like x, larger is farther).
        camera_from_head: (4, 4) the frame's pose.
        camera: intrinsics of the landmarks' image.
        template: (L, 3) the template the pose was solved against.

    Returns:
        (L, 3) head-frame points in metres.
    """
    stable = np.asarray(STABLE_LANDMARKS)
    posed = transform_points(camera_from_head, template[stable])
    depth = float(posed[:, 2].mean())
    metres_per_pixel = depth / camera.fx
    z = depth + (landmarks_px[:, 2] - landmarks_px[stable, 2].mean()) * metres_per_pixel
    x = (landmarks_px[:, 0] - camera.cx) * z / camera.fx
    y = (landmarks_px[:, 1] - camera.cy) * z / camera.fy
    points_camera = np.stack([x, y, z], axis=1)
    return transform_points(invert_rigid(camera_from_head), points_camera)


def rigid_align(source: np.ndarray, target: np.ndarray, *, with_scale: bool = False) -> np.ndarray:
    """Least-squares (Umeyama) transform taking ``source`` points onto ``target``.

    Args:
        source, target: (N, 3) corresponding points.
        with_scale: allow a uniform scale as well.

    Returns:
        (4, 4) transform ``target_from_source`` (its rotation block carries the scale when ``with_scale``).
    """
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s / len(source))
    d = np.sign(np.linalg.det(u @ vt))
    correction = np.diag([1.0, 1.0, d])
    rotation = u @ correction @ vt
    scale = float((sigma * np.diag(correction)).sum() / s.var(0).sum()) if with_scale else 1.0
    pose = np.eye(4)
    pose[:3, :3] = scale * rotation
    pose[:3, 3] = mu_t - scale * rotation @ mu_s
    return pose
