"""Head pose: PnP against exact projections and against OpenCV's iterative PnP on real landmarks, pose algebra round
trips, zero-lag smoothing, lifting landmarks into the head frame, and the Umeyama alignment."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar4d.dataset.layout import load_dataset
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rigid import invert_rigid, make_pose, transform_points
from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.head_pose import (
    PoseSmoothingConfig,
    contiguous_segments,
    head_angles_deg,
    landmarks_to_head_space,
    one_euro,
    pose_from_head_angles,
    project_template,
    reprojection_errors,
    rigid_align,
    rotation_angle_deg,
    smooth_poses,
    solve_head_pose,
)

STABLE = np.asarray(lm.STABLE_LANDMARKS)


@pytest.fixture(scope="module")
def dataset(prepared_dataset):
    return load_dataset(prepared_dataset)


# --- PnP ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("yaw_pitch_roll, translation", [
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.45)),
    ((25.0, -10.0, 5.0), (0.02, -0.01, 0.5)),
    ((-40.0, 15.0, -12.0), (-0.05, 0.03, 0.8)),
])
def test_pnp_recovers_the_pose_a_template_was_projected_with(dataset, yaw_pitch_roll, translation):
    template = dataset.face_model.template  # the real subject's template
    camera = dataset.camera
    truth = pose_from_head_angles(np.array(yaw_pitch_roll), np.array(translation))
    pixels = project_template(template, truth, camera)
    for initial in (None, truth @ make_pose(Rotation.from_euler("y", 3, degrees=True).as_matrix(), np.zeros(3))):
        solved = solve_head_pose(template, pixels, camera, initial=initial)
        np.testing.assert_allclose(solved, truth, atol=1e-6)
        assert reprojection_errors(template, solved, pixels, camera).max() < 1e-6


def test_pnp_agrees_with_opencv_iterative_on_real_landmarks(dataset):
    template, camera = dataset.face_model.template, dataset.camera
    for landmarks in dataset.tracking.landmarks:
        ours = solve_head_pose(template, landmarks, camera)
        ok, rvec, tvec = cv2.solvePnP(template[STABLE], landmarks[STABLE, :2].astype(np.float64), camera.matrix, None,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        assert ok
        np.testing.assert_allclose(ours[:3, :3], cv2.Rodrigues(rvec)[0], atol=1e-6)
        np.testing.assert_allclose(ours[:3, 3], tvec.ravel(), atol=1e-7)


# Frame 30 of single_face.mp4 prepared at 256 px: the 39 stable landmarks (crop pixels, rounded to 0.01) and the
# subject's template at those points (mm, rounded to 0.01), frozen so that the expected pose below does not move when
# the tracking changes. The pose was computed once with OpenCV 4.11.0 (opencv-contrib-python==4.11.0.86):
#
#   K = np.array([[324.98, 0, 147.91], [0, 324.98, 128.0], [0, 0, 1]])
#   ok, rvec, tvec = cv2.solvePnP(TEMPLATE_MM / 1000, LANDMARKS_PX, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
#   print(rvec.ravel(), tvec.ravel())   # -> OPENCV_RVEC, OPENCV_TVEC
TEMPLATE_MM = np.array([
    [0.85, 54.43, 11.37], [1.03, 39.15, 15.88], [1.30, 23.96, 19.42], [1.30, 14.86, 18.85], [-17.75, 53.85, 9.95],
    [19.18, 54.15, 9.74], [-34.40, 51.30, 3.52], [34.73, 51.88, 3.20], [-15.50, 39.45, 14.41], [17.24, 39.72, 14.24],
    [1.39, 6.03, 19.51], [1.74, -2.37, 24.67], [2.12, -9.48, 30.49], [2.52, -15.75, 36.69], [2.93, -22.39, 43.05],
    [3.13, -30.90, 46.13], [3.03, -37.94, 44.55], [-45.77, -1.43, -2.22], [-17.41, -2.77, 3.44], [18.04, -2.63, 3.45],
    [44.78, -1.57, -2.23], [-66.90, -20.85, -13.53], [65.25, -19.49, -13.77], [-53.50, -18.86, -1.10],
    [53.82, -17.92, -1.25], [-66.41, -34.88, -10.97], [65.61, -33.58, -11.21], [-49.80, -34.43, 6.20],
    [51.31, -33.42, 6.04], [-80.92, -11.02, -51.48], [73.55, -9.23, -52.21], [-81.40, -28.63, -54.90],
    [74.18, -26.89, -55.67], [-77.31, 7.46, -42.59], [70.65, 9.15, -43.27], [-71.25, 22.09, -30.68],
    [66.08, 23.54, -31.26], [-21.66, -37.47, 16.85], [24.22, -37.12, 16.70],
])
LANDMARKS_PX = np.array([
    [125.24, 69.34], [125.80, 81.51], [126.51, 93.88], [126.94, 101.36], [110.32, 70.73], [140.12, 68.94],
    [97.83, 73.96], [152.66, 70.65], [112.46, 82.00], [139.00, 80.45], [127.37, 108.57], [127.74, 115.51],
    [128.06, 121.63], [128.36, 127.20], [128.68, 133.28], [129.09, 140.79], [129.42, 146.62], [92.81, 116.08],
    [113.95, 115.90], [141.35, 114.45], [162.49, 112.81], [78.78, 130.62], [177.92, 124.51], [87.12, 129.13],
    [170.18, 124.30], [79.20, 141.01], [179.03, 134.89], [89.15, 141.44], [169.25, 136.50], [74.26, 122.36],
    [180.99, 115.59], [75.38, 134.19], [181.62, 127.50], [74.39, 109.67], [179.09, 103.04], [76.07, 99.09],
    [176.16, 92.81], [110.48, 143.75], [148.11, 141.47],
])
OPENCV_RVEC = np.array([-3.064192381507, 0.077757779667, 0.003865969958])
OPENCV_TVEC = np.array([-0.026232495707, -0.019450860676, 0.417989497972])


def test_pnp_matches_frozen_opencv_result_on_real_landmarks():
    camera = PinholeCamera(fx=324.98, fy=324.98, cx=147.91, cy=128.0, width=256, height=256)
    pose = solve_head_pose(TEMPLATE_MM / 1000, LANDMARKS_PX, camera, indices=tuple(range(len(TEMPLATE_MM))))
    np.testing.assert_allclose(pose[:3, :3], cv2.Rodrigues(OPENCV_RVEC)[0], atol=1e-6)
    np.testing.assert_allclose(pose[:3, 3], OPENCV_TVEC, atol=1e-7)
    # a frontal head at ~42 cm, as in the clip
    yaw, pitch, roll = head_angles_deg(pose[None])[0]
    assert abs(yaw) < 10 and abs(pitch) < 15 and abs(roll) < 10


# --- pose algebra ---------------------------------------------------------------------------------------------------

def random_poses(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotations = Rotation.random(count, random_state=seed).as_matrix()
    return np.stack([make_pose(r, rng.normal(size=3)) for r in rotations])


def test_invert_pose_equals_matrix_inverse():
    poses = random_poses(10)
    np.testing.assert_allclose(invert_rigid(poses), np.linalg.inv(poses), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(poses[3]), np.linalg.inv(poses[3]), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(poses) @ poses, np.broadcast_to(np.eye(4), poses.shape), atol=1e-12)


def test_transform_points_equals_homogeneous_product():
    pose = random_poses(1, seed=3)[0]
    points = np.random.default_rng(3).normal(size=(30, 3))
    homogeneous = np.column_stack([points, np.ones(30)]) @ pose.T
    np.testing.assert_allclose(transform_points(pose, points), homogeneous[:, :3], atol=1e-12)


def test_head_angles_round_trip():
    rng = np.random.default_rng(1)
    angles = np.column_stack([rng.uniform(-80, 80, 50), rng.uniform(-60, 60, 50), rng.uniform(-60, 60, 50)])
    translations = rng.normal(size=(50, 3))
    poses = np.stack([pose_from_head_angles(a, t) for a, t in zip(angles, translations)])
    np.testing.assert_allclose(head_angles_deg(poses), angles, atol=1e-9)
    np.testing.assert_allclose(poses[:, :3, 3], translations)
    np.testing.assert_allclose(np.stack([pose_from_head_angles(a, t) for a, t in zip(head_angles_deg(poses),
                                                                                    translations)]), poses, atol=1e-9)


def test_head_angles_mean_what_their_names_say():
    """Head frame: x to the subject's left, y up, z out of the face. Camera: x right, y down, z forward."""
    at = np.array([0.0, 0.0, 0.5])
    nose = np.array([[0.0, 0.0, 0.1]])
    frontal = pose_from_head_angles(np.zeros(3), at)
    assert transform_points(frontal, nose)[0, 2] < at[2]  # the nose points at the camera
    assert transform_points(frontal, np.array([[0.0, 0.1, 0.0]]))[0, 1] < 0  # head up is image up
    assert transform_points(frontal, np.array([[0.1, 0.0, 0.0]]))[0, 0] > 0  # the subject's left is image right
    turned = pose_from_head_angles(np.array([30.0, 0.0, 0.0]), at)
    assert transform_points(turned, nose)[0, 0] > 0  # yaw > 0: the face turns to the subject's left (image right)
    nodded = pose_from_head_angles(np.array([0.0, 20.0, 0.0]), at)
    assert transform_points(nodded, nose)[0, 1] < 0  # pitch > 0: the face looks up
    tilted = pose_from_head_angles(np.array([0.0, 0.0, 15.0]), at)
    assert transform_points(tilted, np.array([[0.1, 0.0, 0.0]]))[0, 1] < 0  # roll > 0: the subject's left side rises
    assert rotation_angle_deg(turned[None], frontal[None])[0] == pytest.approx(30.0)


