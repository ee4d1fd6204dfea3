"""Checks of what a user asks for, shared by every stage: output paths, image sizes, finite numbers. Each raises
the project's own error naming the option and the value."""

from __future__ import annotations

import math
from pathlib import Path

from avatar4d.errors import ControlError, OutputError

MAX_IMAGE_SIZE = 4096
"""Largest output side in pixels (a 4096 px frame already takes minutes on a CPU)."""


def check_image_size(size: int | None, *, option: str = "--size") -> None:
    """Refuse a side of 0, a negative one, or one over :data:`MAX_IMAGE_SIZE` (None: the default is fine)."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ControlError(f"{option} must be a positive number of pixels, got {size}")
    if size > MAX_IMAGE_SIZE:
        raise ControlError(f"{option} {size} is larger than the {MAX_IMAGE_SIZE}-pixel limit")


def check_finite(**values: float | None) -> None:
    """Refuse values that are not finite numbers (None is allowed: not given)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ControlError(f"--{name} must be a finite number, got {value}")


def check_output_file(path: Path, suffixes: tuple[str, ...], *, what: str = "") -> Path:
    """A file to write: one of ``suffixes``, in a folder that exists, not a folder itself.

    Args:
        what: what is written (``"a reenactment video"``), for the message about a wrong suffix.

    Raises:
        OutputError: naming what is wrong with the path.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        choices = " or ".join(suffixes)
        raise OutputError(f"{path}: {what} is written as {choices}" if what else
                          f"{path}: choose a file ending in {choices}")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name ending in {' or '.join(suffixes)}")
    if not path.parent.exists():
        raise OutputError(f"{path.parent} does not exist")
    return path
