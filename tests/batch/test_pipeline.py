"""One video of a batch on the real sample clip (in this process, one torch thread): prepare, train and evaluate
into its folder with the status and figures recorded; a finished video is not redone; a video left unfinished by a
killed run continues from the first missing stage; an unusable file becomes a recorded failure, not an exception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from torch_threads import torch_threads

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.pipeline import PipelineConfig, is_finished, run_video
from avatar4d.batch.status import VideoStatus, read_status, write_status
from avatar4d.errors import BatchInputError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = PipelineConfig(iterations=3, image_size=32, size=128, max_seconds=1.5, lpips=False, orbit=True,
                      orbit_frames=4)
"""Real stages, cut to seconds: a 128 px crop, 3 training steps at up to 32 px, a 4-frame orbit; the 2.4 s sample
clip is over the 1.5 s limit, so one frame in every 2 is kept."""


@pytest.fixture(scope="module")
def finished_video(tmp_path_factory: pytest.TempPathFactory, face_video: Path) -> tuple[BatchLayout, VideoJob]:
    batch = BatchLayout(tmp_path_factory.mktemp("pipeline"))
    job = VideoJob(name="sample", video=face_video)
    with torch_threads(1):
        run_video(job, batch, TINY)
    return batch, job


def test_a_video_goes_through_every_stage(finished_video):
    batch, job = finished_video
    layout = batch.video(job.name)
    status = read_status(layout)
    assert (status.state, status.stage, status.error) == ("done", None, None)
    assert list(status.seconds) == ["prepare", "train", "evaluate", "orbit"]
    figures = status.figures
    assert figures["every"] == 2 and figures["frames"] == 36
    assert figures["note"].startswith("subsampled: one frame in every 2 (the video is 2.4 s")
    assert figures["steps"] == 3 and figures["training_s"] > 0
    metrics = json.loads(layout.metrics.read_text())
    assert figures["psnr"] == metrics["mean"]["psnr"] and figures["face_ssim"] == metrics["mean"]["face_ssim"]
    assert figures["background_psnr"] == metrics["baselines"]["background_plate"]["psnr"]
    manifest = json.loads((layout.dataset / "manifest.json").read_text())
    assert manifest["parameters"]["every"] == 2 and manifest["parameters"]["size"] == 128
    assert layout.orbit.exists() and is_finished(layout, TINY)
    assert not any(path.name.endswith(".partial") for path in layout.root.iterdir())


def test_a_finished_video_is_not_redone(finished_video):
    batch, job = finished_video
    layout = batch.video(job.name)
    outputs = [layout.dataset / "manifest.json", layout.avatar / "model.safetensors", layout.metrics, layout.orbit]
    before = [path.stat().st_mtime_ns for path in outputs]
    again = run_video(job, batch, TINY)
    assert again.state == "done" and again.figures == read_status(layout).figures
    assert [path.stat().st_mtime_ns for path in outputs] == before


def test_a_video_left_running_continues_from_its_first_missing_stage(finished_video, tmp_path: Path):
    source, job = finished_video
    batch = BatchLayout(tmp_path)
    layout = batch.video(job.name)
    shutil.copytree(source.video(job.name).root, layout.root)
    shutil.rmtree(layout.avatar)
    layout.orbit.unlink()
    write_status(layout, VideoStatus(name=job.name, video=str(job.video), state="running", stage="train"))
    assert not is_finished(layout, TINY)
    dataset_written = (layout.dataset / "manifest.json").stat().st_mtime_ns
    status = run_video(job, batch, TINY)
    assert status.state == "done" and layout.metrics.exists() and layout.orbit.exists()
    assert (layout.dataset / "manifest.json").stat().st_mtime_ns == dataset_written
    assert status.figures["frames"] == 36 and status.figures["steps"] == 3


def test_a_file_that_is_not_a_video_is_a_recorded_failure(tmp_path: Path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    batch = BatchLayout(tmp_path / "batch")
    status = run_video(VideoJob(name="notes", video=notes), batch, TINY)
    assert (status.state, status.stage) == ("failed", "prepare")
    assert "cannot be read as a video" in status.error
    assert read_status(batch.video("notes")) == status
    assert not (batch.video("notes").dataset).exists()


def test_bad_pipeline_options_are_refused_together():
    with pytest.raises(BatchInputError) as caught:
        PipelineConfig(iterations=0, fov_deg=190.0, time_limit_s=-1)
    assert all(part in str(caught.value) for part in ("--iters", "--fov", "--time-limit"))