# --- smoothing ------------------------------------------------------------------------------------------------------

AXIS = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])


RATE = 30.0


def linear_path(count: int) -> np.ndarray:
    """A head turning and moving at constant speed: rotation about a fixed axis and translation, linear in time."""
    t = np.linspace(-1.0, 1.0, count)
    base = pose_from_head_angles(np.array([10.0, -5.0, 3.0]), np.zeros(3))[:3, :3]
    rotations = base @ Rotation.from_rotvec((0.4 * t)[:, None] * AXIS).as_matrix()
    translations = np.column_stack([0.05 * t, -0.02 * t, 0.5 + 0.1 * t])
    return np.stack([make_pose(r, x) for r, x in zip(rotations, translations)])


def one_euro_by_the_paper(values, rate, min_cutoff, beta, d_cutoff):
    """Casiez et al. 2012, as their pseudocode reads: one scalar at a time, with the LowPassFilter class."""

    class LowPass:
        def __init__(self):
            self.previous = None

        def __call__(self, x, alpha):
            self.previous = x if self.previous is None else alpha * x + (1 - alpha) * self.previous
            return self.previous

    def alpha(cutoff):
        te = 1.0 / rate
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    out = np.zeros_like(values)
    for column in range(values.shape[1]):
        x_filter, dx_filter = LowPass(), LowPass()
        previous = None
        for i, x in enumerate(values[:, column]):
            dx = 0.0 if previous is None else (x - previous) * rate
            edx = dx_filter(dx, alpha(d_cutoff))
            out[i, column] = x_filter(x, alpha(min_cutoff + beta * abs(edx)))
            previous = x
    return out


