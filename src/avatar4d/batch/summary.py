"""The batch summary: one row per video of the list, as ``summary.csv`` and ``summary.md``, rebuilt from the videos'
status files and written atomically (so it is always whole, and as current as the last video that finished)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass

from avatar4d.atomic import write_bytes_atomic
from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.status import VideoStatus, now, status_or_pending

FIGURES = ("frames", "every", "tracking_error_px", "training_s", "steps", "psnr", "face_psnr", "ssim", "face_ssim",
           "lpips", "face_lpips", "background_psnr")
"""The measured columns, in order (from the status files' figures)."""
CSV_COLUMNS = ("video", "status", "stage", *FIGURES, "wall_s", "note", "error", "source")


@dataclass(frozen=True)
class SummaryRow:
    """One video's line of the summary."""

    video: str
    status: str
    stage: str
    """The stage that failed or is running (empty when done or pending)."""
    figures: dict[str, float | int | str]
    wall_s: float | None
    """Wall time of the stages run in the latest attempt (skipped stages count nothing)."""
    note: str
    error: str
    source: str

    def cells(self) -> dict[str, object]:
        """The row as CSV cells, keyed by :data:`CSV_COLUMNS`; unknown figures are empty."""
        values = {"video": self.video, "status": self.status, "stage": self.stage, "wall_s": self.wall_s,
                  "note": self.note, "error": self.error, "source": self.source}
        values.update({key: self.figures.get(key) for key in FIGURES})
        return {key: "" if values[key] is None else _plain(values[key]) for key in CSV_COLUMNS}


def row_of(status: VideoStatus) -> SummaryRow:
    return SummaryRow(video=status.name, status=status.state,
                      stage=(status.stage or "") if status.state in ("running", "failed") else "",
                      figures={k: v for k, v in status.figures.items() if k in FIGURES},
                      wall_s=round(sum(status.seconds.values()), 1) if status.seconds else None,
                      note=str(status.figures.get("note", "")), error=status.error or "", source=status.video)


def collect_rows(layout: BatchLayout, jobs: list[VideoJob]) -> list[SummaryRow]:
    """The summary rows of ``jobs`` (the whole list, every shard's), from their status files."""
    return [row_of(status_or_pending(job, layout.video(job.name))) for job in jobs]


def write_summary(layout: BatchLayout, rows: list[SummaryRow]) -> None:
    """Write ``summary.csv`` and ``summary.md`` atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.cells() for row in rows)
    write_bytes_atomic(layout.summary_csv, text.getvalue().encode())
    write_bytes_atomic(layout.summary_md, markdown(rows).encode())


def counts(rows: list[SummaryRow]) -> str:
    """``5 videos: 3 done, 1 failed, 1 pending``."""
    tally = Counter(row.status for row in rows)
    parts = [f"{tally[state]} {state}" for state in ("done", "failed", "running", "pending") if tally[state]]
    return f"{len(rows)} video{'s' if len(rows) != 1 else ''}: {', '.join(parts)}"


def markdown(rows: list[SummaryRow]) -> str:
    """The summary as a Markdown table, with a line of counts above it."""
    lines = ["# Batch summary", "", f"{counts(rows)} (updated {now()}). Held-out scores: whole image (face region); "
             "background plate: the do-nothing baseline's PSNR.", "",
             "| video | status | frames | tracking error (px) | training (s) | steps | PSNR (face) | SSIM (face) | "
             "LPIPS (face) | background plate PSNR | wall (s) | note / error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        f = row.figures
        status = f"{row.status} ({row.stage})" if row.stage else row.status
        message = "; ".join(part for part in (row.note, row.error) if part)
        cells = [row.video, status, _number(f.get("frames"), 0), _number(f.get("tracking_error_px"), 2),
                 _number(f.get("training_s"), 0), _number(f.get("steps"), 0),
                 _pair(f, "psnr", 2), _pair(f, "ssim", 3), _pair(f, "lpips", 3),
                 _number(f.get("background_psnr"), 2), _number(row.wall_s, 0), message]
        lines.append("| " + " | ".join(_escape(str(cell)) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _pair(figures: dict, key: str, digits: int) -> str:
    whole = _number(figures.get(key), digits)
    face = figures.get(f"face_{key}")
    return whole if face is None else f"{whole} ({_number(face, digits)})"


def _number(value: object, digits: int) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def _plain(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
