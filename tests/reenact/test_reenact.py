"""``drive`` and ``reenact`` (reenact/reenact.py) on real clips: an avatar driven by its own training video gives back
its training frames (better than the same frames in a shuffled order), another person's clip becomes a side-by-side
video with that clip's audio, stills, frames where the driver's face is lost are held, and bad input is refused with
the right error and without touching existing files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from files import KNOWN, read_png

from avatar4d.avatar import load_avatar
from avatar4d.dataset.layout import load_dataset
from avatar4d.errors import AvatarError, ControlError, InputVideoError, OutputError
from avatar4d.evaluation.metrics import psnr
from avatar4d.images import to_uint8
from avatar4d.reenact.reenact import drive, reenact
from avatar4d.reenact.transfer import clamp_to_range, match_spread, transfer_expressions
from avatar4d.video import iter_frames, probe_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def rendered(avatar, camera_from_head: np.ndarray, code: np.ndarray, size: int) -> np.ndarray:
    return to_uint8(avatar.render(camera_from_head, code, size=size).rgb.reshape(size, size, 3).cpu())


# --- self-reenactment -----------------------------------------------------------------------------------------------


def mean_psnr(avatar, poses: np.ndarray, codes: np.ndarray, targets: list[torch.Tensor]) -> float:
    size = avatar.native_size
    scores = [psnr(avatar.render(pose, code, size=size).rgb.reshape(size, size, 3).float(), target)
              for pose, code, target in zip(poses, codes, targets)]
    return float(np.mean(scores))


def test_driving_an_avatar_with_its_own_video_gives_back_its_frames_better_than_a_shuffled_drive(
        trained_avatar: Path, face_video: Path, prepared_dataset: Path):
    avatar, track, result = drive(trained_avatar, face_video)
    assert not result.held.any()
    dataset = load_dataset(prepared_dataset)
    size = avatar.native_size  # what reenact writes: the video's resolution, through the upsampler
    position = {int(source): p for p, source in enumerate(result.source_frames)}
    rows = np.array([position[int(source)] for source in avatar.frames.source_frames])
    codes, poses = result.codes[rows], result.camera_from_head[rows]
    targets = [torch.from_numpy(cv2.resize(dataset.load_frame(i), (size, size), interpolation=cv2.INTER_AREA)
                                .astype(np.float32) / 255.0) for i in range(len(rows))]
    shuffle = np.random.default_rng(0).permutation(len(rows))
    shuffle = np.where(shuffle == np.arange(len(rows)), np.roll(shuffle, 1), shuffle)  # no frame keeps its place
    assert (shuffle != np.arange(len(rows))).all()
    own = mean_psnr(avatar, poses, codes, targets)
    shuffled = mean_psnr(avatar, poses[shuffle], codes[shuffle], targets)
    tracked = mean_psnr(avatar, avatar.frames.camera_from_head, avatar.frames.codes, targets)
    numbers = f"own order {own:.2f} dB, shuffled {shuffled:.2f} dB, the dataset's own tracking {tracked:.2f} dB"
    assert own > shuffled + 2.0, numbers
    # re-tracking the clip and transferring it loses little against the tracking the avatar was trained with
    assert own > tracked - 1.0, numbers


# --- another person's clip ------------------------------------------------------------------------------------------


def test_another_persons_residuals_are_kept_within_the_avatars_spread_and_range_unless_extrapolating(
        trained_avatar: Path, driver_video: Path, capsys):
    capsys.readouterr()
    avatar, track, kept = drive(trained_avatar, driver_video, max_frames=60, transfer="residuals")
    model = avatar.face_model
    own = avatar.frames.codes[avatar.frames.train_indices].std(0)
    assert (kept.codes.std(0) <= own * (1 + 1e-6)).all()
    assert (kept.codes >= model.code_min - 1e-12).all() and (kept.codes <= model.code_max + 1e-12).all()
    _, _, free = drive(trained_avatar, driver_video, max_frames=60, extrapolate=True, transfer="residuals")
    raw = transfer_expressions(track.model, track.fit.codes, model)
    np.testing.assert_allclose(free.codes, raw, atol=1e-12)
    outside = (raw < model.code_min) | (raw > model.code_max)
    assert outside.any(), "the other person's raw codes leave the range the avatar saw"
    note = capsys.readouterr().err
    assert "clamped to the range seen in training" in note and "--extrapolate" in note
    np.testing.assert_array_equal(free.camera_from_head, kept.camera_from_head)


def test_another_persons_controls_are_their_changes_from_neutral_kept_to_what_the_avatars_video_showed(
        trained_avatar: Path, driver_video: Path, capsys):
    """The default transfer: the codes are the avatar's own regression of the driver's controls (changes from the
    driver's neutral face laid on the avatar's), kept within the controls' range in the avatar's frames unless
    extrapolating; what the avatar cannot follow is said once, not per frame."""
    from avatar4d.reenact.transfer import fit_control_regression, retarget_controls, smooth_controls
    from avatar4d.tracking.coverage import estimate_neutral
    from avatar4d.tracking.head_pose import contiguous_segments

    capsys.readouterr()
    avatar, track, kept = drive(trained_avatar, driver_video, max_frames=60)
    notes = capsys.readouterr().err
    for sentence in kept.cannot_follow:
        assert notes.count(sentence) == 1
    train = avatar.frames.train_indices
    own = avatar.frames.controls[train].astype(np.float64)
    regression = fit_control_regression(own, avatar.frames.codes[train].astype(np.float64))
    driver_map, model_map = track.model.controls, avatar.face_model.controls
    driver_raw = driver_map.raw(track.fit.controls)
    runs = contiguous_segments(track.source_frames[track.tracked])
    smoothed = smooth_controls(driver_raw, driver_map.scale, runs, track.located.info.fps)
    controls = retarget_controls(smoothed, estimate_neutral(driver_raw).raw,
                                 estimate_neutral(model_map.raw(own)).raw, model_map)
    tracked = track.tracked
    np.testing.assert_allclose(kept.codes[tracked], regression(np.clip(controls, own.min(0), own.max(0))), atol=1e-9)
    _, _, free = drive(trained_avatar, driver_video, max_frames=60, extrapolate=True)
    np.testing.assert_allclose(free.codes[tracked], regression(controls), atol=1e-9)
    assert ((controls < own.min(0)) | (controls > own.max(0))).any(), "the other person goes beyond the avatar's range"
    with pytest.raises(ControlError, match="unknown transfer 'pca'"):
        drive(trained_avatar, driver_video, max_frames=20, transfer="pca")


def test_reenactment_by_another_person_is_a_side_by_side_video_with_their_audio(trained_avatar: Path,
                                                                                 driver_video: Path, tmp_path: Path):
    out = tmp_path / "reenactment.mp4"
    result = reenact(trained_avatar, driver_video, out, max_frames=30, size=48)
    assert result.output == out
    info = probe_video(out)
    video = [frame.image for frame in iter_frames(out)]
    assert (info.width, info.height) == (96, 48) and info.codec == "h264"
    assert len(video) == 30 and info.frame_count == 30 and len(result.codes) == 30
    np.testing.assert_array_equal(result.source_frames, np.arange(30))
    assert info.has_audio and probe_video(driver_video).has_audio
    assert info.fps == pytest.approx(probe_video(driver_video).fps, rel=1e-3)
    avatar = load_avatar(trained_avatar)
    expected = [rendered(avatar, pose, code, 48).astype(float)
                for pose, code in zip(result.camera_from_head, result.codes)]
    for position in (0, 15, 29):
        right = video[position][:, 48:].astype(float)
        distances = [np.abs(right - image).mean() for image in expected]
        # H.264 at 48 px (yuv420p) is off by 4 to 7 (0..255) on average; the nearest render is this frame's own
        assert distances[position] < 8.0 and int(np.argmin(distances)) == position, (position, distances)
        assert np.abs(video[position][:, :48].astype(float) - right).mean() > 10.0, "the left panel is the driver"
    assert np.ptp(result.codes, axis=0).max() > 0.5, "the driver's expression changes over the clip"


def test_one_frame_of_a_reenactment_is_a_png_of_the_driver_beside_the_avatar(trained_avatar: Path,
                                                                             driver_video: Path, tmp_path: Path):
    out = tmp_path / "still.png"
    result = reenact(trained_avatar, driver_video, out, frame=7, max_frames=12)
    avatar = load_avatar(trained_avatar)
    size = avatar.native_size  # the default output size: the video's own
    image = read_png(out)
    assert image.shape == (size, 2 * size, 3) and result.output == out
    np.testing.assert_array_equal(image[:, size:], rendered(avatar, result.camera_from_head[7], result.codes[7], size))
    assert np.abs(image[:, :size].astype(float) - image[:, size:].astype(float)).mean() > 10.0


def test_a_driver_too_short_for_a_neutral_face_falls_back_to_its_median_and_says_so(trained_avatar: Path,
                                                                                      driver_video: Path, capsys):
    capsys.readouterr()
    _, track, result = drive(trained_avatar, driver_video, max_frames=15)
    assert len(result.codes) == 15
    assert f"driver: {int(track.tracked.sum())} tracked frames are too few to find a neutral face" in \
        capsys.readouterr().err


@pytest.fixture(scope="module")
def large_face_video(tmp_path_factory: pytest.TempPathFactory, face_frames: list) -> Path:
    """The first 40 frames of the sample clip scaled up three times, to 1920x1080."""
    from avatar4d.video.write import Mp4Writer

    path = tmp_path_factory.mktemp("large") / "large.mp4"
    with Mp4Writer(path, 30.0) as writer:
        for image in face_frames[:40]:
            writer.write(cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_CUBIC))
    return path


@pytest.mark.parametrize("kind", ["rotated", "large"])
def test_a_rotated_phone_driver_or_a_far_larger_one_drives_the_avatar_as_the_plain_clip_does(
        trained_avatar: Path, face_video: Path, rotated_face_video: Path, large_face_video: Path, kind: str):
    """The same frames stored turned (with a display matrix) or at three times the size: every frame is tracked, and
    the avatar's expression follows the plain clip's closely."""
    other = rotated_face_video if kind == "rotated" else large_face_video
    _, _, plain = drive(trained_avatar, face_video, max_frames=40)
    _, track, driven = drive(trained_avatar, other, max_frames=40)
    assert track.tracked.all() and len(driven.codes) == 40
    for k in range(3):  # the leading components (mouth and eyes) over time
        assert np.corrcoef(plain.codes[:, k], driven.codes[:, k])[0, 1] > 0.9, k


# --- a driver whose face is lost ------------------------------------------------------------------------------------


def test_frames_where_the_drivers_face_is_lost_hold_the_last_good_expression_and_pose(
        trained_avatar: Path, face_then_no_face_video: Path, tmp_path: Path, capsys):
    from avatar4d.tracking.landmarks import FaceDetector

    capsys.readouterr()
    avatar, track, result = drive(trained_avatar, face_then_no_face_video, transfer="residuals")
    held = result.held
    np.testing.assert_array_equal(held, ~track.tracked)
    assert held.any() and (~held).any(), "the clip has a face for part of its length"
    from avatar4d.reenact.reenact import longest_run

    gap = max(len(run) for run in "".join("x" if h else "." for h in held).split(".") if run)
    assert longest_run(held) == gap
    assert (f"the driver's face was lost in {int(held.sum())} of {len(held)} frames (the longest gap: {gap} frames)"
            in capsys.readouterr().err)
    model = avatar.face_model
    good_codes = match_spread(transfer_expressions(track.model, track.fit.codes, model),
                              avatar.frames.codes[avatar.frames.train_indices].std(0))
    good_codes, _ = clamp_to_range(good_codes, model.code_min, model.code_max)
    np.testing.assert_allclose(result.codes[~held], good_codes, atol=1e-12)
    last = 0
    for i in range(len(held)):
        if not held[i]:
            last = i
        else:
            np.testing.assert_array_equal(result.codes[i], result.codes[last])
            np.testing.assert_array_equal(result.camera_from_head[i], result.camera_from_head[last])
    # an independent look (face detection, not the landmark tracker): where it sees no face, the frame is held
    with FaceDetector() as detector:
        for frame in iter_frames(face_then_no_face_video, every=6):
            if not detector.detect(frame.image):
                assert held[frame.index], frame.index

    # the still of a held frame shows the avatar as in the last good frame
    first_held = int(np.argmax(held))
    out = tmp_path / "held.png"
    reenact(trained_avatar, face_then_no_face_video, out, frame=first_held + 5, transfer="residuals")
    size = avatar.native_size
    np.testing.assert_array_equal(read_png(out)[:, size:], rendered(avatar, result.camera_from_head[first_held - 1],
                                                                     result.codes[first_held - 1], size))


# --- refusals: the right error, and nothing overwritten -------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_avatars(trained_avatar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    incomplete = root / "incomplete"
    shutil.copytree(trained_avatar, incomplete)
    (incomplete / "model.safetensors").unlink()
    other_version = root / "other_version"
    shutil.copytree(trained_avatar, other_version)
    config = json.loads((other_version / "config.json").read_text())
    config["version"] = 99
    (other_version / "config.json").write_text(json.dumps(config))
    return {"incomplete": incomplete, "other_version": other_version, "missing": root / "missing"}


@pytest.mark.parametrize("which, message", [
    ("incomplete", "missing model.safetensors"),
    ("other_version", "version 99"),
    ("missing", "not an avatar folder"),
])
@pytest.mark.parametrize("name, frame", [("reenactment.mp4", None), ("still.png", 3)])
def test_a_broken_avatar_raises_avatar_error_and_leaves_the_output_alone(broken_avatars, driver_video: Path,
                                                                         tmp_path: Path, which: str, message: str,
                                                                         name: str, frame):
    out = tmp_path / name
    out.write_bytes(KNOWN)
    with pytest.raises(AvatarError, match=message):
        reenact(broken_avatars[which], driver_video, out, frame=frame, max_frames=12)
    assert out.read_bytes() == KNOWN
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_driver_with_no_face_raises_input_video_error_and_leaves_the_output_alone(trained_avatar: Path,
                                                                                     no_face_video: Path,
                                                                                     tmp_path: Path):
    out = tmp_path / "reenactment.mp4"
    out.write_bytes(KNOWN)
    # face detection sees something face-like in 1 of its 48 sampled frames; the landmark tracker in none
    with pytest.raises(InputVideoError, match=r"no face found|face is found in only 0 of"):
        reenact(trained_avatar, no_face_video, out)
    assert out.read_bytes() == KNOWN
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize("name, kwargs, error, message", [
    ("reenactment.png", {}, OutputError, r"written as \.mp4"),
    ("reenactment.avi", {}, OutputError, r"written as \.mp4"),
    ("still.mp4", {"frame": 3}, OutputError, r"written as \.png"),
    ("still.png", {"frame": 12}, ControlError, "outside the driver's 12 frames"),
    ("still.png", {"frame": -1}, ControlError, "outside"),
    ("reenactment.mp4", {"size": -4}, ControlError, "positive number of pixels"),
])
def test_bad_outputs_and_values_raise_and_leave_the_output_alone(trained_avatar: Path, driver_video: Path,
                                                                 tmp_path: Path, name: str, kwargs: dict, error,
                                                                 message: str):
    out = tmp_path / name
    out.write_bytes(KNOWN)
    with pytest.raises(error, match=message):
        reenact(trained_avatar, driver_video, out, max_frames=12, **kwargs)
    assert out.read_bytes() == KNOWN
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_an_output_in_a_missing_folder_raises_output_error(trained_avatar: Path, driver_video: Path, tmp_path: Path):
    with pytest.raises(OutputError, match="does not exist"):
        reenact(trained_avatar, driver_video, tmp_path / "gone" / "reenactment.mp4", max_frames=12)
    assert list(tmp_path.iterdir()) == []