def test_one_euro_matches_the_papers_pseudocode():
    rng = np.random.default_rng(1)
    signal = np.cumsum(rng.normal(size=(50, 3)), axis=0) * 0.01
    np.testing.assert_allclose(one_euro(signal, RATE, 1.5, 100.0, 1.0),
                               one_euro_by_the_paper(signal, RATE, 1.5, 100.0, 1.0), atol=1e-12)


def test_smoothing_has_no_lag_on_a_steady_turn():
    """A causal filter trails a steady turn; the forward-backward mean does not (away from the ends)."""
    poses = linear_path(60)
    smoothed = smooth_poses(poses, [slice(0, 60)], RATE)
    inner = slice(15, 45)
    assert rotation_angle_deg(smoothed[inner], poses[inner]).max() < 0.05
    np.testing.assert_allclose(smoothed[inner, :3, 3], poses[inner, :3, 3], atol=2e-4)
    causal = one_euro(poses[:, :3, 3], RATE, 1.5, 500.0)
    assert np.abs(causal[inner] - poses[inner, :3, 3]).max() > 5 * np.abs(smoothed[inner, :3, 3]
                                                                          - poses[inner, :3, 3]).max()


def test_smoothing_removes_jitter_of_a_still_head():
    truth = np.repeat(pose_from_head_angles(np.array([5.0, -3.0, 1.0]), np.array([0.0, 0.0, 0.5]))[None], 60, 0)
    rng = np.random.default_rng(0)
    noisy = truth.copy()
    # tracker-like noise: half a millimetre, a tenth of a degree (the shared clips' raw poses jitter about this much)
    noisy[:, :3, 3] += rng.normal(scale=0.0005, size=(60, 3))
    noisy[:, :3, :3] = noisy[:, :3, :3] @ Rotation.from_rotvec(rng.normal(scale=0.002, size=(60, 3))).as_matrix()
    smoothed = smooth_poses(noisy, [slice(0, 60)], RATE)
    raw_error = np.abs(noisy[:, :3, 3] - truth[:, :3, 3]).mean()
    assert np.abs(smoothed[:, :3, 3] - truth[:, :3, 3]).mean() < 0.6 * raw_error
    assert rotation_angle_deg(smoothed, truth).mean() < 0.6 * rotation_angle_deg(noisy, truth).mean()
    np.testing.assert_allclose(np.linalg.det(smoothed[:, :3, :3]), 1.0, atol=1e-12)  # still rotations


