"""``prepare``: phone video -> tracked dataset (the first stage of the data flow).

Two streamed passes over the video, so memory does not grow with its length:

1. *scan*: face detection on a sample of frames (all faces, downscaled) picks the face to track (the largest,
   consistently), one stable square crop for the whole video, and the frames for the background sample;
2. *track*: every kept frame is cropped and resized, its 478 landmarks tracked (Face Mesh in video mode), its person
   and face masks computed, and it is written to the dataset at once.

Then the face model is fitted to the landmarks (template, head poses, expression basis, controls), the background
plate is taken from the sample, and the manifest, overlay video and plot are written. Everything is built in
``OUT.partial/`` and renamed to ``OUT`` at the very end.
"""

from __future__ import annotations

import errno
import math
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from avatar4d.atomic import atomic_directory, disk_errors, write_json_atomic
from avatar4d.dataset.background import BackgroundAccumulator
from avatar4d.dataset.layout import DATASET_FORMAT, DATASET_VERSION, DatasetLayout, Tracking, load_dataset
from avatar4d.dataset.masks import PersonSegmenter, face_region_mask
from avatar4d.environment import package_versions
from avatar4d.errors import InputVideoError
from avatar4d.progress import Progress, note
from avatar4d.tracking.camera import (
    PHONE_FRONT_CAMERA_FOV_DEG,
    PinholeCamera,
    SquareCrop,
    choose_crop,
    crop_camera,
    source_camera,
)
from avatar4d.tracking.face_model import FaceFit, FaceModel, fit_face_model
from avatar4d.tracking.head_pose import PoseSmoothingConfig, contiguous_segments
from avatar4d.tracking.landmarks import NUM_LANDMARKS, FaceBox, FaceDetector, FaceMeshTracker
from avatar4d.tracking.overlay import write_overlay_video, write_tracking_plot
from avatar4d.video.read import VideoFrame, VideoInfo, iter_frames, prefetch, probe_video


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``avatar4d prepare``."""

    size: int = 512
    """Side of the square head crop in pixels."""
    fov_deg: float = PHONE_FRONT_CAMERA_FOV_DEG
    """Field of view across the source video's longer side (default: a phone front camera)."""
    max_frames: int | None = None
    """Use at most this many frames (after --every)."""
    every: int = 1
    """Keep one frame in every K."""
    num_components: int = 32
    """Expression components (PCA of the landmark residuals)."""
    crop_margin: float = 2.2
    """Crop side as a multiple of the face-box size (room for hair and neck)."""
    heldout_fraction: float = 0.1
    """Share of frames held out at the end of the video, as one contiguous block."""
    min_frames: int = 30
    """Refuse videos with fewer usable frames than this."""
    scan_frames: int = 80
    """Frames analysed by face detection in the first pass, at most."""
    background_samples: int = 60
    """Frames the background plate is estimated from."""
    jpeg_quality: int = 95
    smoothing: PoseSmoothingConfig = field(default_factory=PoseSmoothingConfig)
    """The zero-lag adaptive pose smoother."""
    max_source_pixels: int = 8192 * 8192
    """Refuse videos whose frames are larger than this."""
    overlay: bool = True
    """Write overlay.mp4 and tracking.png."""


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


