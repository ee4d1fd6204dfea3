"""``prepare`` on every kind of bad input: each unusable file is refused with a specific error and leaves no dataset
(nor a ``.partial`` folder) behind; awkward but usable videos (two faces, a face that leaves, a phone's rotated
recording, 4K) give a correct dataset; a full disk and an interrupted run leave nothing half-written."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import avatar4d.preparation.passes as passes_module
from avatar4d.atomic import partial_path
from avatar4d.cli import main
from avatar4d.dataset.layout import load_dataset
from avatar4d.errors import InputVideoError, OutputError
from avatar4d.preparation.config import PrepareConfig
from avatar4d.preparation.prepare import prepare
from avatar4d.tracking.landmarks import FaceMeshTracker
from avatar4d.video import Mp4Writer, iter_frames

FAST = PrepareConfig(size=256, overlay=False)


def write_clip(path: Path, images, fps: float = 30.0) -> Path:
    with Mp4Writer(path, fps, crf=18) as writer:
        for image in images:
            writer.write(image)
    return path


def assert_nothing_left(out: Path, *inputs: Path) -> None:
    """No dataset, no ``.partial`` folder, and no stray temporary file beside them."""
    assert not out.exists(), f"{out} was left behind"
    assert not partial_path(out).exists(), f"{partial_path(out)} was left behind"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in inputs)


def source_pixels(dataset) -> np.ndarray:
    """(F, L, 2) landmarks in pixels of the source video (undoing the crop and resize)."""
    crop = dataset.manifest["crop"]
    scale = crop["size"] / crop["side"]
    return dataset.tracking.landmarks[..., :2] / scale + np.array([crop["x0"], crop["y0"]])


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, face_frames) -> Path:
    """The first 32 frames of the sample clip (just above the 30-frame minimum)."""
    return write_clip(tmp_path_factory.mktemp("short") / "short.mp4", face_frames[:32])


@pytest.fixture(scope="module")
def reference(prepared_dataset):
    return load_dataset(prepared_dataset)


# --- files that are not usable videos -----------------------------------------------------------------------------

def test_text_file_named_mp4(tmp_path):
    video = tmp_path / "holiday.mp4"
    video.write_text("this is a text file, not a video\n" * 50)
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match="cannot be read as a video"):
        prepare(video, out, FAST)
    assert_nothing_left(out, video)


def test_empty_file(tmp_path):
    video = tmp_path / "empty.mp4"
    video.write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match=r"is empty \(0 bytes\)"):
        prepare(video, out, FAST)
    assert_nothing_left(out, video)


def test_mp4_truncated_before_its_index(tmp_path, face_video):
    data = face_video.read_bytes()
    video = tmp_path / "cut.mp4"
    video.write_bytes(data[: len(data) // 2])  # the index ("moov") is at the end of this file, as phones write it
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match="cannot be read as a video.*truncated"):
        prepare(video, out, FAST)
    assert_nothing_left(out, video)


def test_faststart_mp4_truncated_after_its_index(tmp_path, face_video):
    whole = tmp_path / "whole.mp4"
    with av.open(str(face_video)) as source, av.open(str(whole), "w", options={"movflags": "faststart"}) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = whole.read_bytes()
    whole.unlink()
    video = tmp_path / "cut.mp4"
    video.write_bytes(data[: len(data) // 2])
    # the index is intact, so the file opens and declares 72 frames; decoding stops after about a third of them
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match="is truncated: its header declares 72 frames but only [0-9]+ could"):
        prepare(video, out, FAST)
    assert_nothing_left(out, video)


def test_still_image(tmp_path, face_frames):
    image = tmp_path / "portrait.jpg"
    cv2.imwrite(str(image), cv2.cvtColor(face_frames[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match="is a still image"):
        prepare(image, out, FAST)
    assert_nothing_left(out, image)


def test_video_without_a_face(tmp_path, no_face_video):
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match="no face found in .*no_face.mp4"):
        prepare(no_face_video, out, PrepareConfig(size=256, overlay=False, every=2))
    assert_nothing_left(out)


def test_too_short(tmp_path, face_frames):
    video = write_clip(tmp_path / "short.mp4", face_frames[:20])
    out = tmp_path / "out"
    with pytest.raises(InputVideoError, match="too short: 20 frames .* at least 30 are needed"):
        prepare(video, out, FAST)
    assert_nothing_left(out, video)


def test_too_few_frames_with_a_face(tmp_path, face_then_no_face_video):
    out = tmp_path / "out"
    config = PrepareConfig(size=256, overlay=False, every=2, min_frames=40)
    message = r"only 36 frames .* have a usable face \(dropped: \d+ x no face found.*\); at least 40 are needed"
    with pytest.raises(InputVideoError, match=message):
        prepare(face_then_no_face_video, out, config)
    assert_nothing_left(out)


@pytest.fixture(scope="module")
def clip_4k(tmp_path_factory, face_frames) -> Path:
    """35 real frames upscaled to 3840x2160."""
    video = tmp_path_factory.mktemp("4k") / "4k.mp4"
    with Mp4Writer(video, 30, crf=23, preset="ultrafast") as writer:
        for image in face_frames[:35]:
            writer.write(cv2.resize(image, (3840, 2160), interpolation=cv2.INTER_LINEAR))
    return video


def test_frames_larger_than_the_limit_are_refused(tmp_path, clip_4k):
    out = tmp_path / "out"
    config = PrepareConfig(size=256, overlay=False, max_source_pixels=3840 * 2160 - 1)
    with pytest.raises(InputVideoError, match="is 3840x2160, larger than the 8-megapixel limit; scale it down"):
        prepare(clip_4k, out, config)
    assert_nothing_left(out)


# --- awkward but usable videos ------------------------------------------------------------------------------------

def test_two_faces_tracks_the_largest_in_every_frame(tmp_path, face_frames, driver_video, reference):
    """The subject, with a smaller second person (another real clip at 35%) pasted in the top-left corner, inside the
    head crop."""
    others = [f.image for f in iter_frames(driver_video, max_frames=36)]
    width, height = 224, 126
    images = []
    for subject, other in zip(face_frames[:36], others):
        image = subject.copy()
        image[:height, :width] = cv2.resize(other, (width, height), interpolation=cv2.INTER_AREA)
        images.append(image)
    video = write_clip(tmp_path / "two.mp4", images)
    out = tmp_path / "out"
    prepare(video, out, FAST)
    dataset = load_dataset(out)
    manifest = dataset.manifest
    assert manifest["faces"]["frames_with_several_faces"] > 0
    assert manifest["faces"]["policy"].startswith("the largest face is tracked")
    crop = manifest["crop"]
    assert crop["x0"] < width  # the second face is partly inside the crop: the tracker had to ignore it
    assert dataset.tracking.num_frames == 36 and manifest["dropped"] == []
    # the landmarks are the subject's: the same as on the clip without the second face, within a few pixels
    got = source_pixels(dataset)
    want = source_pixels(reference)[:36]
    distance = np.linalg.norm(got - want, axis=-1)
    # measured 0.26 px on average, 0.42 px on the worst frame (source pixels); the other face is ~180 px away
    assert distance.mean() < 2.0 and distance.mean(axis=1).max() < 4.0


def test_face_that_leaves_the_frame_is_dropped_with_a_reason(tmp_path, face_then_no_face_video):
    out = tmp_path / "out"
    prepare(face_then_no_face_video, out, FAST)
    dataset = load_dataset(out)
    manifest = dataset.manifest
    kept = dataset.tracking.source_frames
    dropped = [entry["source_frame"] for entry in manifest["dropped"]]
    assert len(kept) >= 30 and len(dropped) >= 30
    assert manifest["frames"]["kept"] == len(kept) and manifest["frames"]["dropped"] == len(dropped)
    assert not set(kept) & set(dropped)
    assert sorted(set(kept) | set(dropped)) == list(range(len(kept) + len(dropped)))  # every decoded frame accounted
    reasons = [entry["reason"] for entry in manifest["dropped"]]
    assert reasons.count("no face found") >= 30
    # once the face has gone, Face Mesh may fire on the empty room; such landmarks are far from the tracked face
    # and are dropped too (measured: 1 frame of 97)
    assert set(reasons) <= {"no face found", "the landmarks are on another face than the one being tracked"}
    assert all(dataset.layout.frame(i).exists() for i in range(len(kept)))
    assert not dataset.layout.frame(len(kept)).exists()
    assert dataset.tracking.reprojection_error_px.mean() < 1.5


def test_rotated_phone_video_is_tracked_upright(tmp_path, rotated_face_video, reference):
    out = tmp_path / "out"
    prepare(rotated_face_video, out, FAST)
    dataset = load_dataset(out)
    source = dataset.manifest["source"]
    assert (source["width"], source["height"], source["rotation_deg"]) == (640, 360, 270)
    assert dataset.tracking.num_frames == 72
    distance = np.linalg.norm(source_pixels(dataset) - source_pixels(reference), axis=-1)
    # measured 0.12 px on average, 0.21 px on the worst frame: only re-encoding noise separates the two clips
    assert distance.mean() < 2.0 and distance.mean(axis=1).max() < 4.0


def test_4k_video(tmp_path, clip_4k, reference):
    out = tmp_path / "out"
    prepare(clip_4k, out, FAST)
    dataset = load_dataset(out)
    source, crop = dataset.manifest["source"], dataset.manifest["crop"]
    assert (source["width"], source["height"]) == (3840, 2160)
    assert crop["side"] <= 2160 and crop["x0"] + crop["side"] <= 3840
    assert dataset.tracking.num_frames == 35
    assert dataset.load_frame(0).shape == (256, 256, 3)
    # the same face as in the 640x360 original, in its pixels (4K is 6x larger)
    distance = np.linalg.norm(source_pixels(dataset) / 6.0 - source_pixels(reference)[:35], axis=-1)
    assert distance.mean() < 2.0  # measured 0.10
    assert dataset.tracking.reprojection_error_px.mean() < 1.5


# --- full disk and interruptions ----------------------------------------------------------------------------------

def imwrite_fails_for(monkeypatch, name: str) -> None:
    """OpenCV's imwrite returns False when the disk is full (checked by writing to /dev/full); do that for one file."""
    real = cv2.imwrite

    def imwrite(path, *args, **kwargs):
        if str(path).endswith(name):
            return False
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cv2, "imwrite", imwrite)


