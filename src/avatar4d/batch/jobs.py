"""The videos of a batch: read from a folder or a list, named after their folders, split into shards, and
subsampled when long.

A list is a CSV file (a plain text file with one video per line is one too). Without a header, each line is one
video path. With a header row whose first column is ``video``, the other columns are per-video options::

    video,fov,every,name
    clips/anna.mp4,60,,anna
    clips/long_interview.mov,,3,
    # a comment line

Relative paths are relative to the list's folder. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from avatar4d.batch.layout import RESERVED_NAMES
from avatar4d.errors import BatchInputError
from avatar4d.video.read import VideoInfo

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"})
"""Files of an input folder that are taken as videos (others are left alone)."""

OPTION_COLUMNS = ("fov", "every", "name")
"""Per-video options a list may give, after its ``video`` column."""

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class VideoJob:
    """One video of a batch and its own options."""

    name: str
    """Its folder under the batch folder (the file's stem unless the list names it)."""
    video: Path
    fov_deg: float | None = None
    """Field of view across the video's longer side (default: the batch's)."""
    every: int | None = None
    """Keep one frame in every K (default: chosen from the batch's --max-seconds)."""
    origin: str = ""
    """Where the job comes from, for messages (``list.csv, line 3``)."""


def read_jobs(source: Path) -> list[VideoJob]:
    """The videos of a folder (files with a video suffix) or of a list file, sorted by name, with absolute paths
    (a Ray node reads them from the shared file system).

    Raises:
        BatchInputError: the source is missing, holds no video, a line of the list cannot be read, or two videos
            would write the same folder.
    """
    source = Path(source).expanduser().resolve()
    if source.is_dir():
        jobs = [VideoJob(name=folder_name(path.stem), video=path, origin=str(path))
                for path in sorted(source.iterdir())
                if path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")]
    elif source.is_file():
        jobs = _jobs_in_list(source)
    else:
        raise BatchInputError(f"{source}: no such folder of videos or list of videos")
    if not jobs:
        raise BatchInputError(f"{source} names no video (a folder needs files ending in "
                              f"{', '.join(sorted(VIDEO_SUFFIXES))}; a list needs one video per line)")
    check_names(jobs)
    return sorted(jobs, key=lambda job: job.name)


def folder_name(text: str) -> str:
    """A video's folder name: its stem with anything but letters, digits, ``.``, ``_`` and ``-`` made ``_``."""
    return _UNSAFE_NAME_CHARACTERS.sub("_", text.strip()).strip("_")


def check_names(jobs: list[VideoJob]) -> None:
    """Refuse two videos that would write the same folder (compared without case, as some file systems do), and
    names the batch folder keeps for itself."""
    seen: dict[str, VideoJob] = {}
    for job in jobs:
        if not job.name or job.name.startswith(".") or job.name in RESERVED_NAMES:
            raise BatchInputError(f"{job.origin}: {job.name!r} cannot be a video's folder name; give it another "
                                  "in a name column")
        key = job.name.casefold()
        if key in seen:
            raise BatchInputError(f"two videos would write the same folder {job.name!r}: {seen[key].origin} and "
                                  f"{job.origin}; rename one, or give each a name in a list with a header row "
                                  "video,name")
        seen[key] = job


def _jobs_in_list(path: Path) -> list[VideoJob]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise BatchInputError(f"{path} is not a list of videos: it is not UTF-8 text ({error.reason} at byte "
                              f"{error.start}); give a folder of videos or a text/CSV list") from error
    except OSError as error:
        raise BatchInputError(f"{path} cannot be read: {error.strerror}") from error
    try:
        rows = [(number, [cell.strip() for cell in cells])
                for number, cells in enumerate(csv.reader(io.StringIO(text)), start=1)]
    except csv.Error as error:
        raise BatchInputError(f"{path} is not a readable CSV list: {error}") from error
    rows = [(number, cells) for number, cells in rows if any(cells) and not cells[0].startswith("#")]
    header: list[str] | None = None
    if rows and rows[0][1][0].lower() == "video":
        header = [cell.lower() for cell in rows.pop(0)[1]]
        unknown = [column for column in header[1:] if column not in OPTION_COLUMNS]
        if unknown:
            raise BatchInputError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))}; a list's columns are "
                                  f"video, {', '.join(OPTION_COLUMNS)}")
    return [_job_from_row(path, number, cells, header) for number, cells in rows]


def _job_from_row(path: Path, number: int, cells: list[str], header: list[str] | None) -> VideoJob:
    origin = f"{path.name}, line {number}"
    if header is None and len([cell for cell in cells if cell]) > 1:
        raise BatchInputError(f"{origin} has several columns; a list with per-video options starts with a header "
                              f"row: video,{','.join(OPTION_COLUMNS)}")
    if header is not None and len(cells) > len(header):
        raise BatchInputError(f"{origin} has {len(cells)} columns, the header {len(header)}")
    values = dict(zip(header or ["video"], cells))
    if not values.get("video"):
        raise BatchInputError(f"{origin}: the video column is empty")
    video = Path(values["video"]).expanduser()
    video = video if video.is_absolute() else path.parent / video
    fov = _number(values.get("fov"), float, "fov", origin)
    every = _number(values.get("every"), int, "every", origin)
    if fov is not None and not 0 < fov < 180:
        raise BatchInputError(f"{origin}: fov must be between 0 and 180 degrees, got {fov:g}")
    if every is not None and every < 1:
        raise BatchInputError(f"{origin}: every must be 1 or more, got {every}")
    name = folder_name(values.get("name") or video.stem)
    return VideoJob(name=name, video=video, fov_deg=fov, every=every, origin=origin)


def _number(text: str | None, kind: type, column: str, origin: str) -> float | int | None:
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise BatchInputError(f"{origin}: {column} must be {noun}, got {text!r}") from None


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``: this machine takes the i-th of n shares (from 0)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise BatchInputError(f"--shard takes i/n (this machine's share i of n, from 0), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_of(jobs: list[VideoJob], index: int, count: int) -> list[VideoJob]:
    """The share ``index`` of ``count``: every count-th video of the list sorted by name, from the index-th. Machines
    given the same list and different indices take disjoint shares that together cover it."""
    if count < 1 or not 0 <= index < count:
        raise BatchInputError(f"--shard {index}/{count}: the share must be from 0 to {count - 1} of {count}")
    return sorted(jobs, key=lambda job: job.name)[index::count]


def choose_every(info: VideoInfo, max_seconds: float) -> int:
    """1 for a video up to ``max_seconds`` long, else the smallest K for which one frame in every K keeps at most
    ``max_seconds`` of the video's frames (0: never subsample)."""
    seconds = info.frame_count / info.fps if info.frame_count and info.fps else info.duration_s
    if max_seconds <= 0 or seconds <= max_seconds:
        return 1
    return math.ceil(seconds / max_seconds - 1e-9)
