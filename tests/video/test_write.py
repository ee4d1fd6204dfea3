"""Writing: H.264 mp4 that decodes back to the frames given, appears only when complete, and carries the audio."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from avatar4d.video import Mp4Writer, iter_frames, probe_video


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_written_frames_decode_back_to_the_input(tmp_path, face_frames):
    path = tmp_path / "clip.mp4"
    originals = face_frames[:10]
    with Mp4Writer(path, 30, crf=18) as writer:
        for image in originals:
            writer.write(image)
    assert writer.frames_written == 10
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count, info.codec) == (640, 360, 10, "h264")
    assert info.fps == pytest.approx(30.0)
    assert not info.has_audio
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"  # what browsers play
    decoded = [f.image for f in iter_frames(path)]
    assert len(decoded) == 10
    for got, want in zip(decoded, originals):
        # crf 18 on real frames: ~1 grey level on average
        assert np.abs(got.astype(float) - want.astype(float)).mean() < 2.5
    assert leftovers(tmp_path) == ["clip.mp4"]


def test_fractional_frame_rate_is_kept(tmp_path, face_frames):
    path = tmp_path / "ntsc.mp4"
    with Mp4Writer(path, 30000 / 1001) as writer:
        for image in face_frames[:5]:
            writer.write(image)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


def test_file_appears_only_when_closed(tmp_path, face_frames):
    path = tmp_path / "clip.mp4"
    writer = Mp4Writer(path, 30)
    writer.write(face_frames[0])
    assert not path.exists()
    writer.close()
    assert path.exists() and leftovers(tmp_path) == ["clip.mp4"]


def test_error_while_writing_leaves_nothing(tmp_path, face_frames):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="stop"):
        with Mp4Writer(path, 30) as writer:
            writer.write(face_frames[0])
            writer.write(face_frames[1])
            raise RuntimeError("stop")
    assert leftovers(tmp_path) == []


def test_abort_keeps_an_older_file_intact(tmp_path, face_frames):
    path = tmp_path / "clip.mp4"
    with Mp4Writer(path, 30) as writer:
        for image in face_frames[:3]:
            writer.write(image)
    before = path.read_bytes()
    writer = Mp4Writer(path, 30)
    writer.write(face_frames[5])
    writer.abort()
    assert path.read_bytes() == before and leftovers(tmp_path) == ["clip.mp4"]


def test_bad_frames_are_refused(tmp_path, face_frames):
    with Mp4Writer(tmp_path / "a.mp4", 30) as writer:
        with pytest.raises(ValueError, match="even sides"):
            writer.write(face_frames[0][:359])
        with pytest.raises(ValueError, match="uint8"):
            writer.write(face_frames[0].astype(np.float32))
        writer.write(face_frames[0])
        with pytest.raises(ValueError, match="frame size changed"):
            writer.write(face_frames[1][:200, :300])


def test_audio_is_copied_and_trimmed_to_the_video(tmp_path, face_video, face_frames):
    path = tmp_path / "with_sound.mp4"
    with Mp4Writer(path, 30, audio_from=face_video) as writer:
        for image in face_frames[:30]:  # one second of video from a 2.4-second clip
            writer.write(image)
    info = probe_video(path)
    assert info.has_audio
    with av.open(str(face_video)) as source:
        source_codec = source.streams.audio[0].codec_context.name
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == source_codec  # copied, not re-encoded
        ends = [float((p.pts + p.duration) * p.time_base) for p in container.demux(audio) if p.pts is not None]
    assert 0.9 < max(ends) < 1.1  # trimmed at the video's end, within one audio packet (26 ms for mp3)


def test_source_without_audio_gives_silent_video(tmp_path, face_frames):
    silent = tmp_path / "silent.mp4"
    with Mp4Writer(silent, 30) as writer:
        writer.write(face_frames[0])
    path = tmp_path / "copy.mp4"
    with Mp4Writer(path, 30, audio_from=silent) as writer:
        writer.write(face_frames[1])
    assert not probe_video(path).has_audio
