"""One video's state in a batch, as its ``status.json`` holds it: the one record that the workers write (atomically,
at every stage) and that skipping, resuming and the summary read."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from avatar4d.atomic import write_json_atomic
from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import VideoLayout

State = Literal["pending", "running", "done", "failed"]


@dataclass
class VideoStatus:
    """Where one video of a batch stands."""

    name: str
    video: str
    """The source video's path."""
    state: State = "pending"
    stage: str | None = None
    """The stage running, or the one that failed (prepare, train, evaluate, orbit)."""
    error: str | None = None
    figures: dict[str, float | int | str] = field(default_factory=dict)
    """What the finished stages measured (frames, tracking error, training time, held-out scores, a note)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage run in the latest attempt."""
    started: str | None = None
    finished: str | None = None


def now() -> str:
    """The time, for status files (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(layout: VideoLayout) -> VideoStatus | None:
    """The video's status, or None when it has none yet (or only an unreadable one, which a rerun replaces)."""
    try:
        values = json.loads(layout.status.read_text())
        return VideoStatus(**{f.name: values[f.name] for f in dataclasses.fields(VideoStatus) if f.name in values})
    except (OSError, ValueError, TypeError):
        return None


def write_status(layout: VideoLayout, status: VideoStatus) -> None:
    write_json_atomic(layout.status, dataclasses.asdict(status))


def status_or_pending(job: VideoJob, layout: VideoLayout) -> VideoStatus:
    """The video's status, or a pending one for a video not started yet."""
    return read_status(layout) or VideoStatus(name=job.name, video=str(job.video))


def settle(job: VideoJob, layout: VideoLayout, problem: str) -> VideoStatus:
    """The final status of a video whose worker has ended: the one it wrote, or, when the worker died before
    writing one (killed, out of memory, a crash in native code), a failure recording ``problem``."""
    status = status_or_pending(job, layout)
    if status.state in ("done", "failed"):
        return status
    status.state, status.error, status.finished = "failed", problem, now()
    layout.root.mkdir(parents=True, exist_ok=True)
    write_status(layout, status)
    return status