def fsync_fails_for(monkeypatch, name: str) -> None:
    """Raise ENOSPC when a file whose name contains ``name`` is synced, as a full disk reports delayed writes."""
    real = os.fsync

    def fsync(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("fail, name", [
    (imwrite_fails_for, "frames/000010.jpg"),
    (imwrite_fails_for, "masks/face/000003.png"),
    (imwrite_fails_for, "background.png"),
    (fsync_fails_for, "tracking.safetensors"),
    (fsync_fails_for, "manifest.json"),
])
def test_full_disk_gives_an_output_error_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch, short_clip,
                                                                            fail, name):
    fail(monkeypatch, name)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=f"the disk is full while writing .*{name}"):
        prepare(short_clip, out, FAST)
    assert_nothing_left(out)


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch, short_clip):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(passes_module, "fit_face_model", interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare(short_clip, out, FAST)
    assert_nothing_left(out)


def test_interrupted_tracking_leaves_an_earlier_dataset_untouched(tmp_path, monkeypatch, short_clip):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an earlier result under the same name
    real_track = FaceMeshTracker.track
    calls = []

    def track(self, image):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_track(self, image)

    monkeypatch.setattr(FaceMeshTracker, "track", track)
    with pytest.raises(KeyboardInterrupt):
        prepare(short_clip, out, FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["manifest.json"] and (out / "manifest.json").read_text() == "{}"


def test_rerun_replaces_an_earlier_dataset_and_a_killed_runs_partial_folder(tmp_path, short_clip):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    partial_path(out).mkdir()
    (partial_path(out) / "frames").mkdir()  # what a killed run leaves
    prepare(short_clip, out, FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert not (out / "stale.txt").exists() and load_dataset(out).tracking.num_frames == 32


# --- the command line -----------------------------------------------------------------------------------------------

def test_cli_reports_a_missing_video_on_stderr(tmp_path, capsys):
    out = tmp_path / "X"
    code = main(["prepare", str(tmp_path / "notavideo"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == InputVideoError.exit_code == 2
    assert "avatar4d: error:" in captured.err and "notavideo: no such file" in captured.err
    assert captured.out == ""
    assert_nothing_left(out)


def test_cli_reports_a_file_that_is_not_a_video(tmp_path, capsys):
    video = tmp_path / "notavideo"
    video.write_text("plain text")
    out = tmp_path / "X"
    code = main(["prepare", str(video), "--out", str(out)])
    assert code == 2
    assert "cannot be read as a video" in capsys.readouterr().err
    assert_nothing_left(out, video)


def test_cli_interrupted_exits_130_and_leaves_nothing(tmp_path, monkeypatch, capsys, short_clip):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(passes_module, "fit_face_model", interrupt)
    out = tmp_path / "X"
    assert main(["prepare", str(short_clip), "--out", str(out), "--size", "256", "--no-overlay"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert_nothing_left(out)
