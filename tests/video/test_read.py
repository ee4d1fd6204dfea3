"""Decoding: frames equal a plain PyAV decode, display rotation is applied, and every unreadable file is refused with a
specific message."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from avatar4d.errors import InputVideoError
from avatar4d.video import iter_frames, probe_video
from avatar4d.video.read import prefetch


def decode_with_pyav(path: Path) -> list[np.ndarray]:
    """The obvious decode: every frame of the first video stream as RGB, no rotation, no threads."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def write_rotated_clip(path: Path, images: list[np.ndarray], k: int, display_rotation_deg: int) -> None:
    """Store ``np.rot90(image, k)`` and a display matrix that turns it back, as a phone stores a turned recording."""
    with av.open(str(path), mode="w") as container:
        stored = np.rot90(images[0], k=k)
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = stored.shape[1], stored.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        stream.set_display_rotation(display_rotation_deg)
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(image, k=k)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def remux(source: Path, target: Path, kind: str, options: dict[str, str] | None = None) -> None:
    """Copy the packets of one stream type ("video" or "audio") into a new mp4, without re-encoding."""
    with av.open(str(source)) as inp, av.open(str(target), mode="w", options=options or {}) as out:
        stream_in = getattr(inp.streams, kind)[0]
        stream_out = out.add_stream_from_template(stream_in)
        for packet in inp.demux(stream_in):
            if packet.dts is None:
                continue
            packet.stream = stream_out
            out.mux(packet)


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- what the files hold ------------------------------------------------------------------------------------------

def test_probe_reports_the_sample_clip_as_documented(face_video):
    # numbers from ../shared/data/README.md: 640x360, 72 frames, a phone clip with audio
    info = probe_video(face_video)
    assert (info.width, info.height, info.rotation_deg) == (640, 360, 0)
    assert info.frame_count == 72
    assert info.fps == pytest.approx(30.0)
    assert info.duration_s == pytest.approx(2.4, abs=0.05)
    assert info.codec == "h264"
    assert info.has_audio


def test_probe_reads_hevc_mov(face_then_no_face_video):
    info = probe_video(face_then_no_face_video)
    assert (info.width, info.height, info.codec) == (960, 540, "hevc")
    assert info.frame_count > 100


def test_frames_equal_a_plain_pyav_decode(face_video):
    reference = decode_with_pyav(face_video)
    frames = list(iter_frames(face_video))
    assert [f.index for f in frames] == list(range(len(reference))) and len(frames) == 72
    for frame, expected in zip(frames, reference):
        assert frame.image.dtype == np.uint8 and frame.image.shape == (360, 640, 3)
        np.testing.assert_array_equal(frame.image, expected)
    times = np.array([f.time_s for f in frames])
    np.testing.assert_allclose(times, np.arange(72) / 30.0, atol=1e-3)


def test_every_and_max_frames_pick_the_right_frames(face_video, face_frames):
    picked = list(iter_frames(face_video, every=5, max_frames=4))
    assert [f.index for f in picked] == [0, 5, 10, 15]
    for frame in picked:
        np.testing.assert_array_equal(frame.image, face_frames[frame.index])
    with pytest.raises(ValueError, match="every"):
        next(iter_frames(face_video, every=0))


def test_max_side_scales_down_like_an_area_resize(face_video, face_frames):
    small = list(iter_frames(face_video, max_side=320, max_frames=5))
    for frame in small:
        assert frame.image.shape == (180, 320, 3)
        reference = cv2.resize(face_frames[frame.index], (320, 180), interpolation=cv2.INTER_AREA)
        # FFmpeg scales in YUV before converting, OpenCV in RGB after: ~1 grey level apart on average (measured 1.0-1.2)
        assert mean_abs_difference(frame.image, reference) < 2.5
    # frames already small enough are left alone
    np.testing.assert_array_equal(next(iter_frames(face_video, max_side=4000)).image, face_frames[0])


# --- display rotation ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, display_rotation_deg", [(1, -90), (-1, 90), (2, 180)])
def test_rotated_recording_comes_out_upright(tmp_path, face_frames, k, display_rotation_deg):
    path = tmp_path / "turned.mp4"
    originals = face_frames[:6]
    write_rotated_clip(path, originals, k, display_rotation_deg)
    info = probe_video(path)
    assert (info.width, info.height) == (640, 360)
    assert info.rotation_deg == display_rotation_deg % 360
    for frame, original in zip(iter_frames(path), originals):
        assert frame.image.shape == original.shape
        # re-encoding an already compressed clip costs ~1.5 grey levels; a frame left turned by 180 degrees is ~60 off
        assert mean_abs_difference(frame.image, original) < 3.0
        assert mean_abs_difference(np.rot90(frame.image, 2), original) > 20.0


