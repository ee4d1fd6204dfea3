"""Write H.264 mp4 files that browsers play (yuv420p), streamed frame by frame, atomically.

The file appears under its final name only when :meth:`Mp4Writer.close` succeeds; a killed job leaves a hidden
temporary file, never a truncated mp4 under the real name.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from avatar4d.atomic import disk_errors


class Mp4Writer:
    """Encode (H, W, 3) uint8 RGB frames to an H.264 mp4, optionally copying another file's audio track.

    Args:
        path: the mp4 to write.
        fps: frames per second.
        crf: x264 constant rate factor (18 is visually lossless, 23 the x264 default).
        audio_from: a video whose first audio track is copied without re-encoding, if it has one.
        preset: x264 speed preset.
    """

    def __init__(self, path: Path, fps: float, *, crf: int = 20, audio_from: Path | None = None,
                 preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.fps = fps
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp{os.getpid()}.mp4")
        with disk_errors(self.path):
            self._container = av.open(str(self._tmp), mode="w")
        self._rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=self._rate)
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": preset}
        self._audio_source = None
        self._audio_in = None
        self._audio_out = None
        if audio_from is not None:
            source = av.open(str(audio_from))
            if source.streams.audio:
                self._audio_source = source
                self._audio_in = source.streams.audio[0]
                self._audio_out = self._container.add_stream_from_template(self._audio_in)
            else:
                source.close()
        self._size: tuple[int, int] | None = None
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; H and W must be even and the same for every frame."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        if self._size is None:
            if height % 2 or width % 2:
                raise ValueError(f"H.264 (yuv420p) needs even sides, got {width}x{height}")
            self._size = (height, width)
            self._stream.width, self._stream.height = width, height
        elif self._size != (height, width):
            raise ValueError(f"frame size changed from {self._size} to {(height, width)}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        with disk_errors(self.path):
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush, copy the audio (trimmed to the video's length), and move the file into place."""
        with disk_errors(self.path):
            for packet in self._stream.encode():
                self._container.mux(packet)
            if self._audio_source is not None:
                self._copy_audio()
            self._container.close()
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._container.close()
        except av.error.FFmpegError:
            pass
        if self._audio_source is not None:
            self._audio_source.close()
        self._tmp.unlink(missing_ok=True)

    def _copy_audio(self) -> None:
        video_seconds = self.frames_written / self.fps
        for packet in self._audio_source.demux(self._audio_in):
            if packet.dts is None:
                continue
            if packet.pts is not None and float(packet.pts * packet.time_base) > video_seconds:
                break
            packet.stream = self._audio_out
            self._container.mux(packet)
        self._audio_source.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
