"""One video of a batch: prepare -> train -> evaluate (-> an orbit) into its own folder.

Every stage's output is published complete or not at all, so a rerun skips the stages whose output exists and
continues with the first that is missing; training resumes from the checkpoint a killed run left. The video's
``status.json`` is rewritten at each stage. A failure is recorded there with its error and returned, never raised,
so that it cannot stop the other videos.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import torch

from avatar4d.batch.jobs import VideoJob, choose_every
from avatar4d.batch.layout import BatchLayout, VideoLayout
from avatar4d.batch.status import VideoStatus, now, read_status, write_status
from avatar4d.configs import to_dict
from avatar4d.environment import keep_freed_memory
from avatar4d.errors import Avatar4dError, BatchInputError
from avatar4d.evaluation.evaluate import evaluate
from avatar4d.novel_views import render_orbit
from avatar4d.preparation.config import PrepareConfig
from avatar4d.preparation.prepare import prepare
from avatar4d.tracking.camera import PHONE_FRONT_CAMERA_FOV_DEG
from avatar4d.training import presets
from avatar4d.training.config import TrainConfig
from avatar4d.training.trainer import train
from avatar4d.video.read import probe_video

Figures = dict[str, float | int | str]


@dataclass(frozen=True)
class PipelineConfig:
    """What every video of a batch goes through (the options of ``avatar4d prepare`` and ``train`` it passes on)."""

    preset: Literal["preview", "quality"] = "preview"
    """Training preset: preview (CPU, about 128 px) or quality (GPU, 512 px)."""
    iterations: int | None = None
    """Training steps (default: the preset's)."""
    image_size: int | None = None
    """Final training resolution (default: the preset's)."""
    time_limit_s: float = 0.0
    """Stop each video's training after this many seconds of training (0: the whole schedule)."""
    seed: int | None = None
    device: str | None = None
    """cpu, cuda, or auto (default)."""
    size: int = 512
    """Side of the square head crop that prepare writes, pixels."""
    fov_deg: float = PHONE_FRONT_CAMERA_FOV_DEG
    """Field of view across a video's longer side, unless its line in the list gives one."""
    max_seconds: float = 60.0
    """Longer videos are subsampled: one frame in every K, K chosen to keep this many seconds of frames (0: never)."""
    orbit: bool = False
    """Also render an orbit video of each avatar (NAME/orbit.mp4)."""
    orbit_frames: int = 60
    lpips: bool = True
    """Compute LPIPS in the evaluation when its weights can be obtained."""

    def __post_init__(self) -> None:
        if self.preset not in presets.PRESETS:
            raise BatchInputError(f"unknown preset {self.preset!r}; choose one of {', '.join(presets.PRESETS)}")
        checks = [
            (self.iterations is None or self.iterations >= 1, f"--iters must be 1 or more, got {self.iterations}"),
            (self.image_size is None or self.image_size >= 16, f"--image-size must be 16 pixels or more, got "
                                                                 f"{self.image_size}"),
            (self.time_limit_s >= 0, f"--time-limit must be 0 or more seconds, got {self.time_limit_s:g}"),
            (self.size >= 32, f"--size must be 32 pixels or more, got {self.size}"),
            (0 < self.fov_deg < 180, f"--fov must be between 0 and 180 degrees, got {self.fov_deg:g}"),
            (self.max_seconds >= 0, f"--max-seconds must be 0 or more, got {self.max_seconds:g}"),
            (self.orbit_frames >= 2, f"an orbit needs 2 frames or more, got {self.orbit_frames}"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise BatchInputError("; ".join(problems))

    def train_config(self) -> TrainConfig:
        config = presets.get(self.preset, iterations=self.iterations, image_size=self.image_size, seed=self.seed,
                             device=self.device)
        return dataclasses.replace(config, time_limit_s=self.time_limit_s)

    def prepare_config(self, job: VideoJob, every: int) -> PrepareConfig:
        return PrepareConfig(size=self.size, fov_deg=job.fov_deg or self.fov_deg, every=every)

    def settings(self) -> dict:
        """What a batch's results depend on, kept in ``batch.json``: a rerun into the folder must use the same."""
        return {"prepare": {"size": self.size, "fov_deg": self.fov_deg, "max_seconds": self.max_seconds},
                "train": to_dict(self.train_config())}


def is_finished(layout: VideoLayout, config: PipelineConfig) -> bool:
    """The video is done and every output it should have exists."""
    status = read_status(layout)
    return (status is not None and status.state == "done" and layout.metrics.exists()
            and (layout.orbit.exists() or not config.orbit))


def run_video(job: VideoJob, batch: BatchLayout, config: PipelineConfig) -> VideoStatus:
    """Take one video through the stages it has not finished, into ``batch``'s folder for it.

    Returns:
        Its final status: done, or failed with the stage and the error (recorded in its status file as well).
    """
    layout = batch.video(job.name)
    layout.root.mkdir(parents=True, exist_ok=True)
    status = VideoStatus(name=job.name, video=str(job.video), state="running", started=now())
    stages: list[tuple[str, Callable[[], Figures]]] = [
        ("prepare", lambda: _prepare(job, layout, config)),
        ("train", lambda: _train(layout, config)),
        ("evaluate", lambda: _evaluate(layout, config)),
    ]
    if config.orbit:
        stages.append(("orbit", lambda: _orbit(layout, config)))
    try:
        for stage, action in stages:
            status.stage = stage
            write_status(layout, status)
            started = time.perf_counter()
            status.figures.update(action())
            status.seconds[stage] = round(time.perf_counter() - started, 1)
        status.state, status.stage = "done", None
    except Avatar4dError as error:
        status.state, status.error = "failed", str(error)
    except Exception as error:  # an internal error in one video must not stop the others; its traceback is logged
        traceback.print_exc()
        status.state, status.error = "failed", f"internal error {type(error).__name__}: {error}"
    status.finished = now()
    write_status(layout, status)
    return status


def run_video_task(job: VideoJob, batch_root: str, config: PipelineConfig, threads: int) -> VideoStatus:
    """:func:`run_video` as a worker runs it (a local process or a Ray task): with ``threads`` torch and OpenCV
    threads, and what the stages print going to the video's ``log.txt``."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    keep_freed_memory()
    batch = BatchLayout(Path(batch_root))
    layout = batch.video(job.name)
    layout.root.mkdir(parents=True, exist_ok=True)
    with output_to(layout.log):
        print(f"=== {now()} {job.name}: {job.video} ({threads} torch threads, pid {os.getpid()})", flush=True)
        return run_video(job, batch, config)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's standard output and error, its native libraries' included, to ``path`` (appended)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for descriptor, copy in zip((1, 2), saved):
            os.dup2(copy, descriptor)
            os.close(copy)


def _prepare(job: VideoJob, layout: VideoLayout, config: PipelineConfig) -> Figures:
    manifest_path = layout.dataset / "manifest.json"
    if not manifest_path.exists():
        info = probe_video(job.video)
        every = job.every or choose_every(info, config.max_seconds)
        prepare(job.video, layout.dataset, config.prepare_config(job, every))
    manifest = json.loads(manifest_path.read_text())
    every = manifest["parameters"]["every"]
    figures: Figures = {"frames": manifest["frames"]["kept"], "every": every,
                        "tracking_error_px": manifest["quality"]["reprojection_error_px"]["mean"]}
    if every > 1 and job.every is None:
        figures["note"] = (f"subsampled: one frame in every {every} (the video is "
                           f"{manifest['source']['duration_s']:.1f} s, over --max-seconds {config.max_seconds:g})")
    return figures


def _train(layout: VideoLayout, config: PipelineConfig) -> Figures:
    if not layout.avatar.is_dir():
        train(layout.dataset, layout.avatar, config.train_config(), resume=True)
    log = json.loads((layout.avatar / "training_log.json").read_text())
    return {"training_s": log["training_seconds"], "steps": max(entry["step"] for entry in log["log"])}


def _evaluate(layout: VideoLayout, config: PipelineConfig) -> Figures:
    if layout.metrics.exists():
        metrics = json.loads(layout.metrics.read_text())
    else:
        metrics = evaluate(layout.avatar, layout.dataset, lpips=config.lpips)
    mean = metrics["mean"]
    figures: Figures = {key: mean[key] for key in ("psnr", "face_psnr", "ssim", "face_ssim", "lpips", "face_lpips")
                        if key in mean}
    figures["background_psnr"] = metrics["baselines"]["background_plate"]["psnr"]
    return figures


def _orbit(layout: VideoLayout, config: PipelineConfig) -> Figures:
    if not layout.orbit.exists():
        render_orbit(layout.avatar, layout.orbit, frames=config.orbit_frames)
    return {}
