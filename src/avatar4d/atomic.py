"""Outputs appear complete or not at all: write beside the target, then rename over it.

A killed job leaves a ``*.partial`` sibling (which the next run removes or resumes from), never a target that looks
complete but is not. A full disk becomes an :class:`OutputError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avatar4d.errors import OutputError


def partial_path(target: Path) -> Path:
    """The temporary sibling a target is built in: ``out/`` -> ``out.partial/``."""
    return target.with_name(target.name + ".partial")


@contextlib.contextmanager
def disk_errors(what: Path) -> Iterator[None]:
    """Turn a full disk or a permission problem into an :class:`OutputError` that names ``what``."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(f"the disk is full while writing {what}; free some space and run again") from error
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"cannot write {what}: {error.strerror}") from error
        raise


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = True, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a fresh ``target.partial/`` folder to fill; on success it replaces ``target`` in one rename.

    Args:
        target: the folder the caller wants to exist when this returns.
        overwrite: replace an existing ``target``; if False an existing one raises :class:`OutputError`.
        keep_partial: reuse a ``.partial`` folder left by a killed run (for resumable stages) instead of
            starting empty.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists; choose another --out or remove it")
    work = partial_path(target)
    if work.exists() and not keep_partial:
        shutil.rmtree(work)
    with disk_errors(work):
        work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException:
        if not keep_partial:
            shutil.rmtree(work, ignore_errors=True)
        raise
    with disk_errors(target):
        if target.exists():
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(work, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, target)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with disk_errors(path):
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write (by any library); it is renamed to ``path`` on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        with disk_errors(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
