"""What a user renders from a trained avatar (novel_views.py): the orbit video, expression and pose edits as
stills and clips, clamping to what training saw, the viewer's saved state, and refusals of bad values that leave
existing files alone. Rendered by the real renderer from an avatar briefly trained on the sample clip; every picture
is compared with ``render_frame`` (the avatar rendered directly) or with the mean face."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from files import KNOWN, read_png
from torch_threads import torch_threads

from avatar4d.avatar import load_avatar
from avatar4d.errors import AvatarError, ControlError, OutputError
from avatar4d.geometry.angles import HeadRotation
from avatar4d.novel_views import load_edit_state, render_edit, render_frame, render_orbit
from avatar4d.tracking import landmarks as lm
from avatar4d.tracking.controls import CONTROL_NAMES
from avatar4d.video import iter_frames, probe_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SIZE = 256
"""The avatar's native size, what render writes by default: the prepared clip's, through the upsampler."""
CODEC_TOLERANCE = 5.0
"""Mean absolute difference (0..255) allowed between a frame as rendered and as decoded from the H.264 file (crf 18,
yuv420p: at 64 px the halved colour resolution alone costs 3.4 to 4.0; two turned views differ by 6 to 15)."""


@pytest.fixture(scope="module")
def avatar(trained_avatar: Path):
    avatar = load_avatar(trained_avatar)
    assert avatar.native_size == SIZE
    return avatar


def read_video(path: Path) -> list[np.ndarray]:
    return [frame.image for frame in iter_frames(path)]


def pixel_format(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.pix_fmt


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def mean_face(avatar) -> np.ndarray:
    return render_frame(avatar, avatar.resolve_expression(None).code, HeadRotation(), SIZE)


def projected_box(avatar, landmarks, margin: float) -> tuple[slice, slice]:
    """Pixel rows and columns around template landmarks, projected with the avatar's mean pose."""
    pose = avatar.frames.mean_camera_from_head
    points = avatar.face_model.template[list(landmarks)] @ pose[:3, :3].T + pose[:3, 3]
    pixels = avatar.camera_at(SIZE).project(points)
    (x0, y0), (x1, y1) = pixels.min(0), pixels.max(0)
    pad = margin * SIZE
    clip = lambda v: int(np.clip(round(v), 0, SIZE))
    return slice(clip(y0 - pad), clip(y1 + pad)), slice(clip(x0 - pad), clip(x1 + pad))


# --- orbit ---------------------------------------------------------------------------------------------------------

ORBIT_FRAMES = 16  # yaw over frames 0..7 (peaks at 2 and 6), pitch over 8..15 (peaks at 10 and 14)
ORBIT_YAW, ORBIT_PITCH = 15.0, 8.0


