"""Semantic controls: each measurement moves the right way when the matching landmarks move on the real template, the
normalisation is the documented one, and the linear map onto the code is exact where it can be."""

from __future__ import annotations

import numpy as np
import pytest

from avatar4d.dataset.layout import load_dataset
from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.controls import CONTROL_NAMES, MIN_RANGE, TWO_SIDED, fit_control_map, measure_controls
from avatar4d.tracking.face_model import remove_rigid_motion
from avatar4d.tracking.head_pose import landmarks_to_head_space

MM = 0.001


@pytest.fixture(scope="module")
def dataset(prepared_dataset):
    return load_dataset(prepared_dataset)


@pytest.fixture(scope="module")
def canonical_points(dataset) -> np.ndarray:
    """(F, L, 3) the real landmarks in the head frame, as the face model sees them."""
    tracking, template = dataset.tracking, dataset.face_model.template
    lifted = np.stack([landmarks_to_head_space(tracking.landmarks[i].astype(np.float64), tracking.camera_from_head[i],
                                               dataset.camera, template) for i in range(tracking.num_frames)])
    return remove_rigid_motion(lifted, template)


def controls_after(template: np.ndarray, moves: dict[int, tuple[float, float, float]]) -> dict[str, float]:
    """Raw controls of the template with some landmarks moved (metres, head frame), minus those of the template."""
    moved = template.copy()
    for index, offset in moves.items():
        moved[index] += np.array(offset)
    before, after = measure_controls(np.stack([template, moved]))
    return dict(zip(CONTROL_NAMES, after - before))


def only_changed(change: dict[str, float], names: set[str]) -> bool:
    return all(abs(v) < 1e-12 for k, v in change.items() if k not in names)


def test_jaw_open_is_the_inner_lip_gap(dataset):
    template = dataset.face_model.template
    raw = measure_controls(template[None])[0]
    assert raw[CONTROL_NAMES.index("jaw_open")] == pytest.approx(
        np.linalg.norm(template[lm.UPPER_LIP_INNER] - template[lm.LOWER_LIP_INNER]))
    change = controls_after(template, {lm.LOWER_LIP_INNER: (0, -6 * MM, 0)})
    assert change["jaw_open"] > 4 * MM and only_changed(change, {"jaw_open"})


def test_smile_rises_when_the_mouth_corners_go_up_and_out(dataset):
    template = dataset.face_model.template
    right, left = lm.MOUTH_CORNERS
    up = controls_after(template, {right: (0, 3 * MM, 0), left: (0, 3 * MM, 0)})
    assert up["smile"] == pytest.approx(6 * MM, rel=1e-6)  # twice the corners' rise (width unchanged)
    wide = controls_after(template, {right: (-2 * MM, 0, 0), left: (2 * MM, 0, 0)})
    assert wide["smile"] > 3 * MM
    down = controls_after(template, {right: (0, -3 * MM, 0), left: (0, -3 * MM, 0)})
    assert down["smile"] < 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_blink_rises_when_the_lids_close(dataset, side):
    template = dataset.face_model.template
    lids = lm.LEFT_EYE_LIDS if side == "left" else lm.RIGHT_EYE_LIDS
    closing = {upper: tuple(0.8 * (template[lower] - template[upper])) for upper, lower in lids}
    change = controls_after(template, closing)
    assert change[f"blink_{side}"] > 0.1  # an openness ratio: lid gap over eye width
    assert only_changed(change, {f"blink_{side}"})


def test_brow_raise_rises_with_the_brows(dataset):
    template = dataset.face_model.template
    change = controls_after(template, {i: (0, 4 * MM, 0) for i in lm.RIGHT_BROW + lm.LEFT_BROW})
    assert change["brow_raise"] == pytest.approx(4 * MM, rel=1e-6)
    assert only_changed(change, {"brow_raise"})


def test_pucker_rises_when_the_lips_push_forward_and_narrow(dataset):
    template = dataset.face_model.template
    forward = controls_after(template, {lm.UPPER_LIP_OUTER: (0, 0, 4 * MM), lm.LOWER_LIP_OUTER: (0, 0, 4 * MM)})
    assert forward["pucker"] == pytest.approx(4 * MM, rel=1e-6)
    right, left = lm.MOUTH_CORNERS
    narrow = controls_after(template, {right: (3 * MM, 0, 0), left: (-3 * MM, 0, 0)})
    assert narrow["pucker"] > 2 * MM


def test_gaze_follows_the_irises(dataset):
    template = dataset.face_model.template
    irises = (lm.RIGHT_IRIS_CENTER, lm.LEFT_IRIS_CENTER)
    to_left = controls_after(template, {i: (2 * MM, 0, 0) for i in irises})  # towards the subject's left
    assert to_left["gaze_horizontal"] > 0.05 and only_changed(to_left, {"gaze_horizontal"})
    up = controls_after(template, {i: (0, 1.5 * MM, 0) for i in irises})
    assert up["gaze_vertical"] > 0.03 and only_changed(up, {"gaze_vertical"})


# --- normalisation and the map onto the code --------------------------------------------------------------------

