"""The two streamed passes over a video, shared by ``prepare`` and by tracking a reenactment driver:

1. *scan*: face detection on a sample of frames (all faces, downscaled) picks the face to track (the largest,
   consistently) and one stable square crop for the whole video;
2. *track*: every kept frame is cropped and its 478 landmarks tracked (Face Mesh in video mode).

Then the face model is fitted to the landmarks (template, head poses, expression basis, controls).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar4d.dataset.masks import PersonSegmenter
from avatar4d.errors import InputVideoError
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.preparation.config import PrepareConfig
from avatar4d.progress import Progress, note
from avatar4d.tracking.camera import SquareCrop, choose_crop, crop_camera, source_camera
from avatar4d.tracking.face_model import FaceFit, FaceModel, fit_face_model
from avatar4d.tracking.head_pose import contiguous_segments
from avatar4d.tracking.landmarks import FaceBox, FaceDetector, FaceMeshTracker
from avatar4d.video.read import VideoFrame, VideoInfo, iter_frames, prefetch, probe_video


@dataclass
class FaceScan:
    """What the first pass found."""

    analysed: list[int] = field(default_factory=list)
    """Source frame indices analysed."""
    boxes: list[FaceBox | None] = field(default_factory=list)
    """The tracked face's box in each analysed frame (source pixels), None where no face was found."""
    multiple_faces: int = 0
    """Analysed frames with more than one face."""
    decoded_frames: int = 0
    declared_frames: int = 0
    """Frames the container declares."""


def check_video(info: VideoInfo, config: PrepareConfig) -> None:
    if info.width * info.height > config.max_source_pixels:
        raise InputVideoError(f"{info.path} is {info.width}x{info.height}, larger than the "
                              f"{config.max_source_pixels / 1e6:.0f}-megapixel limit; scale it down first")
    expected = math.ceil(info.frame_count / config.every) if info.frame_count else None
    if expected is not None and config.max_frames is not None:
        expected = min(expected, config.max_frames)
    if expected is not None and expected < config.min_frames:
        raise InputVideoError(
            f"{info.path} is too short: {info.frame_count} frames ({info.duration_s:.1f} s)"
            + (f" with --every {config.every}" if config.every > 1 else "")
            + f" give {expected} usable frames, and at least {config.min_frames} are needed (about "
            f"{config.min_frames * config.every / max(info.fps, 1):.1f} s) to fit a face model and hold out 10%")


def scan_faces(video: Path, info: VideoInfo, config: PrepareConfig) -> FaceScan:
    """First pass: detect faces on up to ``scan_frames`` frames spread over the video; follow the largest one."""
    expected = math.ceil(info.frame_count / config.every) if info.frame_count else 10 * config.scan_frames
    if config.max_frames is not None:
        expected = min(expected, config.max_frames)
    stride = max(1, math.ceil(expected / config.scan_frames))
    scan = FaceScan(declared_frames=info.frame_count)
    previous: FaceBox | None = None
    scale_back = 1.0
    limit = math.ceil(expected / stride) if config.max_frames is not None else None
    with FaceDetector() as detector, Progress("scan", math.ceil(expected / stride), "frames") as progress:
        frames = iter_frames(video, max_side=640, every=config.every * stride, max_frames=limit)
        for frame in frames:
            scale_back = max(info.width, info.height) / max(frame.image.shape[:2])
            boxes = [FaceBox(b.x0 * scale_back, b.y0 * scale_back, b.x1 * scale_back, b.y1 * scale_back, b.score)
                     for b in detector.detect(frame.image)]
            scan.analysed.append(frame.index)
            scan.multiple_faces += len(boxes) > 1
            chosen = None
            if boxes:
                overlapping = [b for b in boxes if previous is not None and b.iou(previous) > 0.1]
                chosen = max(overlapping, key=lambda b: b.size) if overlapping else boxes[0]
                previous = chosen
            scan.boxes.append(chosen)
            progress.update()
        scan.decoded_frames = scan.analysed[-1] + 1 if scan.analysed else 0
    return scan


@dataclass(frozen=True)
class LocatedFace:
    """The face to track in a video and the one crop and camera for all its frames."""

    info: VideoInfo
    scan: FaceScan
    crop: SquareCrop
    camera: PinholeCamera
    """Intrinsics of the resized crop."""


def locate_face(video: Path, info: VideoInfo, config: PrepareConfig) -> LocatedFace:
    """First pass: find the face to track and choose the crop (raises InputVideoError when there is no face)."""
    scan = scan_faces(video, info, config)
    tracked = [b for b in scan.boxes if b is not None]
    if not tracked:
        raise InputVideoError(f"no face found in {video}: face detection saw none in {len(scan.analysed)} frames "
                              "spread over the video")
    if scan.multiple_faces:
        note(f"more than one face in {scan.multiple_faces} of {len(scan.analysed)} analysed frames; "
             "tracking the largest one throughout")
    crop = choose_crop(tracked, info.width, info.height, config.size, margin=config.crop_margin)
    if crop.side < config.size:
        note(f"the face is small in this video: a {crop.side:.0f}-pixel crop is upscaled to {config.size}")
    camera = crop_camera(source_camera(info.width, info.height, config.fov_deg), crop)
    return LocatedFace(info=info, scan=scan, crop=crop, camera=camera)