@pytest.fixture(scope="module")
def orbit(avatar, trained_avatar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("orbit") / "orbit.mp4"
    with torch_threads(1):
        returned = render_orbit(trained_avatar, out, frames=ORBIT_FRAMES, yaw_deg=ORBIT_YAW, pitch_deg=ORBIT_PITCH)
    assert returned == out
    return out


def test_orbit_video_has_the_frames_and_size_asked_and_plays_in_browsers(orbit: Path):
    info = probe_video(orbit)
    frames = read_video(orbit)
    assert len(frames) == ORBIT_FRAMES and info.frame_count == ORBIT_FRAMES
    assert (info.width, info.height) == (SIZE, SIZE) and all(f.shape == (SIZE, SIZE, 3) for f in frames)
    assert info.codec == "h264" and pixel_format(orbit) == "yuv420p"
    assert info.fps == pytest.approx(30.0)
    assert not info.has_audio


def test_orbit_frames_are_the_head_turned_left_right_up_and_down(orbit: Path, avatar):
    """Each frame is the avatar rendered at the sweep's angle (nearer to that render than to the others); the two
    frames at the rest pose match each other, the turned ones differ from them."""
    frames = read_video(orbit)
    code = avatar.resolve_expression(None).code
    expected = {0: HeadRotation(), 2: HeadRotation(yaw=ORBIT_YAW), 6: HeadRotation(yaw=-ORBIT_YAW),
                8: HeadRotation(), 10: HeadRotation(pitch=ORBIT_PITCH), 14: HeadRotation(pitch=-ORBIT_PITCH)}
    references = {rotation: render_frame(avatar, code, rotation, SIZE) for rotation in set(expected.values())}
    for index, rotation in expected.items():
        distances = {r: mean_abs(frames[index], image) for r, image in references.items()}
        assert distances[rotation] < CODEC_TOLERANCE, (index, distances)
        assert min(distances, key=distances.get) == rotation, (index, distances)
    rest = mean_abs(frames[0], frames[8])
    for index in (2, 6, 10, 14):
        assert mean_abs(frames[index], frames[0]) > 2 * rest + 2.0, (index, rest)
    assert mean_abs(frames[2], frames[6]) > 2 * rest + 2.0 and mean_abs(frames[10], frames[14]) > 2 * rest + 2.0


def test_orbit_of_an_odd_size_is_rounded_up_to_an_even_one(trained_avatar: Path, tmp_path: Path):
    out = render_orbit(trained_avatar, tmp_path / "odd.mp4", frames=2, size=33)
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (34, 34, 2)


# --- expression edits -----------------------------------------------------------------------------------------------


def test_opening_the_jaw_changes_the_mouth_more_than_the_forehead(avatar, trained_avatar: Path, tmp_path: Path):
    """``jaw_open`` at the largest value the video shows, against the mean face, both at the mean pose."""
    high = float(avatar.face_model.controls.range_max[CONTROL_NAMES.index("jaw_open")])
    rest = read_png(render_edit(trained_avatar, tmp_path / "rest.png"))
    opened = read_png(render_edit(trained_avatar, tmp_path / "jaw.png", expression=f"jaw_open={high!r}"))
    np.testing.assert_array_equal(rest, mean_face(avatar))
    change = np.abs(opened.astype(float) - rest.astype(float)).mean(-1)
    mouth = change[projected_box(avatar, lm.LIPS_OUTER, 0.03)].mean()
    forehead = change[projected_box(avatar, (lm.FOREHEAD, *lm.RIGHT_BROW, *lm.LEFT_BROW), 0.0)].mean()
    assert mouth > 2.0, f"the mouth barely changes: {mouth:.2f} (forehead {forehead:.2f})"
    assert mouth > 2 * forehead, f"mouth {mouth:.2f} vs forehead {forehead:.2f} (mean absolute change, 0..255)"


def test_a_raw_component_edit_sets_that_component_and_changes_the_face(avatar, trained_avatar: Path, tmp_path: Path,
                                                                       capsys):
    model = avatar.face_model
    edit = avatar.resolve_expression("e0=2", extrapolate=True)
    expected = np.zeros(model.num_components)  # the mean face's code is 0; e0 alone is set
    expected[0] = 2.0
    np.testing.assert_allclose(edit.code, expected, atol=1e-12)
    assert edit.components == {0: 2.0} and edit.controls == {} and edit.clamped == []
    image = read_png(render_edit(trained_avatar, tmp_path / "e0.png", expression="e0=2", extrapolate=True))
    np.testing.assert_array_equal(image, render_frame(avatar, expected, HeadRotation(), SIZE))
    assert mean_abs(image, mean_face(avatar)) > 0.2
    # without --extrapolate, e0=2 is kept within the range of e0 seen in training
    capsys.readouterr()
    edit = avatar.resolve_expression("e0=2")
    assert edit.code[0] == pytest.approx(min(2.0, float(model.code_max[0])))
    np.testing.assert_allclose(edit.code[1:], 0.0, atol=1e-12)
    if model.code_max[0] < 2.0:
        assert "e0=2 clamped" in capsys.readouterr().err


def test_a_control_beyond_what_training_saw_is_clamped_with_a_note_unless_extrapolating(avatar, trained_avatar: Path,
                                                                                       tmp_path: Path, capsys):
    model = avatar.face_model
    jaw = CONTROL_NAMES.index("jaw_open")
    high = float(model.controls.range_max[jaw])
    unclamped = model.controls.weights[:, jaw] * (high + 1.0 - model.controls.mean[jaw])  # other controls at mean

    capsys.readouterr()
    clamped = avatar.resolve_expression({"jaw_open": high + 1.0})
    assert clamped.controls == {"jaw_open": high}
    # the control is clamped, not the code it maps to: that stays on the video's own direction for the control
    expected = model.controls.weights[:, jaw] * (high - model.controls.mean[jaw])
    np.testing.assert_allclose(clamped.code, expected, atol=1e-12)
    note = capsys.readouterr().err
    assert f"jaw_open={high + 1.0:g} clamped" in note and "--extrapolate" in note

    free = avatar.resolve_expression({"jaw_open": high + 1.0}, extrapolate=True)
    assert free.controls == {"jaw_open": high + 1.0} and free.clamped == []
    np.testing.assert_allclose(free.code, unclamped, atol=1e-12)
    assert "clamped" not in capsys.readouterr().err

    at_max = read_png(render_edit(trained_avatar, tmp_path / "max.png", expression={"jaw_open": high}))
    beyond = read_png(render_edit(trained_avatar, tmp_path / "beyond.png", expression={"jaw_open": high + 1.0}))
    np.testing.assert_array_equal(beyond, at_max)
    beyond_free = read_png(render_edit(trained_avatar, tmp_path / "free.png", expression={"jaw_open": high + 1.0},
                                       extrapolate=True))
    assert mean_abs(beyond_free, at_max) > 0.05


def test_a_head_turn_beyond_the_training_views_renders_with_a_note(avatar, trained_avatar: Path, tmp_path: Path,
                                                                  capsys):
    capsys.readouterr()
    image = read_png(render_edit(trained_avatar, tmp_path / "turn.png", rotation=HeadRotation(yaw=40.0)))
    assert "yaw +40 deg is beyond the training views" in capsys.readouterr().err
    np.testing.assert_array_equal(image, render_frame(avatar, np.zeros(avatar.face_model.num_components),
                                                      HeadRotation(yaw=40.0), SIZE))


# --- stills and clips -----------------------------------------------------------------------------------------------

EDIT = "jaw_open=0.8,e3=-0.5"
TURN = HeadRotation(yaw=12.0, pitch=-6.0, roll=3.0)


def test_render_edit_to_png_is_the_avatar_rendered_with_the_edit(avatar, trained_avatar: Path, tmp_path: Path):
    out = render_edit(trained_avatar, tmp_path / "still.png", expression=EDIT, rotation=TURN)
    assert out == tmp_path / "still.png"
    image = read_png(out)
    assert image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(image, render_frame(avatar, avatar.resolve_expression(EDIT).code, TURN, SIZE))
    assert read_png(render_edit(trained_avatar, tmp_path / "odd.png", size=31)).shape == (32, 32, 3)


def test_render_edit_to_mp4_goes_from_the_mean_face_to_the_edit_and_back(avatar, trained_avatar: Path,
                                                                        tmp_path: Path):
    frames = 9  # the middle frame (4) is the full edit
    out = render_edit(trained_avatar, tmp_path / "clip.mp4", expression=EDIT, rotation=TURN, frames=frames)
    info = probe_video(out)
    video = read_video(out)
    assert len(video) == frames and info.frame_count == frames
    assert (info.width, info.height, info.codec) == (SIZE, SIZE, "h264") and pixel_format(out) == "yuv420p"
    edited = render_frame(avatar, avatar.resolve_expression(EDIT).code, TURN, SIZE)
    rest = mean_face(avatar)
    assert mean_abs(edited, rest) > 2 * CODEC_TOLERANCE, "the edit must be visible for this check to mean anything"
    for index, image, other in [(0, rest, edited), (frames - 1, rest, edited), (frames // 2, edited, rest)]:
        assert mean_abs(video[index], image) < min(CODEC_TOLERANCE, mean_abs(video[index], other)), index
    # there and back along the same path: frames 1 and 7, 3 and 5 are the same step of the way
    assert mean_abs(video[1], video[7]) < CODEC_TOLERANCE and mean_abs(video[3], video[5]) < CODEC_TOLERANCE
    assert mean_abs(video[1], video[3]) > mean_abs(video[1], video[7])


# --- the viewer's saved state ---------------------------------------------------------------------------------------


def test_a_saved_state_round_trips_and_renders_as_the_same_values_given_directly(avatar, trained_avatar: Path,
                                                                                 tmp_path: Path):
    state = {"expression": {"jaw_open": 0.7, "smile": 0.2, "e5": -1.25}, "pose": {"yaw": 9.5, "pitch": -4.0,
                                                                                  "roll": 1.5}}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state, indent=2))
    expression, rotation = load_edit_state(path)
    assert expression == state["expression"]
    assert rotation == HeadRotation(9.5, -4.0, 1.5)
    from_state = read_png(render_edit(trained_avatar, tmp_path / "state.png", expression=expression,
                                      rotation=rotation))
    direct = read_png(render_edit(trained_avatar, tmp_path / "direct.png", expression="jaw_open=0.7,smile=0.2,e5=-1.25",
                                  rotation=HeadRotation(yaw=9.5, pitch=-4.0, roll=1.5)))
    np.testing.assert_array_equal(from_state, direct)


def test_a_state_without_a_pose_or_expression_means_the_rest_values(tmp_path: Path):
    path = tmp_path / "empty.json"
    path.write_text("{}")
    assert load_edit_state(path) == ({}, HeadRotation())
    path.write_text('{"pose": {"pitch": 3}}')
    assert load_edit_state(path) == ({}, HeadRotation(pitch=3.0))


@pytest.mark.parametrize("text", [
    "not json at all",
    '{"expression": {"jaw_open": 0.5}',  # cut off
    "[1, 2, 3]",
    '{"expression": "jaw_open=0.5"}',
    '{"expression": {"jaw_open": "abc"}}',
    '{"expression": {"jaw_open": null}}',
    '{"pose": null}',
    '{"pose": {"yaw": "left"}}',
    '{"expression": {"jaw_open": NaN}}',
    '{"pose": {"yaw": Infinity}}',
    '{"expression": {"e0": 1e400}}',
])
def test_a_damaged_state_file_raises_control_error_naming_it(tmp_path: Path, text: str):
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(ControlError, match="state.json"):
        load_edit_state(path)


def test_a_missing_state_file_or_a_folder_raises_control_error(tmp_path: Path):
    with pytest.raises(ControlError, match="missing.json"):
        load_edit_state(tmp_path / "missing.json")
    with pytest.raises(ControlError):
        load_edit_state(tmp_path)


# --- refusals: a clear error, and nothing overwritten ---------------------------------------------------------------

@pytest.mark.parametrize("expression, message", [
    ("nose_length=1", "unknown control"),
    ("jaw_open=abc", "not a number"),
    ("jaw_open", "name=value"),
    ("e32=1", "unknown control"),
    ("jaw_open=nan", "finite"),
    ({"smile": math.inf}, "finite"),
    ({"e1": math.nan}, "finite"),
])
@pytest.mark.parametrize("name", ["edit.png", "edit.mp4", "orbit.mp4"])
def test_bad_expressions_raise_control_error_and_leave_the_output_alone(trained_avatar: Path, tmp_path: Path,
                                                                        expression, message: str, name: str):
    out = tmp_path / name
    out.write_bytes(KNOWN)
    render = render_orbit if name.startswith("orbit") else render_edit
    with pytest.raises(ControlError, match=message) as error:
        render(trained_avatar, out, expression=expression, frames=4)
    assert out.read_bytes() == KNOWN
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "no temporary file is left"
    if message == "unknown control":
        for valid in (*CONTROL_NAMES, "e0..e31"):
            assert valid in str(error.value)


@pytest.mark.parametrize("call, error, message", [
    (lambda avatar, out: render_edit(avatar, out.with_suffix(".jpg")), OutputError, r"\.png or \.mp4"),
    (lambda avatar, out: render_orbit(avatar, out.with_suffix(".png")), OutputError, r"\.mp4"),
    (lambda avatar, out: render_edit(avatar, out.parent / "gone" / "edit.png"), OutputError, "does not exist"),
    (lambda avatar, out: render_edit(avatar, out.with_suffix(".mp4"), frames=1), ControlError, "at least 2"),
    (lambda avatar, out: render_orbit(avatar, out.with_suffix(".mp4"), frames=1), ControlError, "at least 2"),
    (lambda avatar, out: render_edit(avatar, out, size=-4), ControlError, "positive number of pixels"),
    (lambda avatar, out: render_orbit(avatar, out.with_suffix(".mp4"), size=0), ControlError, "positive"),
    (lambda avatar, out: render_edit(avatar, out, rotation=HeadRotation(yaw=math.nan)), ControlError, "yaw"),
    (lambda avatar, out: render_edit(avatar, out, rotation=HeadRotation(roll=math.inf)), ControlError, "roll"),
    (lambda avatar, out: render_orbit(avatar, out.with_suffix(".mp4"), pitch_deg=math.inf), ControlError, "pitch"),
    (lambda avatar, out: render_edit(out.parent / "no_avatar", out), AvatarError, "not an avatar folder"),
])
def test_bad_outputs_and_values_raise_and_leave_existing_files_alone(trained_avatar: Path, tmp_path: Path, call,
                                                                     error, message):
    existing = {tmp_path / name: KNOWN + name.encode() for name in ("edit.png", "edit.jpg", "edit.mp4")}
    for path, content in existing.items():
        path.write_bytes(content)
    with pytest.raises(error, match=message):
        call(trained_avatar, tmp_path / "edit.png")
    for path, content in existing.items():
        assert path.read_bytes() == content
    assert sorted(tmp_path.iterdir()) == sorted(existing)
