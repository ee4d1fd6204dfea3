"""``prepare``: phone video -> tracked dataset (the first stage of the data flow).

Two streamed passes over the video (:mod:`avatar4d.preparation.passes`), so memory does not grow with its length;
the second writes every kept frame, its person and face masks, and its landmarks to the dataset at once. Then the
face model is fitted, the background plate is taken from a sample of frames, and the manifest, overlay video and
plot are written. Everything is built in ``OUT.partial/`` and renamed to ``OUT`` at the very end.
"""

from __future__ import annotations

import errno
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from avatar4d.atomic import atomic_directory, disk_errors, write_json_atomic
from avatar4d.dataset.background import BackgroundAccumulator
from avatar4d.dataset.layout import DATASET_FORMAT, DATASET_VERSION, DatasetLayout, Tracking, load_dataset
from avatar4d.dataset.masks import PersonSegmenter, face_region_mask
from avatar4d.environment import package_versions
from avatar4d.preparation.config import PrepareConfig
from avatar4d.preparation.overlay import write_overlay_video, write_tracking_plot
from avatar4d.preparation.passes import (
    FaceScan,
    LocatedFace,
    check_enough_faces,
    check_video,
    fit_tracked,
    iter_tracked_frames,
    locate_face,
)
from avatar4d.progress import Progress, note
from avatar4d.tracking.camera import SquareCrop
from avatar4d.tracking.coverage import Coverage, measure_coverage
from avatar4d.tracking.face_model import FaceFit, FaceModel
from avatar4d.tracking.head_pose import head_angles_deg
from avatar4d.tracking.landmarks import NUM_LANDMARKS
from avatar4d.video.read import probe_video

__all__ = ["PrepareConfig", "prepare"]


def prepare(video: Path, out: Path, config: PrepareConfig = PrepareConfig()) -> DatasetLayout:
    """Turn a face video into a tracked dataset folder (see ``docs/dataset.md``).

    Raises:
        InputVideoError: the video is unusable (not a video, empty, truncated, no face, too short, too large).
        OutputError: the dataset cannot be written (e.g. the disk is full); no partial dataset is left.
    """
    video, out = Path(video), Path(out)
    started = time.perf_counter()
    info = probe_video(video)
    check_video(info, config)
    located = locate_face(video, info, config)
    scan_seconds = time.perf_counter() - started

    with atomic_directory(out) as work:
        layout = DatasetLayout(work)
        layout.make_dirs()
        track_started = time.perf_counter()
        kept, times, dropped, background = _track_frames(video, layout, located.crop, located.scan, config)
        track_seconds = time.perf_counter() - track_started
        count = len(kept)
        check_enough_faces(video, count, dropped, config)
        landmarks = np.memmap(work / "landmarks.f32", dtype=np.float32, mode="r", shape=(count, NUM_LANDMARKS, 3))
        source_frames = np.asarray(kept, dtype=np.int64)
        fit_started = time.perf_counter()
        model, fit = fit_tracked(landmarks, source_frames, located, config)
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

        timing = {"scan_s": scan_seconds, "track_s": track_seconds, "fit_s": fit_seconds,
                  "tracking_fps": count / max(scan_seconds + track_seconds, 1e-9)}
        coverage = measure_coverage(model.controls.raw(fit.controls), head_angles_deg(fit.camera_from_head)[:, :2])
        manifest = _manifest(video, located, config, fit, model, source_frames, dropped,
                             {"samples": background.count, "hole_fraction": float(holes.mean())}, timing, coverage)
        write_json_atomic(layout.manifest, manifest)
        if config.overlay:
            dataset = load_dataset(work)
            write_tracking_plot(dataset, layout.plot)
            write_overlay_video(dataset, layout.overlay, located.info.fps / config.every)
        manifest["timing"]["total_s"] = time.perf_counter() - started
        write_json_atomic(layout.manifest, manifest)
    note(f"dataset ready: {out} ({count} frames, {len(dropped)} dropped, {int(fit.flagged.sum())} flagged; "
         f"tracking {manifest['timing']['tracking_fps']:.0f} fps; mean re-projection error "
         f"{manifest['quality']['reprojection_error_px']['mean']:.2f} px; the video {coverage.summary()})")
    for warning in coverage.warnings():
        note(f"{warning} (see the README on recording a video)")
    return DatasetLayout(out)


def _manifest(video: Path, located: LocatedFace, config: PrepareConfig, fit: FaceFit, model: FaceModel,
              source_frames: np.ndarray, dropped: list[tuple[int, str]], background: dict,
              timing: dict[str, float], coverage: Coverage) -> dict:
    """The dataset's ``manifest.json``: where it came from, how it was made, what was kept, how well it fits."""
    count = len(source_frames)
    heldout = max(3, int(round(config.heldout_fraction * count)))
    scan, camera = located.scan, located.camera
    return {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "source": {**asdict(located.info), "path": str(video.resolve()), "scanned_frames": scan.decoded_frames},
        "parameters": asdict(config),
        "crop": asdict(located.crop),
        "camera": {**camera.to_dict(), "fov_x_deg": camera.fov_x_deg, "source_fov_deg": config.fov_deg},
        "frames": {"kept": count, "dropped": len(dropped), "flagged": int(fit.flagged.sum())},
        "dropped": [{"source_frame": i, "reason": r} for i, r in dropped],
        "flagged": [{"frame": i, "source_frame": int(source_frames[i]), "reasons": fit.flag_reasons[i]}
                    for i in np.nonzero(fit.flagged)[0].tolist()],
        "faces": {"analysed_frames": len(scan.analysed), "frames_with_several_faces": scan.multiple_faces,
                  "policy": "the largest face is tracked; other faces are ignored"},
        "split": {"train": [0, count - heldout], "heldout": [count - heldout, count]},
        "background": background,
        "quality": _quality(fit, model),
        "coverage": coverage.to_dict(),
        "timing": timing,
    }


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


def _quality(fit: FaceFit, model: FaceModel) -> dict:
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
