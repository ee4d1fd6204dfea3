"""The subject's face model, built from their own video (no licensed asset): a neutral 3D landmark template at metric
scale, a linear expression basis, and the semantic controls mapped onto it.

This is the interface later stages read (training, rendering, reenactment, the viewer). Another backend (a FLAME
fit, imported tracking) stands in by producing the same :class:`FaceModel`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file
from safetensors.numpy import save as serialize

from avatar4d.atomic import write_bytes_atomic
from avatar4d.errors import DatasetError
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rigid import transform_points
from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.controls import CONTROL_NAMES, ControlMap, fit_control_map, measure_controls
from avatar4d.tracking.expression import ExpressionBasis, ResidualCovariance, fit_expression_basis
from avatar4d.tracking.head_pose import (
    PoseSmoothingConfig,
    landmarks_to_head_space,
    reprojection_errors,
    rigid_align,
    rotation_angle_deg,
    smooth_poses,
    solve_head_pose,
)

INTER_PUPIL_DISTANCE_M = 0.063
"""Mean adult inter-pupil distance; sets the template's metric scale."""


@dataclass(frozen=True)
class FaceModel:
    """Template, expression basis and controls of one subject."""

    template: np.ndarray
    """(L, 3) neutral (mean) landmarks, head frame, metres."""
    basis: ExpressionBasis
    controls: ControlMap
    code_min: np.ndarray
    """(K,) smallest code value per component over the video."""
    code_max: np.ndarray
    """(K,) largest."""

    @property
    def num_components(self) -> int:
        return len(self.basis.stddev)

    def landmarks(self, codes: np.ndarray) -> np.ndarray:
        """(F, K) expression codes -> (F, L, 3) head-frame landmarks."""
        return self.template[None] + self.basis.decode(codes)

    def encode(self, points_head: np.ndarray) -> np.ndarray:
        """(F, L, 3) head-frame landmarks -> (F, K) codes (after removing any rigid misalignment)."""
        return self.basis.encode(remove_rigid_motion(points_head, self.template) - self.template[None])

    def save(self, path: Path) -> None:
        tensors = {
            "template": self.template.astype(np.float64),
            "basis.components": self.basis.components.astype(np.float64),
            "basis.stddev": self.basis.stddev.astype(np.float64),
            "basis.explained_variance_ratio": self.basis.explained_variance_ratio.astype(np.float64),
            "code_min": self.code_min.astype(np.float64),
            "code_max": self.code_max.astype(np.float64),
        }
        for field in ("low", "scale", "mean", "weights", "r2", "range_min", "range_max"):
            tensors[f"controls.{field}"] = np.asarray(getattr(self.controls, field), dtype=np.float64)
        tensors["controls.seen"] = self.controls.seen.astype(np.uint8)
        metadata = {"format": "avatar4d.face_model", "version": "1", "control_names": json.dumps(self.controls.names)}
        # serialised in memory and written by Python, so a full disk raises OSError (-> OutputError); safetensors'
        # own file writer reports it as a SafetensorError that names no errno
        write_bytes_atomic(path, serialize(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> FaceModel:
        try:
            t = load_file(str(path))
        except (OSError, ValueError, SafetensorError) as error:
            raise DatasetError(f"{path}: cannot read the face model ({error})") from error
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as handle:
                names = tuple(json.loads(handle.metadata()["control_names"]))
            basis = ExpressionBasis(t["basis.components"], t["basis.stddev"], t["basis.explained_variance_ratio"])
            controls = ControlMap(names=names, low=t["controls.low"], scale=t["controls.scale"],
                                  mean=t["controls.mean"], weights=t["controls.weights"], r2=t["controls.r2"],
                                  seen=t["controls.seen"].astype(bool), range_min=t["controls.range_min"],
                                  range_max=t["controls.range_max"])
            return cls(template=t["template"], basis=basis, controls=controls, code_min=t["code_min"],
                       code_max=t["code_max"])
        except KeyError as error:
            raise DatasetError(f"{path}: the face model lacks {error}; it is from another version") from error


def remove_rigid_motion(points_head: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Rigidly align each frame's (F, L, 3) landmarks to the template on the stable points (pose jitter out of the
    expression)."""
    stable = np.asarray(lm.STABLE_LANDMARKS)
    out = np.empty_like(points_head)
    for i, points in enumerate(points_head):
        out[i] = transform_points(rigid_align(points[stable], template[stable]), points)
    return out


def normalise_template(points: np.ndarray) -> np.ndarray:
    """Express (L, 3) landmarks (any similarity frame, y up) in the canonical head frame.

    x runs from the right eye to the left eye, y up (chin to forehead, orthogonalised), z out of the face; the origin
    is the centroid of the stable landmarks; the eye-centre distance is :data:`INTER_PUPIL_DISTANCE_M`.
    """
    right_eye = points[list(lm.RIGHT_EYE_CORNERS)].mean(0)
    left_eye = points[list(lm.LEFT_EYE_CORNERS)].mean(0)
    x_axis = left_eye - right_eye
    eye_distance = float(np.linalg.norm(x_axis))
    x_axis /= eye_distance
    up = points[lm.FOREHEAD] - points[lm.CHIN]
    y_axis = up - x_axis * float(up @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    axes = np.stack([x_axis, y_axis, z_axis], axis=1)
    origin = points[list(lm.STABLE_LANDMARKS)].mean(0)
    return (points - origin) @ axes * (INTER_PUPIL_DISTANCE_M / eye_distance)


def initial_template(landmarks_px: np.ndarray, iterations: int = 3) -> np.ndarray:
    """A first template from MediaPipe's per-frame 3D landmarks by generalised Procrustes analysis.

    Args:
        landmarks_px: (N, L, 3) landmarks in pixels (``z`` as MediaPipe gives it) from a sample of frames.

    Returns:
        (L, 3) head-frame template, metres (refined later against perspective PnP).
    """
    points = landmarks_px.astype(np.float64) * np.array([1.0, -1.0, -1.0])  # image axes -> y up, z towards camera
    stable = np.asarray(lm.STABLE_LANDMARKS)
    reference = points[0]
    for _ in range(iterations):
        aligned = np.stack([transform_points(rigid_align(p[stable], reference[stable], with_scale=True), p)
                            for p in points])
        reference = aligned.mean(0)
    return normalise_template(reference)


@dataclass(frozen=True)
class FaceFit:
    """Per-frame results of fitting the face model to a video's landmarks."""

    raw_camera_from_head: np.ndarray
    """(F, 4, 4) PnP pose of every frame."""
    camera_from_head: np.ndarray
    """(F, 4, 4) smoothed pose."""
    codes: np.ndarray
    """(F, K) expression codes."""
    controls: np.ndarray
    """(F, C) normalised semantic controls."""
    reprojection_error_px: np.ndarray
    """(F,) mean pixel distance of the rigid landmarks to the posed template."""
    model_error_px: np.ndarray
    """(F,) mean pixel distance of all landmarks to the posed template + expression (how well the basis explains
    the frame)."""
    flagged: np.ndarray
    """(F,) bool tracking jumps."""
    flag_reasons: list[list[str]]


def fit_face_model(landmarks_px: np.ndarray, camera: PinholeCamera, segments: list[slice], *, rate_hz: float,
                   smoothing: PoseSmoothingConfig = PoseSmoothingConfig(), num_components: int = 32, iterations: int = 3, chunk: int = 256) -> tuple[FaceModel, FaceFit]:
    """Build the subject's face model from their tracked landmarks and fit every frame.

    1. A first template by Procrustes on MediaPipe's 3D landmarks; 2. per frame, the head pose by PnP and zero-lag
    smoothing; 3. the landmarks lifted into the head frame with perspective, their rigid misalignment removed, and the
    template re-estimated as their mean (steps 2-3 repeated); 4. PCA of the residuals (streamed) gives the expression
    basis and codes; 5. semantic controls are measured and mapped onto the code.

    Args:
        landmarks_px: (F, L, 3) tracked landmarks of the kept frames (may be a memory map).
        camera: intrinsics of the landmarks' images.
        segments: contiguous runs of frames (pose smoothing does not cross gaps).
        rate_hz: frames per second of the kept frames (for the pose smoother).
        smoothing: the pose smoother's settings.
    """
    count = len(landmarks_px)
    sample = np.asarray(landmarks_px[np.linspace(0, count - 1, min(count, 200)).round().astype(int)])
    template = initial_template(sample)
    for _ in range(iterations):
        raw, smooth = _solve_poses(landmarks_px, camera, template, segments, rate_hz, smoothing)
        total = np.zeros_like(template)
        for start, points in _canonical_chunks(landmarks_px, smooth, camera, template, chunk):
            total += points.sum(0)
        template = normalise_template(total / count)
    raw, smooth = _solve_poses(landmarks_px, camera, template, segments, rate_hz, smoothing)

    covariance = ResidualCovariance(template.size)
    for _, points in _canonical_chunks(landmarks_px, smooth, camera, template, chunk):
        covariance.add(points - template[None])
    basis = fit_expression_basis(covariance, num_components)
    codes = np.zeros((count, len(basis.stddev)))
    raw_controls = np.zeros((count, len(CONTROL_NAMES)))
    for start, points in _canonical_chunks(landmarks_px, smooth, camera, template, chunk):
        codes[start:start + len(points)] = basis.encode(points - template[None])
        raw_controls[start:start + len(points)] = measure_controls(points)
    control_map = fit_control_map(raw_controls, codes)
    model = FaceModel(template=template, basis=basis, controls=control_map, code_min=codes.min(0),
                      code_max=codes.max(0))

    stable = np.asarray(lm.STABLE_LANDMARKS)
    reprojection = np.zeros(count)
    model_error = np.zeros(count)
    for i in range(count):
        observed = np.asarray(landmarks_px[i])
        reprojection[i] = reprojection_errors(template[stable], smooth[i], observed[stable], camera).mean()
        model_error[i] = reprojection_errors(model.landmarks(codes[i:i + 1])[0], smooth[i], observed, camera).mean()
    flagged, reasons = flag_jumps(raw, smooth, reprojection, codes, camera.width)
    fit = FaceFit(raw_camera_from_head=raw, camera_from_head=smooth, codes=codes,
                  controls=control_map.normalise(raw_controls), reprojection_error_px=reprojection,
                  model_error_px=model_error, flagged=flagged, flag_reasons=reasons)
    return model, fit


def _solve_poses(landmarks_px: np.ndarray, camera: PinholeCamera, template: np.ndarray, segments: list[slice],
                 rate_hz: float, smoothing: PoseSmoothingConfig) -> tuple[np.ndarray, np.ndarray]:
    raw = np.stack([solve_head_pose(template, np.asarray(landmarks_px[i]), camera) for i in range(len(landmarks_px))])
    return raw, smooth_poses(raw, segments, rate_hz, smoothing)


def canonical_landmarks(landmarks_px: np.ndarray, camera_from_head: np.ndarray, camera: PinholeCamera,
                        template: np.ndarray) -> np.ndarray:
    """(F, L, 3) tracked landmarks (pixels) -> (F, L, 3) head-frame landmarks, rigid misalignment removed (what the
    expression codes and the controls are measured on)."""
    return np.concatenate([points for _, points in _canonical_chunks(landmarks_px, camera_from_head, camera, template,
                                                                      256)])


def _canonical_chunks(landmarks_px: np.ndarray, poses: np.ndarray, camera: PinholeCamera, template: np.ndarray,
                      chunk: int):
    """Yield (start, (n, L, 3) head-frame landmarks with rigid misalignment removed), a chunk at a time."""
    for start in range(0, len(landmarks_px), chunk):
        block = np.asarray(landmarks_px[start:start + chunk], dtype=np.float64)
        lifted = np.stack([landmarks_to_head_space(block[j], poses[start + j], camera, template)
                           for j in range(len(block))])
        yield start, remove_rigid_motion(lifted, template)


def flag_jumps(raw: np.ndarray, smooth: np.ndarray, reprojection_px: np.ndarray, codes: np.ndarray,
               image_size: int) -> tuple[np.ndarray, list[list[str]]]:
    """Frames where tracking jumped: the raw pose far from its smoothed path, the rigid points far from the posed
    template, or the expression code spiking away from both neighbours.

    Returns:
        (F,) bool and, per frame, the reasons.
    """
    count = len(raw)
    angle = rotation_angle_deg(raw, smooth)
    shift = np.linalg.norm(raw[:, :3, 3] - smooth[:, :3, 3], axis=1) / np.maximum(smooth[:, 2, 3], 1e-6)
    step = np.zeros(count)
    if count >= 3:
        forward = np.linalg.norm(np.diff(codes, axis=0), axis=1)
        step[1:-1] = np.minimum(forward[:-1], forward[1:])
    reasons: list[list[str]] = [[] for _ in range(count)]
    angle_limit = max(4.0, 6.0 * float(np.median(angle)))
    shift_limit = max(0.03, 6.0 * float(np.median(shift)))
    error_limit = max(3.0 * image_size / 512.0, 4.0 * float(np.median(reprojection_px)))
    step_limit = max(2.0, 6.0 * float(np.median(step[1:-1]))) if count >= 3 else np.inf
    for i in range(count):
        if angle[i] > angle_limit:
            reasons[i].append(f"pose jumps {angle[i]:.1f} deg off its smoothed path")
        if shift[i] > shift_limit:
            reasons[i].append(f"position jumps {100 * shift[i]:.1f}% of the distance off its smoothed path")
        if reprojection_px[i] > error_limit:
            reasons[i].append(f"rigid landmarks {reprojection_px[i]:.1f} px off the posed template")
        if step[i] > step_limit:
            reasons[i].append(f"expression spikes ({step[i]:.1f} from both neighbours)")
    return np.array([bool(r) for r in reasons]), reasons
