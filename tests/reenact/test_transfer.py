"""Driver -> avatar transfer (reenact/transfer.py) against simple references: poses by the matrix formula written
out, expression codes by a per-frame least-squares fit, the rotation mean by projecting the mean matrix onto the
rotations, holding the last good row by a loop. Real tracking from the sample clip and the driver clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar4d.geometry.angles import HeadRotation, rotated_pose
from avatar4d.geometry.rigid import invert_rigid
from avatar4d.reenact.transfer import (
    clamp_to_range,
    hold_last_good,
    match_spread,
    mean_pose,
    transfer_expressions,
    transfer_poses,
)
from avatar4d.tracking.expression import ExpressionBasis
from avatar4d.tracking.face_model import FaceModel
from avatar4d.tracking.head_pose import pose_from_head_angles


@pytest.fixture(scope="module")
def subject(prepared_dataset: Path):
    """The sample subject's face model and tracking (codes, poses) from the prepared dataset."""
    from avatar4d.dataset.layout import load_dataset

    return load_dataset(prepared_dataset)


@pytest.fixture(scope="module")
def driver_track(driver_video: Path):
    """The other person's clip, tracked over its first 60 frames (their own face model and codes)."""
    from avatar4d.preparation.config import PrepareConfig
    from avatar4d.preparation.passes import track_video

    return track_video(driver_video, PrepareConfig(max_frames=60, overlay=False))


# an avatar's mean pose: somewhere else in front of another camera, turned a little
AVATAR_MEAN = pose_from_head_angles(np.array([8.0, -4.0, 3.0]), np.array([0.02, -0.01, 0.5]))


def transfer_by_formula(driver_poses: np.ndarray, driver_mean: np.ndarray, avatar_mean: np.ndarray) -> np.ndarray:
    """One frame at a time: the driver's motion relative to its mean, ``inv(driver_mean) @ pose``, applied after the
    avatar's mean."""
    return np.stack([avatar_mean @ np.linalg.inv(driver_mean) @ pose for pose in driver_poses])


def test_transfer_poses_of_the_drivers_mean_gives_the_avatars_mean(subject):
    poses = subject.tracking.camera_from_head
    driver_mean = mean_pose(poses)
    np.testing.assert_allclose(transfer_poses(driver_mean[None], driver_mean, AVATAR_MEAN)[0], AVATAR_MEAN, atol=1e-12)


@pytest.mark.parametrize("angles", [(15.0, 0.0, 0.0), (0.0, -10.0, 0.0), (0.0, 0.0, 6.0), (-20.0, 12.0, -5.0)])
def test_a_driver_turned_about_its_head_origin_turns_the_avatar_by_the_same_rotation(subject, angles):
    """The driver's mean pose turned by R about the head's own origin -> the avatar's mean pose turned by R."""
    driver_mean = mean_pose(subject.tracking.camera_from_head)
    turned = rotated_pose(driver_mean, HeadRotation(*angles))
    avatar = transfer_poses(turned[None], driver_mean, AVATAR_MEAN)[0]
    np.testing.assert_allclose(avatar, rotated_pose(AVATAR_MEAN, HeadRotation(*angles)), atol=1e-12)
    # the head origin does not move: a pure turn of the driver is a pure turn of the avatar
    np.testing.assert_allclose(avatar[:3, 3], AVATAR_MEAN[:3, 3], atol=1e-12)
    relative = HeadRotation.from_matrix(AVATAR_MEAN[:3, :3].T @ avatar[:3, :3])
    np.testing.assert_allclose([relative.yaw, relative.pitch, relative.roll], angles, atol=1e-9)


def test_transfer_poses_of_a_real_track_matches_the_formula_and_keeps_each_frames_motion(subject):
    poses = subject.tracking.camera_from_head
    driver_mean = mean_pose(poses)
    avatar = transfer_poses(poses, driver_mean, AVATAR_MEAN)
    np.testing.assert_allclose(avatar, transfer_by_formula(poses, driver_mean, AVATAR_MEAN), atol=1e-12)
    # motion between any two frames, seen from the head, is the same for the driver and the avatar
    for a, b in [(0, 10), (5, 60), (30, 31)]:
        np.testing.assert_allclose(invert_rigid(avatar[a]) @ avatar[b], invert_rigid(poses[a]) @ poses[b], atol=1e-12)
    np.testing.assert_allclose(avatar[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (len(poses), 1)), atol=1e-15)


