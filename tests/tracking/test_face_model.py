"""The subject's face model: the canonical frame of the template, rigid invariance of the codes, save/load, and the
flags for tracking jumps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from avatar4d.dataset.layout import load_dataset
from avatar4d.errors import DatasetError
from avatar4d.geometry.rigid import make_pose, transform_points
from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.face_model import (
    INTER_PUPIL_DISTANCE_M,
    FaceModel,
    flag_jumps,
    initial_template,
    normalise_template,
    remove_rigid_motion,
)
from avatar4d.tracking.head_pose import landmarks_to_head_space

STABLE = np.asarray(lm.STABLE_LANDMARKS)


@pytest.fixture(scope="module")
def dataset(prepared_dataset):
    return load_dataset(prepared_dataset)


def eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points[list(lm.RIGHT_EYE_CORNERS)].mean(0), points[list(lm.LEFT_EYE_CORNERS)].mean(0)


def test_template_is_in_the_documented_head_frame(dataset):
    template = dataset.face_model.template
    assert template.shape == (lm.NUM_LANDMARKS, 3)
    right_eye, left_eye = eye_centres(template)
    assert np.linalg.norm(left_eye - right_eye) == pytest.approx(INTER_PUPIL_DISTANCE_M)  # 63 mm
    np.testing.assert_allclose(template[STABLE].mean(0), 0.0, atol=1e-12)  # origin: centroid of the stable points
    np.testing.assert_allclose((left_eye - right_eye)[1:], 0.0, atol=1e-12)  # x runs from right eye to left eye
    assert left_eye[0] > right_eye[0]
    assert template[lm.FOREHEAD, 1] > template[lm.CHIN, 1]  # y up
    # y is chin-to-forehead made orthogonal to x, so that line lies in the x-y plane
    assert template[lm.FOREHEAD, 2] == pytest.approx(template[lm.CHIN, 2], abs=1e-12)
    assert template[lm.NOSE_TIP, 2] > template[list(lm.RIGHT_EYE_CORNERS), 2].max()  # z out of the face
    head_height = template[lm.FOREHEAD, 1] - template[lm.CHIN, 1]
    assert 0.14 < head_height < 0.22  # an adult face, chin to hairline, in metres


def test_normalise_template_undoes_any_similarity(dataset):
    template = dataset.face_model.template
    rotation = Rotation.from_euler("xyz", [40, -25, 160], degrees=True).as_matrix()
    moved = 3.7 * template @ rotation.T + np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(normalise_template(moved), template, atol=1e-12)


def test_initial_template_from_mediapipe_depth_is_close_to_the_refined_one(dataset):
    sample = dataset.tracking.landmarks[::6].astype(np.float64)
    first = initial_template(sample)
    right_eye, left_eye = eye_centres(first)
    assert np.linalg.norm(left_eye - right_eye) == pytest.approx(INTER_PUPIL_DISTANCE_M)
    # orthographic MediaPipe depth vs perspective refinement: within a few millimetres on the rigid points
    assert np.linalg.norm(first[STABLE] - dataset.face_model.template[STABLE], axis=1).mean() < 0.004


def test_remove_rigid_motion_takes_posed_templates_home(dataset):
    template = dataset.face_model.template
    poses = [make_pose(Rotation.from_rotvec(r).as_matrix(), t) for r, t in
             zip(np.random.default_rng(0).normal(scale=0.3, size=(4, 3)), np.random.default_rng(1).normal(size=(4, 3)))]
    moved = np.stack([transform_points(p, template) for p in poses])
    np.testing.assert_allclose(remove_rigid_motion(moved, template), np.repeat(template[None], 4, 0), atol=1e-12)


def test_codes_ignore_rigid_motion_and_match_the_stored_ones(dataset):
    model, tracking = dataset.face_model, dataset.tracking
    lifted = np.stack([landmarks_to_head_space(tracking.landmarks[i].astype(np.float64), tracking.camera_from_head[i],
                                               dataset.camera, model.template) for i in range(0, 72, 9)])
    codes = model.encode(lifted)
    np.testing.assert_allclose(codes, tracking.expression[::9], atol=1e-3)  # float32 storage
    turned = lifted @ Rotation.from_euler("y", 20, degrees=True).as_matrix().T + np.array([0.01, 0.0, -0.02])
    np.testing.assert_allclose(model.encode(turned), codes, atol=1e-9)
    assert model.landmarks(codes).shape == (len(codes), lm.NUM_LANDMARKS, 3)
    assert model.num_components == tracking.expression.shape[1] == 32


def test_code_range_is_the_range_seen_in_the_video(dataset):
    np.testing.assert_allclose(dataset.face_model.code_min, dataset.tracking.expression.min(0), atol=1e-5)
    np.testing.assert_allclose(dataset.face_model.code_max, dataset.tracking.expression.max(0), atol=1e-5)


def test_face_model_save_load_round_trip(dataset, tmp_path):
    model = dataset.face_model
    path = tmp_path / "face_model.safetensors"
    model.save(path)
    loaded = FaceModel.load(path)
    np.testing.assert_array_equal(loaded.template, model.template)
    np.testing.assert_array_equal(loaded.basis.components, model.basis.components)
    np.testing.assert_array_equal(loaded.basis.stddev, model.basis.stddev)
    np.testing.assert_array_equal(loaded.controls.weights, model.controls.weights)
    np.testing.assert_array_equal(loaded.controls.seen, model.controls.seen)
    assert loaded.controls.names == model.controls.names
    assert [p.name for p in tmp_path.iterdir()] == ["face_model.safetensors"]


def test_damaged_face_model_is_refused(tmp_path):
    path = tmp_path / "face_model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(DatasetError, match="cannot read the face model"):
        FaceModel.load(path)


def test_jumps_are_flagged_with_their_reason():
    count = 40
    smooth = np.repeat(make_pose(np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 0.5]))[None], count, 0)
    rng = np.random.default_rng(0)
    raw = smooth.copy()
    for i in range(count):  # ordinary jitter: 0.3 degrees, 0.5 mm
        raw[i, :3, :3] = raw[i, :3, :3] @ Rotation.from_rotvec(rng.normal(scale=0.003, size=3)).as_matrix()
        raw[i, :3, 3] += rng.normal(scale=0.0005, size=3)
    raw[10, :3, :3] = raw[10, :3, :3] @ Rotation.from_euler("y", 12, degrees=True).as_matrix()
    raw[15, :3, 3] += np.array([0.05, 0.0, 0.0])
    reprojection = np.full(count, 0.5) + rng.uniform(0, 0.1, count)
    reprojection[20] = 9.0
    codes = np.cumsum(rng.normal(scale=0.1, size=(count, 8)), axis=0)
    codes[30] += 10.0
    flagged, reasons = flag_jumps(raw, smooth, reprojection, codes, image_size=256)
    assert np.nonzero(flagged)[0].tolist() == [10, 15, 20, 30]
    assert "pose jumps" in reasons[10][0]
    assert "position jumps" in reasons[15][0]
    assert "rigid landmarks 9.0 px off" in reasons[20][0]
    assert "expression spikes" in reasons[30][0]
