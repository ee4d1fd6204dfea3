"""Decode a video frame by frame (streamed, constant memory), upright as a player would show it.

Phone videos are often stored sideways with a display matrix that says how to turn them; PyAV reports it as
``frame.rotation`` (degrees counter-clockwise, FFmpeg's convention: ``-90`` means "turn 90 degrees clockwise to
show") and does not apply it, so :func:`iter_frames` does.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avatar4d.errors import InputVideoError

STILL_IMAGE_FORMATS = {"image2", "jpeg_pipe", "png_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif",
                       "image2pipe"}
"""FFmpeg demuxers that open a single picture as a one-frame 'video'."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as the viewer sees it (width and height after display rotation)."""

    path: str
    width: int
    height: int
    rotation_deg: int
    """Display rotation applied to the decoded frames, counter-clockwise degrees (0, 90, 180, 270)."""
    fps: float
    frame_count: int
    """Frames the container declares (0 when it does not say)."""
    duration_s: float
    codec: str
    has_audio: bool


@dataclass(frozen=True)
class VideoFrame:
    """One decoded, upright frame."""

    index: int
    """Position in the decoded stream, from 0."""
    time_s: float
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""


def _open(path: Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputVideoError(f"{path}: no such file")
    if path.is_dir():
        raise InputVideoError(f"{path} is a folder, not a video file")
    if path.stat().st_size == 0:
        raise InputVideoError(f"{path} is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise InputVideoError(
            f"{path} cannot be read as a video ({error.strerror or error}). It is not a video file, or it is "
            "truncated: an mp4 cut off before its index (written at the end by most phones) cannot be opened"
        ) from error
    if container.format.name in STILL_IMAGE_FORMATS:
        container.close()
        raise InputVideoError(f"{path} is a still image ({container.format.name}), not a video")
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"  # before closing, which empties the list
        container.close()
        raise InputVideoError(f"{path} has no video stream (streams: {kinds})")
    return container


def _rotation_steps(rotation_deg: float) -> int:
    """Counter-clockwise quarter turns that bring a decoded frame upright."""
    return int(round(rotation_deg / 90.0)) % 4


def probe_video(path: Path) -> VideoInfo:
    """Read a video's properties (decodes only its first frame, for the display rotation).

    Raises:
        InputVideoError: the file is missing, empty, not a video, a still image, or cannot be decoded at all.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as error:
            raise InputVideoError(f"{path}: the first frame cannot be decoded ({error}); the file is damaged") from error
        if first is None:
            raise InputVideoError(f"{path} holds a video stream with no decodable frame (empty or truncated)")
        steps = _rotation_steps(first.rotation)
        width, height = (first.width, first.height) if steps % 2 == 0 else (first.height, first.width)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                    else (container.duration or 0) / 1e6)
        frame_count = int(stream.frames or 0)
        if frame_count == 0 and fps > 0 and duration > 0:
            frame_count = int(round(duration * fps))
        if not fps or math.isnan(fps):
            fps = frame_count / duration if duration > 0 else 30.0
        return VideoInfo(path=str(path), width=width, height=height, rotation_deg=steps * 90, fps=fps,
                         frame_count=frame_count, duration_s=duration, codec=stream.codec_context.name,
                         has_audio=bool(container.streams.audio))


def iter_frames(path: Path, *, max_side: int | None = None, every: int = 1, max_frames: int | None = None,
                strict_length: bool = True) -> Iterator[VideoFrame]:
    """Yield upright RGB frames one at a time; memory does not grow with the video's length.

    Args:
        path: the video file.
        max_side: if set, frames whose longer side exceeds it are scaled down (by FFmpeg, before conversion to RGB).
        every: keep one frame in ``every`` (the others are decoded but not converted).
        max_frames: stop after yielding this many frames.
        strict_length: raise if the stream ends well before the length the container declares (a cut-off file).

    Raises:
        InputVideoError: the file cannot be opened, a frame cannot be decoded, or the stream stops early.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = int(stream.frames or 0)
        yielded = 0
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index % every:
                    continue
                yield VideoFrame(index=index, time_s=float(frame.time or 0.0), image=_to_upright_rgb(frame, max_side))
                yielded += 1
                if max_frames is not None and yielded >= max_frames:
                    return
        except av.error.FFmpegError as error:
            raise InputVideoError(f"{path}: decoding failed after frame {index} ({error}); the file is damaged or "
                                  "truncated") from error
        decoded = index + 1
        if strict_length and declared and decoded < declared - max(5, declared // 20):
            raise InputVideoError(f"{path} is truncated: its header declares {declared} frames but only {decoded} "
                                  "could be decoded")
    finally:
        container.close()


def prefetch(frames: Iterator[VideoFrame], depth: int = 4) -> Iterator[VideoFrame]:
    """Decode ahead in a background thread (FFmpeg releases the GIL), at most ``depth`` frames in memory.

    Errors raised while decoding are re-raised in the consumer, at the frame where they happened.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        buffer.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(done)
        except BaseException as error:  # handed to the consumer
            buffer.put(error)

    thread = threading.Thread(target=produce, name="avatar4d-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
        close = getattr(frames, "close", None)
        if close is not None and not thread.is_alive():
            close()


def _to_upright_rgb(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    width, height = frame.width, frame.height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
        image = frame.to_ndarray(format="rgb24", width=width, height=height)
    else:
        image = frame.to_ndarray(format="rgb24")
    steps = _rotation_steps(frame.rotation)
    if steps:
        image = np.ascontiguousarray(np.rot90(image, k=steps))
    return image
