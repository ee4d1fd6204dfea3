"""Errors that reach the user: each names what is wrong and what to do about it.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; library callers catch the class they care about.
"""

from __future__ import annotations


class Avatar4dError(Exception):
    """Base of every error avatar4d raises on purpose (bad input, missing files, full disk)."""

    exit_code = 1


class InputVideoError(Avatar4dError):
    """The video cannot be used: not a video, empty, truncated, no face, too short."""

    exit_code = 2


class DatasetError(Avatar4dError):
    """A prepared dataset folder is incomplete, damaged, or from an incompatible version."""

    exit_code = 3


class AvatarError(Avatar4dError):
    """An avatar folder is incomplete, damaged, or from an incompatible version."""

    exit_code = 3


class ControlError(Avatar4dError):
    """An expression or pose control that does not exist or has a value that is not a number."""

    exit_code = 2


class OutputError(Avatar4dError):
    """An output cannot be written (disk full, no permission); nothing half-written was left behind."""

    exit_code = 4


class BatchInputError(Avatar4dError):
    """A batch cannot start: its list of videos is unreadable or ambiguous (two videos for one folder), or its
    options are invalid or differ from those its output folder was started with."""

    exit_code = 2


class BackendError(Avatar4dError):
    """A batch backend is unavailable: Ray is not installed, or its cluster cannot be reached or cannot run a
    video."""

    exit_code = 5


class BatchFailuresError(Avatar4dError):
    """Some videos of a batch failed (each with its error in the summary); the others finished."""

    exit_code = 1
