"""A video's status file: written whole and read back; missing or unreadable reads as none; a worker that ended
without a final status is settled as a failure that says why, and a final status is kept as it is."""

from __future__ import annotations

from pathlib import Path

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import VideoLayout
from avatar4d.batch.status import VideoStatus, read_status, settle, status_or_pending, write_status

JOB = VideoJob(name="anna", video=Path("/videos/anna.mp4"))


def test_a_status_reads_back_as_written(tmp_path: Path):
    layout = VideoLayout(tmp_path)
    status = VideoStatus(name="anna", video="/videos/anna.mp4", state="running", stage="train",
                         figures={"frames": 72, "note": "x"}, seconds={"prepare": 3.5}, started="t0")
    write_status(layout, status)
    assert read_status(layout) == status
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_no_status_or_an_unreadable_one_is_pending(tmp_path: Path):
    layout = VideoLayout(tmp_path)
    assert read_status(layout) is None
    layout.status.write_text("{ half a fi")
    assert read_status(layout) is None
    assert status_or_pending(JOB, layout) == VideoStatus(name="anna", video="/videos/anna.mp4", state="pending")


def test_a_worker_that_left_its_video_running_is_settled_as_failed(tmp_path: Path):
    layout = VideoLayout(tmp_path)
    write_status(layout, VideoStatus(name="anna", video="/videos/anna.mp4", state="running", stage="train"))
    settled = settle(JOB, layout, "killed by SIGKILL")
    assert (settled.state, settled.stage, settled.error) == ("failed", "train", "killed by SIGKILL")
    assert read_status(layout) == settled


def test_a_final_status_is_kept(tmp_path: Path):
    layout = VideoLayout(tmp_path)
    done = VideoStatus(name="anna", video="/videos/anna.mp4", state="done", figures={"psnr": 30.0})
    write_status(layout, done)
    assert settle(JOB, layout, "should not be recorded") == done
    assert read_status(layout) == done