def test_smoothing_follows_a_fast_turn():
    """A 25-degree head shake at 1.5 Hz: the adaptive cut-off follows it; the same filter without adaptation
    (beta 0) blunts it."""
    t = np.arange(60) / RATE
    yaw = 25.0 * np.sin(2 * np.pi * 1.5 * t)
    poses = np.stack([pose_from_head_angles(np.array([y, 0.0, 0.0]), np.array([0.0, 0.0, 0.5])) for y in yaw])
    adaptive = smooth_poses(poses, [slice(0, 60)], RATE)
    fixed = smooth_poses(poses, [slice(0, 60)], RATE, PoseSmoothingConfig(beta_rotation=0.0, beta_translation=0.0))
    assert rotation_angle_deg(adaptive, poses).mean() < 1.5
    assert rotation_angle_deg(fixed, poses).mean() > 3 * rotation_angle_deg(adaptive, poses).mean()


def test_smoothing_does_not_delay_a_step():
    """A zero-phase filter answers a step symmetrically: the two frames around it average to the midpoint. A causal
    (lagging) filter would still be near the old value just after the step."""
    poses = np.repeat(pose_from_head_angles(np.zeros(3), np.array([0.0, 0.0, 0.5]))[None], 40, axis=0)
    poses[20:, 0, 3] = 0.1  # the head jumps 10 cm to the right between frames 19 and 20
    poses[20:, :3, :3] = pose_from_head_angles(np.array([20.0, 0.0, 0.0]), np.zeros(3))[:3, :3]
    smoothed = smooth_poses(poses, [slice(0, 40)], RATE)
    x = smoothed[:, 0, 3]
    assert x[19] + x[20] == pytest.approx(0.1, abs=1e-12)
    assert x[20] > 0.03  # the forward pass alone would give a*0.1 with a small a; the backward pass brings it up
    np.testing.assert_allclose(x[:10], 0.0, atol=1e-3)
    np.testing.assert_allclose(x[30:], 0.1, atol=1e-3)
    yaw = head_angles_deg(smoothed)[:, 0]
    assert yaw[19] + yaw[20] == pytest.approx(20.0, abs=0.05)