def test_rotated_face_video_fixture_decodes_upright(rotated_face_video, face_frames):
    with av.open(str(rotated_face_video)) as container:
        first = next(container.decode(video=0))
        assert (first.width, first.height, first.rotation) == (360, 640, -90)  # stored sideways, as a phone does
    frames = list(iter_frames(rotated_face_video))
    assert len(frames) == len(face_frames)
    differences = [mean_abs_difference(f.image, o) for f, o in zip(frames, face_frames)]
    assert max(differences) < 3.0


# --- files that are not usable videos -----------------------------------------------------------------------------

def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(InputVideoError, match="no such file"):
        probe_video(tmp_path / "absent.mp4")
    with pytest.raises(InputVideoError, match="is a folder"):
        probe_video(tmp_path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(InputVideoError, match=r"is empty \(0 bytes\)"):
        probe_video(path)
    with pytest.raises(InputVideoError, match="is empty"):
        next(iter_frames(path))


def test_text_file_named_mp4_is_refused(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("shopping list: eggs, milk, bread\n" * 20)
    with pytest.raises(InputVideoError, match="cannot be read as a video"):
        probe_video(path)


def test_still_image_is_refused(tmp_path, face_frames):
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(face_frames[0], cv2.COLOR_RGB2BGR))
    with pytest.raises(InputVideoError, match="is a still image"):
        probe_video(path)
    with pytest.raises(InputVideoError, match="is a still image"):
        next(iter_frames(path))


def test_audio_only_file_is_refused(tmp_path, face_video):
    path = tmp_path / "sound.mp4"
    remux(face_video, path, "audio")
    with pytest.raises(InputVideoError, match=r"has no video stream \(streams: audio\)"):
        probe_video(path)


def test_mp4_cut_before_its_index_is_refused(tmp_path, face_video):
    data = face_video.read_bytes()
    assert data.find(b"moov") > len(data) // 2  # the sample keeps its index at the end, as phones write it
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputVideoError, match="cannot be read as a video.*truncated"):
        probe_video(path)


@pytest.fixture()
def cut_faststart_video(tmp_path, face_video) -> Path:
    """The sample remuxed with its index first ("faststart"), then cut in half: it opens, but decoding stops early."""
    whole = tmp_path / "faststart.mp4"
    remux(face_video, whole, "video", options={"movflags": "faststart"})
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "faststart_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_cut_faststart_mp4_stops_early_and_is_refused(cut_faststart_video, face_frames):
    info = probe_video(cut_faststart_video)  # the index is intact, so it opens and declares all 72 frames
    assert info.frame_count == 72
    seen = []
    with pytest.raises(InputVideoError, match="is truncated: its header declares 72 frames but only"):
        for frame in iter_frames(cut_faststart_video):
            seen.append(frame)
    assert 5 < len(seen) < 60
    # what could be decoded is the start of the clip, and can be had on request
    lenient = list(iter_frames(cut_faststart_video, strict_length=False))
    assert len(lenient) == len(seen)
    for frame in lenient:
        assert mean_abs_difference(frame.image, face_frames[frame.index]) == 0.0


# --- decoding ahead in a thread -----------------------------------------------------------------------------------

def test_prefetch_yields_the_same_frames(face_video):
    direct = list(iter_frames(face_video, every=4))
    ahead = list(prefetch(iter_frames(face_video, every=4), depth=2))
    assert [f.index for f in ahead] == [f.index for f in direct]
    for a, b in zip(ahead, direct):
        np.testing.assert_array_equal(a.image, b.image)


def test_prefetch_raises_decoding_errors_where_they_happen(cut_faststart_video):
    seen = 0
    with pytest.raises(InputVideoError, match="is truncated"):
        for _ in prefetch(iter_frames(cut_faststart_video)):
            seen += 1
    assert seen == len(list(iter_frames(cut_faststart_video, strict_length=False)))


def test_prefetch_can_be_abandoned_early(face_video):
    frames = prefetch(iter_frames(face_video), depth=2)
    first = [next(frames) for _ in range(3)]
    frames.close()  # stops the decoding thread; must not hang or raise
    assert [f.index for f in first] == [0, 1, 2]