def prepare(video: Path, out: Path, config: PrepareConfig = PrepareConfig()) -> DatasetLayout:
    """Turn a face video into a tracked dataset folder (see ``docs/dataset.md``).

    Raises:
        InputVideoError: the video is unusable (not a video, empty, truncated, no face, too short, too large).
        OutputError: the dataset cannot be written (e.g. the disk is full); no partial dataset is left.
    """
    video, out = Path(video), Path(out)
    started = time.perf_counter()
    info = probe_video(video)
    _check_video(info, config)
    located = locate_face(video, info, config)
    scan, crop, camera = located.scan, located.crop, located.camera
    scan_seconds = time.perf_counter() - started

    with atomic_directory(out) as work:
        layout = DatasetLayout(work)
        layout.make_dirs()
        track_started = time.perf_counter()
        kept, times, dropped, background = _track_frames(video, layout, crop, scan, config)
        track_seconds = time.perf_counter() - track_started
        count = len(kept)
        if count == 0:
            raise InputVideoError(f"no face found in {video}: face landmarks were found in none of its "
                                  f"{len(dropped)} frames")
        if count < config.min_frames:
            reasons = _summarise_drops(dropped)
            raise InputVideoError(f"only {count} frames of {video} have a usable face (dropped: {reasons or 'none'}); "
                                  f"at least {config.min_frames} are needed")
        landmarks = np.memmap(work / "landmarks.f32", dtype=np.float32, mode="r", shape=(count, NUM_LANDMARKS, 3))
        source_frames = np.asarray(kept, dtype=np.int64)
        segments = contiguous_segments(source_frames, config.every)
        fit_started = time.perf_counter()
        model, fit = fit_face_model(landmarks, camera, segments, rate_hz=info.fps / config.every,
                                    smoothing=config.smoothing,
                                    num_components=config.num_components)
        fit_seconds = time.perf_counter() - fit_started

        plate, holes = background.finish()
        _write_image(layout.background, cv2.cvtColor(plate, cv2.COLOR_RGB2BGR))
        _write_image(layout.background_holes, holes.astype(np.uint8) * 255)
        Tracking(source_frames=source_frames, times_s=np.asarray(times, dtype=np.float64),
                 landmarks=np.asarray(landmarks), camera_from_head=fit.camera_from_head,
                 raw_camera_from_head=fit.raw_camera_from_head, expression=fit.codes.astype(np.float32),
                 controls=fit.controls.astype(np.float32),
                 reprojection_error_px=fit.reprojection_error_px.astype(np.float32),
                 flagged=fit.flagged).save(layout.tracking)
        model.save(layout.face_model)
        del landmarks
        (work / "landmarks.f32").unlink()

        heldout = max(3, int(round(config.heldout_fraction * count)))
        manifest = {
            "format": DATASET_FORMAT,
            "version": DATASET_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(),
            "source": {**asdict(info), "path": str(video.resolve()), "scanned_frames": scan.decoded_frames},
            "parameters": asdict(config),
            "crop": asdict(crop),
            "camera": {**camera.to_dict(), "fov_x_deg": camera.fov_x_deg, "source_fov_deg": config.fov_deg},
            "frames": {"kept": count, "dropped": len(dropped), "flagged": int(fit.flagged.sum())},
            "dropped": [{"source_frame": i, "reason": r} for i, r in dropped],
            "flagged": [{"frame": i, "source_frame": int(source_frames[i]), "reasons": fit.flag_reasons[i]}
                        for i in np.nonzero(fit.flagged)[0].tolist()],
            "faces": {"analysed_frames": len(scan.analysed), "frames_with_several_faces": scan.multiple_faces,
                      "policy": "the largest face is tracked; other faces are ignored"},
            "split": {"train": [0, count - heldout], "heldout": [count - heldout, count]},
            "background": {"samples": background.count, "hole_fraction": float(holes.mean())},
            "quality": _quality(fit, model),
            "timing": {
                "scan_s": scan_seconds, "track_s": track_seconds, "fit_s": fit_seconds,
                "tracking_fps": count / max(scan_seconds + track_seconds, 1e-9),
            },
        }
        write_json_atomic(layout.manifest, manifest)
        if config.overlay:
            dataset = load_dataset(work)
            write_tracking_plot(dataset, layout.plot)
            write_overlay_video(dataset, layout.overlay, info.fps / config.every)
        manifest["timing"]["total_s"] = time.perf_counter() - started
        write_json_atomic(layout.manifest, manifest)
    note(f"dataset ready: {out} ({count} frames, {len(dropped)} dropped, {int(fit.flagged.sum())} flagged; "
         f"tracking {manifest['timing']['tracking_fps']:.0f} fps; mean re-projection error "
         f"{manifest['quality']['reprojection_error_px']['mean']:.2f} px)")
    return DatasetLayout(out)


def _check_video(info: VideoInfo, config: PrepareConfig) -> None:
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


def _scan_faces(video: Path, info: VideoInfo, config: PrepareConfig) -> FaceScan:
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


