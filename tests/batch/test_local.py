"""The local backend end to end on real video: two clips and two bad entries (a text file, a missing file) in one
list, two spawned workers; the bad entries fail with their errors in the summary while the clips finish; a rerun
skips everything, --retry-failed runs only the failures again, other settings are refused; a worker killed before it
records anything becomes that video's failure; the cores are split between workers."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.local import LocalProcesses, plan_workers
from avatar4d.batch.pipeline import PipelineConfig
from avatar4d.batch.run import BatchConfig, run_batch
from avatar4d.batch.workers import run_jobs
from avatar4d.environment import machine_description
from avatar4d.errors import BatchFailuresError, BatchInputError

pytestmark = pytest.mark.slow

TINY = PipelineConfig(iterations=3, image_size=32, size=128, max_seconds=1.5, lpips=False)


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory, face_video: Path) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "notes.txt").write_text("not a video\n")
    path = folder / "videos.csv"
    path.write_text(f"video,name\n{face_video},first\n{face_video},second\nnotes.txt,notes\nmissing.mp4,\n")
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, listing: Path):
    out = tmp_path_factory.mktemp("local") / "runs"
    return out, run_batch(listing, out, BatchConfig(pipeline=TINY, workers=2))


def summary_csv(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["video"]: row for row in csv.DictReader(handle)}


def test_failures_are_recorded_and_the_rest_finish(first_run):
    out, result = first_run
    assert {status.name: status.state for status in result.ran} == {
        "first": "done", "second": "done", "notes": "failed", "missing": "failed"}
    table = summary_csv(out)
    assert list(table) == ["first", "missing", "notes", "second"]
    assert table["notes"]["status"] == "failed" and table["notes"]["stage"] == "prepare"
    assert "cannot be read as a video" in table["notes"]["error"]
    assert table["missing"]["error"].endswith("missing.mp4: no such file")
    for name in ("first", "second"):
        row = table[name]
        assert row["status"] == "done" and row["error"] == "" and int(row["frames"]) == 36
        assert int(row["steps"]) == 3 and float(row["psnr"]) > 0 and float(row["background_psnr"]) > 0
        assert row["note"].startswith("subsampled: one frame in every 2")
        assert "scan:" in (out / name / "log.txt").read_text()
    markdown = (out / "summary.md").read_text()
    assert "4 videos: 2 done, 2 failed" in markdown and "failed (prepare)" in markdown
    with pytest.raises(BatchFailuresError, match="2 of 4 videos failed \\(missing, notes\\)"):
        result.check()


def test_a_rerun_skips_what_is_done_and_what_failed(first_run, listing: Path):
    out, _ = first_run
    statuses = sorted(out.glob("*/status.json"))
    before = [path.stat().st_mtime_ns for path in statuses]
    again = run_batch(listing, out, BatchConfig(pipeline=TINY, workers=2))
    assert again.ran == [] and [path.stat().st_mtime_ns for path in statuses] == before
    assert {row.video: row.status for row in again.rows} == {
        "first": "done", "missing": "failed", "notes": "failed", "second": "done"}


def test_retry_failed_runs_only_the_failures_again(first_run, listing: Path):
    out, _ = first_run
    done_status = (out / "first" / "status.json").stat().st_mtime_ns
    retried = run_batch(listing, out, BatchConfig(pipeline=TINY, workers=2, retry_failed=True))
    assert sorted(status.name for status in retried.ran) == ["missing", "notes"]
    assert all(status.state == "failed" for status in retried.ran)
    assert (out / "first" / "status.json").stat().st_mtime_ns == done_status


def test_other_settings_into_the_same_folder_are_refused(first_run, listing: Path):
    out, _ = first_run
    summary = (out / "summary.csv").read_bytes()
    with pytest.raises(BatchInputError, match="train.schedule.iterations: 3 then, 4 now"):
        run_batch(listing, out, BatchConfig(pipeline=PipelineConfig(iterations=4, image_size=32, size=128,
                                                                    max_seconds=1.5, lpips=False)))
    assert (out / "summary.csv").read_bytes() == summary


def test_a_worker_killed_before_it_records_anything_is_that_videos_failure(tmp_path: Path, face_video: Path):
    batch = BatchLayout(tmp_path)
    workers = LocalProcesses(batch, TINY, threads=1)

    def kill_at_once(job: VideoJob) -> None:
        for process in workers.processes.values():
            process.kill()

    statuses = run_jobs([VideoJob(name="victim", video=face_video)], workers, 1, batch, on_start=kill_at_once,
                        on_finish=lambda status: None)
    assert [(status.name, status.state) for status in statuses] == [("victim", "failed")]
    assert "killed by SIGKILL (out of memory?)" in statuses[0].error and "--retry-failed" in statuses[0].error


def test_the_cores_are_split_between_workers():
    cores = machine_description()["cores"]
    default = plan_workers(videos=50, config=TINY)
    assert 1 <= default.workers <= cores and default.threads == max(1, cores // default.workers)
    assert plan_workers(videos=1, config=TINY).workers == 1
    two = plan_workers(videos=5, config=TINY, workers=2)
    assert (two.workers, two.threads) == (2, max(1, cores // 2))
    assert plan_workers(videos=5, config=TINY, workers=1, threads=3).threads == 3
    assert "torch thread" in two.describe()


def test_bad_batch_options_are_refused_together():
    with pytest.raises(BatchInputError) as caught:
        BatchConfig(workers=0, shard=(2, 2), address="auto")
    assert all(part in str(caught.value) for part in ("--workers", "--shard 2/2", "--address is for --backend ray"))
