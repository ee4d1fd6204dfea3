"""The batch summary: one row per video of the list from its status file (pending when it has none), the same
figures in summary.csv and summary.md, errors kept whole in the CSV and on one table line in the Markdown, and both
files written whole (no temporary file left)."""

from __future__ import annotations

import csv
from pathlib import Path

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.status import VideoStatus, write_status
from avatar4d.batch.summary import CSV_COLUMNS, collect_rows, counts, write_summary

DONE_FIGURES = {"frames": 72, "every": 2, "tracking_error_px": 1.23456, "training_s": 61.5, "steps": 180,
                "psnr": 24.3219, "face_psnr": 26.5, "ssim": 0.8421, "face_ssim": 0.85, "lpips": 0.105,
                "face_lpips": 0.2, "background_psnr": 13.14, "note": "subsampled: one frame in every 2"}


def batch_with_statuses(root: Path) -> tuple[BatchLayout, list[VideoJob]]:
    layout = BatchLayout(root)
    jobs = [VideoJob(name=name, video=Path(f"/videos/{name}.mp4")) for name in ("anna", "bad", "carl", "dora")]
    statuses = [VideoStatus(name="anna", video="/videos/anna.mp4", state="done", figures=DONE_FIGURES,
                            seconds={"prepare": 10.0, "train": 70.04, "evaluate": 5.0}),
                VideoStatus(name="bad", video="/videos/bad.mp4", state="failed", stage="prepare",
                            error="/videos/bad.mp4 cannot be read as a video | truncated\nsecond line"),
                VideoStatus(name="carl", video="/videos/carl.mp4", state="running", stage="train",
                            figures={"frames": 30, "every": 1, "tracking_error_px": 2.0}, seconds={"prepare": 4.0})]
    for status in statuses:
        layout.video(status.name).root.mkdir(parents=True)
        write_status(layout.video(status.name), status)
    return layout, jobs


def test_rows_come_from_the_status_files_and_pending_without_one(tmp_path: Path):
    layout, jobs = batch_with_statuses(tmp_path)
    rows = collect_rows(layout, jobs)
    assert [(row.video, row.status, row.stage) for row in rows] == [
        ("anna", "done", ""), ("bad", "failed", "prepare"), ("carl", "running", "train"), ("dora", "pending", "")]
    assert rows[0].wall_s == 85.0 and rows[0].note == "subsampled: one frame in every 2"
    assert rows[3].figures == {} and rows[3].source == "/videos/dora.mp4"
    assert counts(rows) == "4 videos: 1 done, 1 failed, 1 running, 1 pending"


def test_the_csv_holds_every_figure_and_the_whole_error(tmp_path: Path):
    layout, jobs = batch_with_statuses(tmp_path)
    write_summary(layout, collect_rows(layout, jobs))
    with open(layout.summary_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        table = {row["video"]: row for row in reader}
    anna = table["anna"]
    assert anna["status"] == "done" and int(anna["frames"]) == 72 and int(anna["every"]) == 2
    assert float(anna["psnr"]) == 24.3219 and float(anna["face_lpips"]) == 0.2
    assert float(anna["tracking_error_px"]) == 1.2346 and float(anna["background_psnr"]) == 13.14
    assert float(anna["wall_s"]) == 85.0 and anna["error"] == ""
    assert table["bad"]["error"] == "/videos/bad.mp4 cannot be read as a video | truncated\nsecond line"
    assert table["bad"]["psnr"] == "" and table["dora"]["status"] == "pending"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["summary.csv", "summary.md"]


def test_the_markdown_table_has_one_line_per_video(tmp_path: Path):
    layout, jobs = batch_with_statuses(tmp_path)
    write_summary(layout, collect_rows(layout, jobs))
    text = layout.summary_md.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(jobs)
    header, *rows = (line.split(" | ") for line in lines)
    assert all(len(row) == len(header) for row in rows)
    assert "| anna | done | 72 | 1.23 | 62 | 180 | 24.32 (26.50) | 0.842 (0.850) | 0.105 (0.200) | 13.14 | 85 |" in text
    assert "failed (prepare)" in text and "cannot be read as a video \\| truncated second line" in text
    assert "4 videos: 1 done, 1 failed, 1 running, 1 pending" in text