def test_one_sided_controls_map_2nd_to_98th_percentile_onto_0_to_1(canonical_points, dataset):
    raw = measure_controls(canonical_points)
    control_map = fit_control_map(raw, dataset.tracking.expression.astype(np.float64))
    normalised = control_map.normalise(raw)
    for i, name in enumerate(CONTROL_NAMES):
        p2, p50, p98 = np.percentile(raw[:, i], [2, 50, 98])
        if name in TWO_SIDED:
            assert control_map.low[i] == pytest.approx(p50)
            assert np.median(normalised[:, i]) == pytest.approx(0.0, abs=1e-12)
            extent = max(p98 - p50, p50 - p2)
            if 2 * extent >= MIN_RANGE[name]:
                ends = np.percentile(normalised[:, i], [2, 98])
                assert max(abs(ends[0]), abs(ends[1])) == pytest.approx(1.0)  # the larger excursion is 1
        else:
            assert control_map.low[i] == pytest.approx(p2)
            if p98 - p2 >= MIN_RANGE[name]:
                np.testing.assert_allclose(np.percentile(normalised[:, i], [2, 98]), [0.0, 1.0], atol=1e-9)
                assert control_map.seen[i]
    np.testing.assert_allclose(control_map.range_min, normalised.min(0))
    np.testing.assert_allclose(control_map.range_max, normalised.max(0))
    np.testing.assert_allclose(control_map.mean, normalised.mean(0))


def test_a_control_the_subject_never_uses_is_floored_and_marked_unseen(canonical_points, dataset):
    raw = measure_controls(canonical_points)
    jaw, gaze = CONTROL_NAMES.index("jaw_open"), CONTROL_NAMES.index("gaze_vertical")
    rng = np.random.default_rng(0)
    raw[:, jaw] = 0.01 + rng.normal(scale=1e-5, size=len(raw))  # tracker noise only
    raw[:, gaze] = rng.normal(scale=1e-4, size=len(raw))
    control_map = fit_control_map(raw, dataset.tracking.expression.astype(np.float64))
    assert not control_map.seen[jaw] and control_map.scale[jaw] == MIN_RANGE["jaw_open"]
    assert not control_map.seen[gaze] and control_map.scale[gaze] == MIN_RANGE["gaze_vertical"] / 2
    assert np.abs(control_map.normalise(raw)[:, jaw]).max() < 0.05  # noise is not amplified into a full slider


def test_each_control_maps_onto_the_codes_simple_regression_on_it(canonical_points):
    """weights[:, c] is the least-squares slope of the code on control c alone (np.polyfit per code dimension)."""
    raw = measure_controls(canonical_points)
    normalised = fit_control_map(raw, np.zeros((len(raw), 3))).normalise(raw)
    mixing = np.random.default_rng(1).normal(size=(12, len(CONTROL_NAMES)))
    codes = (normalised - normalised.mean(0)) @ mixing.T + np.linspace(-0.3, 0.3, 12)
    control_map = fit_control_map(raw, codes)
    for c in range(len(CONTROL_NAMES)):
        if np.ptp(normalised[:, c]) == 0:
            continue
        slopes = [np.polyfit(normalised[:, c], codes[:, k], 1)[0] for k in range(12)]
        np.testing.assert_allclose(control_map.weights[:, c], slopes, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(control_map.r2, 1.0, atol=1e-9)  # 12 code dims see all 8 controls
    # with fewer code dimensions than controls, the reverse fit cannot explain every control
    assert fit_control_map(raw, codes[:, :4]).r2.min() < 0.99
    np.testing.assert_allclose(control_map.to_code(control_map.mean), 0.0, atol=1e-12)  # the mean face


def test_controls_that_move_together_each_keep_the_direction_the_video_shows():
    """Two controls that are the same signal in the video (a talking face: jaw and smile together) both map onto the
    code direction that signal has, not onto arbitrary partial effects."""
    rng = np.random.default_rng(4)
    signal = rng.uniform(0, 1, 300)
    raw = np.zeros((300, len(CONTROL_NAMES)))
    raw[:, CONTROL_NAMES.index("jaw_open")] = 0.03 * signal
    raw[:, CONTROL_NAMES.index("smile")] = 0.05 + 0.02 * signal + 1e-4 * rng.normal(size=300)
    raw[:, CONTROL_NAMES.index("blink_left")] = rng.normal(size=300) * 0.1
    direction = rng.normal(size=6)
    codes = np.outer(signal - signal.mean(), direction) + 0.01 * rng.normal(size=(300, 6))
    control_map = fit_control_map(raw, codes)
    for name in ("jaw_open", "smile"):
        weights = control_map.weights[:, CONTROL_NAMES.index(name)]
        assert weights @ direction / np.linalg.norm(weights) / np.linalg.norm(direction) > 0.99


def test_stored_controls_are_the_normalised_measurements(canonical_points, dataset):
    expected = dataset.face_model.controls.normalise(measure_controls(canonical_points))
    np.testing.assert_allclose(dataset.tracking.controls, expected, atol=1e-4)
    assert dataset.face_model.controls.names == CONTROL_NAMES
