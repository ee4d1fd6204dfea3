"""The batch folder: the names it owns, and the marker that says a folder is one.

```
DIR/
  batch.json       marker: format, version, creation, and the settings every video is made with
  summary.csv      one row per video of the list: status, frames, tracking error, training time, held-out scores,
  summary.md       the background-plate baseline, a note (subsampling) and the error of a failed video
  NAME/            one folder per video
    status.json    running / done / failed, the stage reached, the error, the figures so far (written atomically)
    log.txt        what the video's stages printed
    dataset/       prepare's output
    avatar/        train's output (avatar.partial/ while training: a rerun resumes from its checkpoint), with
                   evaluate's metrics.json and evaluation/
    orbit.mp4      with --orbit
```

A rerun with the same folder skips finished videos and resumes the rest; a folder that holds anything else is
refused untouched, and so is a batch folder made with other settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from avatar4d.atomic import disk_errors, write_json_atomic
from avatar4d.configs import read_versioned_json
from avatar4d.environment import package_versions
from avatar4d.errors import BatchInputError, OutputError

BATCH_FORMAT = "avatar4d.batch"
BATCH_VERSION = 1
RESERVED_NAMES = frozenset({"batch.json", "summary.csv", "summary.md"})
"""Names in the batch folder that no video may take."""


@dataclass(frozen=True)
class VideoLayout:
    """Paths inside one video's folder."""

    root: Path

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def avatar(self) -> Path:
        return self.root / "avatar"

    @property
    def metrics(self) -> Path:
        return self.avatar / "metrics.json"

    @property
    def orbit(self) -> Path:
        return self.root / "orbit.mp4"


@dataclass(frozen=True)
class BatchLayout:
    """Paths inside a batch folder."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "batch.json"

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    def video(self, name: str) -> VideoLayout:
        return VideoLayout(self.root / name)


def open_batch_folder(root: Path, settings: dict) -> BatchLayout:
    """Make ``root`` a batch folder, or check that it is one made with the same ``settings``.

    Raises:
        OutputError: ``root`` is a file, or a folder that holds something other than a batch (left untouched).
        BatchInputError: ``root`` is a batch folder made with other settings.
    """
    layout = BatchLayout(Path(root))
    settings = json.loads(json.dumps(settings))
    if layout.root.exists() and not layout.root.is_dir():
        raise OutputError(f"{layout.root} is a file, not a folder; choose another --out")
    if not layout.marker.exists():
        if layout.root.exists() and any(layout.root.iterdir()):
            raise OutputError(f"{layout.root} holds other files and is not a batch folder (it has no batch.json); "
                              "nothing in it was changed: choose an empty or new --out")
        with disk_errors(layout.root):
            layout.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(layout.marker, {"format": BATCH_FORMAT, "version": BATCH_VERSION,
                                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                          "versions": package_versions(), "settings": settings})
        return layout
    header = read_versioned_json(layout.marker, kind="batch folder", format=BATCH_FORMAT, version=BATCH_VERSION,
                                 error=OutputError, remedy="choose another --out")
    stored = header.get("settings")
    if stored != settings:
        changed = "; ".join(_differences(stored, settings))
        raise BatchInputError(f"{layout.root} was started with other settings ({changed}); rerun with the same "
                              "options to continue it, or choose another --out")
    return layout


def _differences(stored: object, wanted: object, path: tuple[str, ...] = ()) -> list[str]:
    """``key: then, now`` for each leaf of two nested dicts that differs."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        return [difference for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key)
                for difference in _differences(stored.get(key), wanted.get(key), (*path, key))]
    return [f"{'.'.join(path) or 'settings'}: {stored!r} then, {wanted!r} now"]