def project_mean_rotation(rotations: np.ndarray) -> np.ndarray:
    """The rotation nearest (Frobenius) to the arithmetic mean of the matrices: the chordal L2 mean."""
    u, _, vt = np.linalg.svd(rotations.mean(0))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def test_mean_pose_is_the_chordal_mean_rotation_and_the_mean_translation(subject):
    poses = subject.tracking.camera_from_head
    mean = mean_pose(poses)
    np.testing.assert_allclose(mean[:3, :3], project_mean_rotation(poses[:, :3, :3]), atol=1e-9)
    np.testing.assert_allclose(mean[:3, 3], poses[:, :3, 3].mean(0), atol=1e-15)
    np.testing.assert_allclose(mean[3], [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(mean[:3, :3] @ mean[:3, :3].T, np.eye(3), atol=1e-12)


def test_mean_pose_of_turns_by_plus_and_minus_an_angle_is_the_middle_pose():
    middle = pose_from_head_angles(np.array([5.0, 2.0, -1.0]), np.array([0.0, 0.0, 0.45]))
    poses = np.stack([rotated_pose(middle, HeadRotation(yaw=sign * 25.0)) for sign in (1, -1)])
    np.testing.assert_allclose(mean_pose(poses)[:3, :3], middle[:3, :3], atol=1e-12)


def test_transfer_expressions_between_identical_face_models_returns_the_same_codes(subject):
    model = subject.face_model
    codes = subject.tracking.expression.astype(np.float64)
    np.testing.assert_allclose(transfer_expressions(model, codes, model), codes, atol=1e-9)


def test_transfer_expressions_into_a_rearranged_basis_keeps_the_landmark_motion(subject):
    """A driver whose basis spans the same directions in another order, with flipped signs and other scales: the
    avatar's codes differ, but they move the landmarks exactly as the driver's codes did."""
    model = subject.face_model
    basis = model.basis
    order = np.random.default_rng(0).permutation(len(basis.stddev))
    signs = np.where(np.arange(len(order)) % 2 == 0, 1.0, -1.0)
    driver = FaceModel(template=model.template + 0.003, basis=ExpressionBasis(
        basis.components[order] * signs[:, None], basis.stddev[order] * 1.7, basis.explained_variance_ratio[order]),
        controls=model.controls, code_min=model.code_min[order], code_max=model.code_max[order])
    driver_codes = subject.tracking.expression.astype(np.float64)
    codes = transfer_expressions(driver, driver_codes, model)
    np.testing.assert_allclose(codes, driver_codes[:, np.argsort(order)] * (1.7 * signs[np.argsort(order)]),
                               atol=1e-9)
    np.testing.assert_allclose(model.basis.decode(codes), driver.basis.decode(driver_codes), atol=1e-12)


def transfer_by_least_squares(driver: FaceModel, driver_codes: np.ndarray, avatar: FaceModel) -> np.ndarray:
    """Frame by frame: the driver's landmark offsets from its neutral face, then the avatar codes whose offsets are
    nearest to them (``np.linalg.lstsq`` on the avatar's per-unit displacements)."""
    per_unit = avatar.basis.scaled.reshape(len(avatar.basis.stddev), -1).T  # (3 L, K)
    out = []
    for code in driver_codes:
        offsets = (driver.template[None] + driver.basis.decode(code[None]))[0] - driver.template
        out.append(np.linalg.lstsq(per_unit, offsets.ravel(), rcond=None)[0])
    return np.stack(out)


def test_transfer_expressions_from_another_person_is_the_least_squares_fit_of_their_landmark_motion(subject,
                                                                                                   driver_track):
    driver, driver_codes = driver_track.model, driver_track.fit.codes
    codes = transfer_expressions(driver, driver_codes, subject.face_model)
    assert codes.shape == (len(driver_codes), subject.face_model.num_components)
    np.testing.assert_allclose(codes, transfer_by_least_squares(driver, driver_codes, subject.face_model), atol=1e-8)
    # the driver's neutral face (code 0) is the avatar's neutral face
    np.testing.assert_allclose(transfer_expressions(driver, np.zeros((1, driver.num_components)),
                                                    subject.face_model), 0.0, atol=1e-15)


def hold_by_loop(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    out, next_good, last = [], 0, None
    first = values[0]
    for is_good in good:
        if is_good:
            last = values[next_good]
            next_good += 1
        out.append(last if last is not None else first)
    return np.stack(out)


@pytest.mark.parametrize("pattern", [
    "1111", "1001101", "0011010", "1000000", "0000001", "0101010101",
])
def test_hold_last_good_matches_a_loop(pattern):
    good = np.array([c == "1" for c in pattern])
    values = np.random.default_rng(len(pattern)).normal(size=(int(good.sum()), 3, 2))
    held = hold_last_good(values, good)
    assert held.shape == (len(good), 3, 2)
    np.testing.assert_array_equal(held, hold_by_loop(values, good))
    np.testing.assert_array_equal(held[good], values)


def test_hold_last_good_with_no_good_row_says_so():
    with pytest.raises(ValueError, match="no good rows"):
        hold_last_good(np.zeros((0, 4)), np.zeros(5, dtype=bool))


def test_match_spread_scales_only_components_wider_than_the_reference_by_a_loop():
    codes = np.random.default_rng(3).normal(size=(50, 4)) * np.array([0.5, 1.0, 3.0, 6.0])
    reference = np.array([1.0, 1.0, 1.0, 2.0])
    matched = match_spread(codes, reference)
    for k in range(4):
        spread = codes[:, k].std()
        expected = codes[:, k] * (reference[k] / spread if spread > reference[k] else 1.0)
        np.testing.assert_allclose(matched[:, k], expected, rtol=1e-12)
    np.testing.assert_allclose(matched.std(0), np.minimum(codes.std(0), reference), rtol=1e-12)


def test_match_spread_of_another_persons_codes_brings_them_to_the_subjects_spread(subject, driver_track):
    """On real tracking: the sample driver's codes, laid on the subject's basis, are wider than the subject's own in
    some components; afterwards no component is wider, and components within the spread are untouched."""
    model = subject.face_model
    own = subject.tracking.expression[subject.train_indices].std(0)
    transferred = transfer_expressions(driver_track.model, driver_track.fit.codes, model)
    wider = transferred.std(0) > own
    assert wider.any(), "the driver's minor components spread wider than the subject's own"
    matched = match_spread(transferred, own)
    assert (matched.std(0) <= own * (1 + 1e-6)).all()
    np.testing.assert_array_equal(matched[:, ~wider], transferred[:, ~wider])


def test_clamp_to_range_clips_each_component_and_names_the_frames_it_changed():
    codes = np.array([[0.0, 0.5], [2.0, 0.0], [0.0, -3.0], [1.0, 1.0]])
    low, high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    clipped, changed = clamp_to_range(codes, low, high)
    np.testing.assert_array_equal(clipped, [[0.0, 0.5], [1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(changed, [False, True, True, False])


# --- the controls transfer ------------------------------------------------------------------------------------------


def test_smooth_controls_is_the_zero_phase_filter_per_run_of_frames_in_the_drivers_own_units(driver_track):
    """Against a loop over the runs: each run filtered alone (in units of the driver's range), short runs untouched."""
    from avatar4d.reenact.transfer import ControlSmoothing, smooth_controls
    from avatar4d.tracking.head_pose import zero_phase_one_euro

    controls = driver_track.model.controls
    raw = controls.raw(driver_track.fit.controls)
    segments = [slice(0, 20), slice(20, 22), slice(22, len(raw))]
    config = ControlSmoothing()
    smoothed = smooth_controls(raw, controls.scale, segments, 30.0, config)
    for segment in segments:
        part = raw[segment]
        expected = part if len(part) < 3 else controls.scale * zero_phase_one_euro(
            part / controls.scale, 30.0, config.min_cutoff_hz, config.beta, config.derivative_cutoff_hz)
        np.testing.assert_allclose(smoothed[segment], expected, atol=1e-12)
    assert np.abs(np.diff(smoothed[22:], 2, axis=0)).mean() < np.abs(np.diff(raw[22:], 2, axis=0)).mean()


def test_smooth_controls_lets_a_ramp_pass_without_lag():
    from avatar4d.reenact.transfer import smooth_controls

    ramp = np.linspace(0.0, 0.02, 60)[:, None] * np.ones((1, 8))
    smoothed = smooth_controls(ramp, np.full(8, 0.01), [slice(0, 60)], 25.0)
    np.testing.assert_allclose(smoothed[5:-5], ramp[5:-5], atol=1e-4)


def test_control_regression_recovers_an_exact_linear_relation_and_matches_least_squares(subject):
    from avatar4d.reenact.transfer import fit_control_regression

    controls = subject.tracking.controls.astype(np.float64)
    weights = np.random.default_rng(1).normal(size=(controls.shape[1], 5))
    codes = 0.3 + controls @ weights
    regression = fit_control_regression(controls, codes, ridge=0.0)
    np.testing.assert_allclose(regression.weights, weights, atol=1e-6)
    np.testing.assert_allclose(regression(controls), codes, atol=1e-6)
    real = subject.tracking.expression.astype(np.float64)
    design = np.concatenate([controls, np.ones((len(controls), 1))], axis=1)
    solution = np.linalg.lstsq(design, real, rcond=None)[0]
    np.testing.assert_allclose(fit_control_regression(controls, real, ridge=0.0)(controls), design @ solution,
                               atol=1e-8)


def test_retarget_controls_puts_the_drivers_change_from_its_neutral_on_the_avatars_neutral(subject, driver_track):
    from avatar4d.reenact.transfer import clamp_controls, retarget_controls
    from avatar4d.tracking.coverage import estimate_neutral

    avatar_map = subject.face_model.controls
    avatar_neutral = estimate_neutral(avatar_map.raw(subject.tracking.controls.astype(np.float64))).raw
    driver_raw = driver_track.model.controls.raw(driver_track.fit.controls)
    driver_neutral = estimate_neutral(driver_raw).raw
    at_neutral = retarget_controls(driver_neutral[None], driver_neutral, avatar_neutral, avatar_map)
    np.testing.assert_allclose(avatar_map.raw(at_neutral)[0], avatar_neutral, atol=1e-12)
    controls = retarget_controls(driver_raw, driver_neutral, avatar_neutral, avatar_map)
    np.testing.assert_allclose(avatar_map.raw(controls) - avatar_neutral, driver_raw - driver_neutral, atol=1e-12)
    low, high = subject.tracking.controls.min(0), subject.tracking.controls.max(0)
    clamped, clipped = clamp_controls(controls, low, high)
    assert (clamped >= low - 1e-12).all() and (clamped <= high + 1e-12).all()
    np.testing.assert_array_equal(clamped[~clipped], controls[~clipped])