def check_enough_faces(video: Path, kept: int, dropped: list[tuple[int, str]], config: PrepareConfig) -> None:
    """Refuse a video whose face was tracked in no frame, or in fewer than ``config.min_frames``.

    Args:
        kept: frames with landmarks.
        dropped: (source frame, reason) of every frame without.
    """
    if kept == 0:
        raise InputVideoError(f"no face found in {video}: face landmarks were found in none of its "
                              f"{len(dropped)} frames")
    if kept < config.min_frames:
        raise InputVideoError(f"only {kept} frames of {video} have a usable face (dropped: "
                              f"{summarise_drops(dropped) or 'none'}); at least {config.min_frames} are needed")


def fit_tracked(landmarks: np.ndarray, source_frames: np.ndarray, located: LocatedFace,
                config: PrepareConfig) -> tuple[FaceModel, FaceFit]:
    """Fit the face model to the tracked frames' (F, 478, 3) landmarks (poses smoothed within runs of frames)."""
    return fit_face_model(landmarks, located.camera, contiguous_segments(source_frames, config.every),
                          rate_hz=located.info.fps / config.every, smoothing=config.smoothing,
                          num_components=config.num_components)


def summarise_drops(dropped: list[tuple[int, str]]) -> str:
    counts: dict[str, int] = {}
    for _, reason in dropped:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} x {reason}" for reason, n in counts.items())


@dataclass
class TrackedFrame:
    """One frame of the second pass."""

    frame: VideoFrame
    image: np.ndarray
    """(S, S, 3) uint8 crop."""
    landmarks: np.ndarray | None
    """(478, 3) crop pixels, or None when the frame is dropped."""
    drop_reason: str | None
    person: np.ndarray | None
    """(S, S) raw person probability from the segmenter, when one was given."""


def iter_tracked_frames(video: Path, crop: SquareCrop, scan: FaceScan, config: PrepareConfig, *,
                        segmenter: PersonSegmenter | None = None) -> Iterator[TrackedFrame]:
    """Second pass, streamed: crop every kept frame and track its landmarks (Face Mesh in video mode); the
    segmentation model, if given, runs in a thread beside the landmark model. Landmarks far from where the first pass
    saw the tracked face (another face) drop the frame, and tracking restarts."""
    found = [(i, b) for i, b in zip(scan.analysed, scan.boxes) if b is not None]
    known_index = np.array([i for i, _ in found], dtype=float)
    known_center = crop.source_to_crop(np.array([b.center for _, b in found]))
    known_size = np.array([b.size for _, b in found]) * crop.scale
    with FaceMeshTracker() as mesh, ThreadPoolExecutor(1) as model_thread:
        for frame in prefetch(iter_frames(video, every=config.every, max_frames=config.max_frames)):
            image = crop.apply(frame.image)
            segmentation = model_thread.submit(segmenter.predict, image) if segmenter is not None else None
            landmarks = mesh.track(image)
            person = segmentation.result() if segmentation is not None else None
            if landmarks is None:
                yield TrackedFrame(frame, image, None, "no face found", person)
                continue
            expected_center = np.array([np.interp(frame.index, known_index, known_center[:, k]) for k in (0, 1)])
            expected_size = float(np.interp(frame.index, known_index, known_size))
            center = 0.5 * (landmarks[:, :2].min(0) + landmarks[:, :2].max(0))
            if np.linalg.norm(center - expected_center) > 0.6 * expected_size:
                mesh.reset()
                yield TrackedFrame(frame, image, None, "the landmarks are on another face than the one being tracked",
                                   person)
                continue
            yield TrackedFrame(frame, image, landmarks, None, person)


@dataclass(frozen=True)
class VideoTrack:
    """A video tracked without writing a dataset (a reenactment driver): every processed frame, and the face model
    fitted to the frames where the face was found."""

    located: LocatedFace
    source_frames: np.ndarray
    """(F,) every processed frame's index in the video."""
    times_s: np.ndarray
    """(F,)."""
    tracked: np.ndarray
    """(F,) bool: landmarks were found."""
    model: FaceModel
    """Fitted to the tracked frames (the template is this person's mean face)."""
    fit: FaceFit
    """Per tracked frame (rows follow ``np.nonzero(tracked)``)."""


def track_video(video: Path, config: PrepareConfig = PrepareConfig(overlay=False)) -> VideoTrack:
    """Track every frame of a video (streamed) and fit its face model, keeping only arrays in memory.

    Raises:
        InputVideoError: as ``prepare`` does (not a video, no face, too few frames with a face).
    """
    video = Path(video)
    info = probe_video(video)
    check_video(info, config)
    located = locate_face(video, info, config)
    frames, times, landmarks, tracked = [], [], [], []
    total = math.ceil(info.frame_count / config.every) if info.frame_count else None
    with Progress("track", total, "frames") as progress:
        for item in iter_tracked_frames(video, located.crop, located.scan, config):
            frames.append(item.frame.index)
            times.append(item.frame.time_s)
            tracked.append(item.landmarks is not None)
            if item.landmarks is not None:
                landmarks.append(item.landmarks)
            progress.update()
    dropped = [(i, "no face found") for i, ok in zip(frames, tracked) if not ok]
    check_enough_faces(video, len(landmarks), dropped, config)
    kept = np.asarray(frames)[np.asarray(tracked)]
    model, fit = fit_tracked(np.stack(landmarks), kept, located, config)
    return VideoTrack(located=located, source_frames=np.asarray(frames), times_s=np.asarray(times),
                      tracked=np.asarray(tracked), model=model, fit=fit)