def test_smoothing_does_not_cross_gaps():
    first = np.repeat(pose_from_head_angles(np.array([-15.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.5]))[None], 12, 0)
    second = np.repeat(pose_from_head_angles(np.array([15.0, 5.0, 0.0]), np.array([0.1, 0.0, 0.6]))[None], 12, 0)
    short = np.repeat(pose_from_head_angles(np.array([0.0, 30.0, 0.0]), np.array([0.0, 0.1, 0.4]))[None], 2, 0)
    short[1, 0, 3] += 0.05  # a segment too short to smooth is left as it is
    poses = np.concatenate([first, second, short])
    source_frames = np.concatenate([np.arange(12), np.arange(30, 42), np.arange(50, 52)])
    segments = contiguous_segments(source_frames)
    assert segments == [slice(0, 12), slice(12, 24), slice(24, 26)]
    np.testing.assert_allclose(smooth_poses(poses, segments, RATE), poses, atol=1e-12)
    # the same poses treated as one run are blended across the gap
    assert not np.allclose(smooth_poses(poses, [slice(0, 26)], RATE), poses, atol=1e-3)


def test_contiguous_segments_with_a_stride():
    assert contiguous_segments(np.array([0, 2, 4, 8, 10]), every=2) == [slice(0, 3), slice(3, 5)]
    assert contiguous_segments(np.array([], dtype=int)) == []


# --- lifting landmarks to 3D ----------------------------------------------------------------------------------------

def mediapipe_like_landmarks(points_head: np.ndarray, pose: np.ndarray, camera: PinholeCamera,
                             template: np.ndarray) -> np.ndarray:
    """Project head-frame points to pixels and give them a MediaPipe-style depth: camera depth relative to the posed
    template's rigid points, in pixels at that distance, plus an arbitrary offset (MediaPipe's z has no origin)."""
    posed = transform_points(pose, points_head)
    depth = transform_points(pose, template[STABLE])[:, 2].mean()
    z_px = (posed[:, 2] - depth) * camera.fx / depth + 7.0
    return np.column_stack([camera.project(posed), z_px])


def test_lifting_inverts_the_projection_exactly(dataset):
    template, camera = dataset.face_model.template, dataset.camera
    points = template.copy()
    points[[lm.LOWER_LIP_INNER, lm.LOWER_LIP_OUTER, lm.CHIN]] += np.array([0.0, -0.012, 0.002])  # an open jaw
    for angles in ([0.0, 0.0, 0.0], [20.0, -10.0, 5.0]):
        pose = pose_from_head_angles(np.array(angles), np.array([0.01, 0.02, 0.45]))
        pixels = mediapipe_like_landmarks(points, pose, camera, template)
        np.testing.assert_allclose(landmarks_to_head_space(pixels, pose, camera, template), points, atol=1e-12)


def test_lifted_real_landmarks_reproject_onto_themselves(dataset):
    tracking, template, camera = dataset.tracking, dataset.face_model.template, dataset.camera
    for i in range(0, tracking.num_frames, 7):
        landmarks = tracking.landmarks[i].astype(np.float64)
        lifted = landmarks_to_head_space(landmarks, tracking.camera_from_head[i], camera, template)
        np.testing.assert_allclose(project_template(lifted, tracking.camera_from_head[i], camera), landmarks[:, :2],
                                   atol=1e-9)
        # and the rigid points land near the template (the pose was solved on them): within a few millimetres
        assert np.linalg.norm(lifted[STABLE] - template[STABLE], axis=1).mean() < 0.005


# --- Umeyama --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_scale, scale", [(False, 1.0), (True, 1.0), (True, 0.37), (True, 4.2)])
def test_rigid_align_recovers_a_known_similarity(dataset, with_scale, scale):
    source = dataset.face_model.template
    rotation = Rotation.from_euler("xyz", [30, -50, 110], degrees=True).as_matrix()
    translation = np.array([0.3, -1.0, 2.0])
    target = scale * source @ rotation.T + translation
    aligned = rigid_align(source, target, with_scale=with_scale)
    np.testing.assert_allclose(aligned[:3, :3], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(aligned[:3, 3], translation, atol=1e-9)
    np.testing.assert_allclose(transform_points(aligned, source), target, atol=1e-9)


def test_rigid_align_returns_a_rotation_for_mirrored_points():
    rng = np.random.default_rng(5)
    source = rng.normal(size=(30, 3))
    mirrored = source * np.array([-1.0, 1.0, 1.0])
    aligned = rigid_align(source, mirrored)
    assert np.linalg.det(aligned[:3, :3]) == pytest.approx(1.0)
