"""The viewer's state: camera orbit <-> head rotation, the picture's padding, a replayed frame's pose and code, the
saved JSON that `avatar4d render --state` reads, and band rendering against the avatar's own render."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar4d.geometry.angles import HeadRotation
from avatar4d.viewer.view_state import (
    BACKDROP_RGB,
    REST_CAMERA_LOOK_AT,
    REST_CAMERA_POSITION,
    Orbit,
    camera_for_orbit,
    compose_view,
    orbit_from_camera,
)


def test_the_rest_camera_is_no_turn_and_no_zoom():
    assert orbit_from_camera(np.array(REST_CAMERA_POSITION), np.array(REST_CAMERA_LOOK_AT)) == Orbit(0.0, 0.0, 1.0)


@pytest.mark.parametrize("orbit", [Orbit(20, 0, 1), Orbit(-35, 10, 1.5), Orbit(5, -40, 0.7), Orbit(170, 0, 2)])
def test_orbit_round_trips_through_the_camera(orbit):
    position, look_at = camera_for_orbit(orbit)
    back = orbit_from_camera(position + 0.3, look_at + 0.3)  # panning (moving both) changes nothing
    assert back is not None
    assert back.yaw == pytest.approx(orbit.yaw, abs=1e-9)
    assert back.pitch == pytest.approx(orbit.pitch, abs=1e-9)
    assert back.distance == pytest.approx(orbit.distance, abs=1e-9)


def test_orbit_signs_follow_the_documented_mapping():
    # the camera moved to the viewer's right (+x): the same view as the head turned to the subject's right (yaw < 0)
    right = orbit_from_camera(np.array([math.sin(0.3), -math.cos(0.3), 0.0]), np.zeros(3))
    assert right.yaw == pytest.approx(-math.degrees(0.3))
    # the camera above the head looks down on it: the head nods down (pitch < 0)
    above = orbit_from_camera(np.array([0.0, -math.cos(0.2), math.sin(0.2)]), np.zeros(3))
    assert above.pitch == pytest.approx(-math.degrees(0.2)) and above.yaw == pytest.approx(0.0)


def test_orbit_refuses_unusable_cameras_and_clamps_the_zoom():
    assert orbit_from_camera(np.array([np.nan, -1.0, 0.0]), np.zeros(3)) is None
    assert orbit_from_camera(np.array([np.inf, -1.0, 0.0]), np.zeros(3)) is None
    assert orbit_from_camera(np.zeros(3), np.zeros(3)) is None
    assert orbit_from_camera(np.array([0.0, -100.0, 0.0]), np.zeros(3), distance_range=(0.5, 3.0)).distance == 3.0
    assert orbit_from_camera(np.array([0.0, -0.01, 0.0]), np.zeros(3), distance_range=(0.5, 3.0)).distance == 0.5


@pytest.mark.parametrize("aspect", [16 / 9, 1.0, 0.5, 1.19])
def test_compose_pads_to_the_viewport_shape_without_stretching(aspect):
    render = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    picture = compose_view(render, 64, aspect)
    height, width = picture.shape[:2]
    assert width / height == pytest.approx(aspect, rel=0.02)
    top, left = (height - 64) // 2, (width - 64) // 2
    np.testing.assert_array_equal(picture[top:top + 64, left:left + 64], render)
    assert tuple(picture[0, 0]) == BACKDROP_RGB or (top == 0 and left == 0)


def test_compose_puts_the_photo_beside_the_render():
    render = np.zeros((32, 32, 3), np.uint8)
    truth = np.full((128, 128, 3), 200, np.uint8)
    picture = compose_view(render, 64, 2.0, truth=truth, labels=("render", "ground truth"))
    assert picture.shape == (64, 128, 3)
    assert picture[40:, 70:].mean() == pytest.approx(200, abs=1)  # below the caption
    assert picture[40:, :60].max() == 0


def test_compose_survives_a_nonsense_aspect():
    for aspect in (0.0, -1.0, float("nan"), float("inf"), 1e9):
        picture = compose_view(np.zeros((8, 8, 3), np.uint8), 8, aspect)
        assert 0.19 <= picture.shape[1] / picture.shape[0] <= 5.01


# --- with a trained avatar -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def avatar(viewer_avatar: Path):
    from avatar4d.avatar import load_avatar

    return load_avatar(viewer_avatar)


@pytest.mark.slow
def test_the_orbit_turns_the_face_the_documented_way_on_the_picture(avatar):
    """Drag right (orbit yaw > 0): the nose moves to the picture's right; camera below (pitch > 0): it moves up;
    zoom in (distance < 1): the face grows. Measured on projected landmarks, whatever the sliders' sign conventions."""
    from avatar4d.tracking import landmarks as lm
    from avatar4d.viewer.view_state import rest_state, state_pose

    camera = avatar.camera_at(64)

    def project(orbit: Orbit) -> np.ndarray:
        pose = state_pose(avatar, dataclasses.replace(rest_state(avatar), orbit=orbit))
        points = avatar.face_model.template[[lm.NOSE_TIP, lm.FOREHEAD, lm.CHIN]]
        return camera.project(points @ pose[:3, :3].T + pose[:3, 3])

    rest = project(Orbit())
    assert project(Orbit(yaw=20))[0, 0] > rest[0, 0] + 1
    assert project(Orbit(pitch=20))[0, 1] < rest[0, 1] - 1
    height = lambda points: points[2, 1] - points[1, 1]  # chin below forehead, pixels
    assert height(project(Orbit(distance=0.95))) > height(rest) > height(project(Orbit(distance=2.0)))