def _track_frames(video: Path, layout: DatasetLayout, crop: SquareCrop, scan: FaceScan, config: PrepareConfig):
    """Second pass: crop, track, segment and write every kept frame; sample frames for the background plate."""
    last = max(scan.declared_frames - 1, scan.analysed[-1] if scan.analysed else 0)
    if config.max_frames is not None:
        last = min(last, (config.max_frames - 1) * config.every)
    positions = np.linspace(0, last // config.every, config.background_samples).round().astype(int)
    sample_at = set((positions * config.every).tolist())
    background = BackgroundAccumulator(config.size, config.size, config.background_samples)
    kept: list[int] = []
    times: list[float] = []
    dropped: list[tuple[int, str]] = []
    pending: list[Future] = []
    expected = math.ceil(info_frames / config.every) if (info_frames := scan.declared_frames) else None
    total = min(filter(None, (expected, config.max_frames)), default=None)
    with (PersonSegmenter() as segmenter, ThreadPoolExecutor(1) as writer,
          open(layout.root / "landmarks.f32", "wb") as landmark_file,
          Progress("track", total, "frames") as progress):
        for tracked in iter_tracked_frames(video, crop, scan, config, segmenter=segmenter):
            progress.update()
            if tracked.landmarks is None:
                dropped.append((tracked.frame.index, tracked.drop_reason))
                continue
            frame, image, landmarks = tracked.frame, tracked.image, tracked.landmarks
            person = np.round(segmenter.refine(image, tracked.person, landmarks) * 255).astype(np.uint8)
            face = face_region_mask(landmarks, config.size, config.size)
            index = len(kept)
            pending.append(writer.submit(_write_frame, layout, index, image, person, face, config.jpeg_quality))
            with disk_errors(layout.root):
                landmark_file.write(np.ascontiguousarray(landmarks, dtype=np.float32).tobytes())
            if frame.index in sample_at and background.count < background.max_samples:
                background.add(image, person)
            kept.append(frame.index)
            times.append(frame.time_s)
            if len(pending) > 16:
                pending.pop(0).result()
            if len(kept) % 25 == 0:
                progress.set(kept=len(kept), dropped=len(dropped))
        for future in pending:
            future.result()
    if background.count == 0 and kept:
        background.add(*_first_frame_and_mask(layout))
    return kept, times, dropped, background


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
    scan = _scan_faces(video, info, config)
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
    _check_video(info, config)
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
    if not landmarks:
        raise InputVideoError(f"no face found in {video}: face landmarks were found in none of its {len(frames)} frames")
    if len(landmarks) < config.min_frames:
        raise InputVideoError(f"the face is found in only {len(landmarks)} of {len(frames)} frames of {video}; at "
                              f"least {config.min_frames} are needed")
    kept = np.asarray(frames)[np.asarray(tracked)]
    model, fit = fit_face_model(np.stack(landmarks), located.camera, contiguous_segments(kept, config.every),
                                rate_hz=info.fps / config.every, smoothing=config.smoothing,
                                num_components=config.num_components)
    return VideoTrack(located=located, source_frames=np.asarray(frames), times_s=np.asarray(times),
                      tracked=np.asarray(tracked), model=model, fit=fit)


def _write_frame(layout: DatasetLayout, index: int, image: np.ndarray, person: np.ndarray, face: np.ndarray,
                 quality: int) -> None:
    _write_image(layout.frame(index), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                 [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    _write_image(layout.person_mask(index), person, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    _write_image(layout.face_mask(index), face, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def _write_image(path: Path, pixels: np.ndarray, params: list[int] | None = None) -> None:
    """``cv2.imwrite`` that fails loudly: OpenCV returns False (it raises nothing) when the disk is full."""
    with disk_errors(path):
        if not cv2.imwrite(str(path), pixels, params or []):
            raise OSError(errno.ENOSPC, "image write failed (disk full?)", str(path))


def _first_frame_and_mask(layout: DatasetLayout) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.cvtColor(cv2.imread(str(layout.frame(0))), cv2.COLOR_BGR2RGB)
    return image, cv2.imread(str(layout.person_mask(0)), cv2.IMREAD_GRAYSCALE)


def _summarise_drops(dropped: list[tuple[int, str]]) -> str:
    counts: dict[str, int] = {}
    for _, reason in dropped:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} x {reason}" for reason, n in counts.items())


def _quality(fit, model) -> dict:
    evr = model.basis.explained_variance_ratio
    return {
        "reprojection_error_px": {"mean": float(fit.reprojection_error_px.mean()),
                                  "median": float(np.median(fit.reprojection_error_px)),
                                  "p95": float(np.percentile(fit.reprojection_error_px, 95))},
        "model_error_px": {"mean": float(fit.model_error_px.mean()),
                           "p95": float(np.percentile(fit.model_error_px, 95))},
        "expression_components": int(len(evr)),
        "explained_variance": float(evr.sum()),
        "explained_variance_per_component": [round(float(v), 5) for v in evr],
        "controls": {name: {"seen": bool(model.controls.seen[i]), "r2_from_code": float(model.controls.r2[i])}
                     for i, name in enumerate(model.controls.names)},
    }