@pytest.mark.slow
def test_a_replayed_frame_has_its_tracked_pose_and_code(avatar):
    from avatar4d.viewer.view_state import frame_state, resolve_state, state_pose

    for index in (0, avatar.frames.heldout[0], len(avatar.frames.codes) - 1):
        state = frame_state(avatar, index)
        np.testing.assert_allclose(state_pose(avatar, state), avatar.frames.camera_from_head[index], atol=1e-9)
        np.testing.assert_allclose(resolve_state(avatar, state).code, avatar.frames.codes[index], atol=1e-5)


@pytest.mark.slow
def test_the_saved_state_renders_the_same_picture_with_avatar4d_render(avatar, tmp_path):
    """The JSON the Save button writes, read the way `avatar4d render --state` reads it, gives the viewer's picture."""
    from avatar4d.atomic import write_json_atomic
    from avatar4d.images import to_uint8
    from avatar4d.novel_views import load_edit_state, render_frame
    from avatar4d.viewer.view_state import resolve_state, rest_state, state_json, state_pose, state_rotation

    state = rest_state(avatar).with_control(0, float(avatar.face_model.controls.range_max[0])).with_component(3, 0.7)
    state = dataclasses.replace(state, rotation=HeadRotation(12.0, -4.0, 3.0), orbit=Orbit(yaw=-5.0, pitch=2.0))
    path = tmp_path / "state.json"
    write_json_atomic(path, state_json(avatar, state))
    expression, rotation = load_edit_state(path)
    assert rotation == state_rotation(avatar, state)
    code = avatar.resolve_expression(expression).code
    np.testing.assert_allclose(code, resolve_state(avatar, state).code, atol=1e-9)
    cli_picture = render_frame(avatar, code, rotation, 48)
    viewer_picture = to_uint8(avatar.render_image(state_pose(avatar, state), resolve_state(avatar, state).code, 48))
    assert np.abs(cli_picture.astype(int) - viewer_picture.astype(int)).max() <= 1


@pytest.mark.slow
def test_a_replayed_frame_edited_by_a_slider_is_saved_exactly(avatar, tmp_path):
    """After a frame replay the sliders edit that frame's face; the saved JSON carries the whole resulting code."""
    from avatar4d.atomic import write_json_atomic
    from avatar4d.novel_views import load_edit_state
    from avatar4d.viewer.view_state import frame_state, resolve_state, state_json

    index = avatar.frames.heldout[0]
    state = frame_state(avatar, index)
    smile = float(avatar.face_model.controls.range_min[1])
    edited = state.with_control(1, smile)
    expected = np.clip(avatar.frames.codes[index] + avatar.face_model.controls.weights[:, 1] * (smile - state.controls[1]),
                       avatar.face_model.code_min, avatar.face_model.code_max)
    np.testing.assert_allclose(resolve_state(avatar, edited).code, expected, atol=1e-5)
    path = tmp_path / "frame.json"
    write_json_atomic(path, state_json(avatar, edited))
    expression, _ = load_edit_state(path)
    np.testing.assert_allclose(avatar.resolve_expression(expression).code, resolve_state(avatar, edited).code,
                               atol=1e-9)


@pytest.mark.slow
def test_a_cancelled_render_stops_at_the_next_chunk_and_an_uncancelled_one_is_the_whole_picture(avatar):
    from avatar4d.render.renderer import RenderCancelled

    pose = avatar.frames.mean_camera_from_head
    code = avatar.frames.codes[5]
    size = 160  # one ray per pixel: more rays than one chunk of the preview preset
    chunks = -(-size * size // avatar.config.renderer.chunk_rays)
    asked = []
    whole = avatar.render_image(pose, code, size, cancelled=lambda: asked.append(1) and False, direct=True)
    assert len(asked) == chunks
    torch.testing.assert_close(whole, avatar.render_image(pose, code, size, direct=True), rtol=0, atol=0)
    assert chunks > 1
    asked.clear()
    with pytest.raises(RenderCancelled):
        avatar.render_image(pose, code, size, cancelled=lambda: asked.append(1) or len(asked) > 1, direct=True)
    assert len(asked) == 2, "stops at the first chunk boundary after being told"
    asked.clear()  # through the upsampler: its rays (a quarter of the side) are asked about in the same way
    with pytest.raises(RenderCancelled):
        avatar.render_image(pose, code, size, cancelled=lambda: asked.append(1) or True)
    assert len(asked) == 1
