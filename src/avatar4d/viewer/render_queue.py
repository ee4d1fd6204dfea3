"""One render thread for every open page, rendering only what is still wanted.

Each page (key) has at most one waiting request: a new one replaces it, so a burst of slider events never builds a
backlog (the latest state is rendered, the ones in between are skipped). A request is first rendered small (the
preview, at once) and then at full resolution once no newer request has arrived for ``rest_s`` seconds. A full
render in progress is abandoned between bands of rows as soon as a newer request for the same page arrives.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from avatar4d.progress import note

RenderFn = Callable[[Any, int, Callable[[], bool]], "np.ndarray | None"]
"""``render(request, size, cancelled)`` -> (size, size, 3) uint8, or None when ``cancelled()`` said to stop."""


@dataclass(frozen=True)
class Rendered:
    """A finished picture, handed to the page it was for."""

    version: int
    """Increases with every request of a page; a picture never replaces one of a newer version."""
    request: Any
    size: int
    image: np.ndarray
    """(size, size, 3) uint8."""
    seconds: float
    """Render time of this picture."""
    full: bool
    """False for the quick preview."""


DeliverFn = Callable[[Hashable, Rendered], None]


@dataclass
class _Pending:
    request: Any
    version: int
    full_size: int
    preview_size: int | None
    """Still to render first, or None (taken, or not wanted)."""
    full_due: float
    """time.monotonic() at which the full render may start."""
    full_taken: bool = False


class RenderQueue:
    """Latest-request-only, preview-then-full rendering on one background thread (see the module docstring)."""

    def __init__(self, render: RenderFn, deliver: DeliverFn, *, rest_s: float = 0.3,
                 on_error: Callable[[Hashable, Exception], None] | None = None) -> None:
        self._render = render
        self._deliver = deliver
        self._on_error = on_error
        self.rest_s = rest_s
        self._cond = threading.Condition()
        self._pending: dict[Hashable, _Pending] = {}
        self._versions = itertools.count(1)
        self._stopped = False
        self.render_lock = threading.Lock()
        """Held while a picture renders (others who render, e.g. a save button, take it too)."""
        self._thread = threading.Thread(target=self._run, name="avatar4d-viewer-render", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, request: Any, *, full_size: int, preview_size: int | None = None) -> int:
        """Ask for ``request`` to be rendered for ``key``, replacing whatever it was still waiting for.

        Args:
            full_size: side of the final picture.
            preview_size: side of a quick picture rendered first (None or >= full_size: none; the full render then
                starts at once).

        Returns:
            The request's version.
        """
        now = time.monotonic()
        with self._cond:
            version = next(self._versions)
            if preview_size is not None and preview_size < full_size:
                pending = _Pending(request, version, full_size, preview_size, now + self.rest_s)
            else:
                pending = _Pending(request, version, full_size, None, now)
            self._pending[key] = pending
            self._cond.notify_all()
            return version

    def forget(self, key: Hashable) -> None:
        """Drop a page's waiting request (the page has closed); a render in progress for it is abandoned."""
        with self._cond:
            self._pending.pop(key, None)
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _choose(self, now: float) -> tuple[tuple[Hashable, _Pending, int, bool] | None, float | None]:
        """The next (key, pending, size, full) to render, or None and how long to wait (None: until notified).
        Previews go first (oldest request first), then full renders that are due."""
        previews = [(p.version, key, p) for key, p in self._pending.items() if p.preview_size is not None]
        if previews:
            _, key, pending = min(previews, key=lambda item: item[0])
            return (key, pending, pending.preview_size, False), None
        fulls = [(p.full_due, p.version, key, p) for key, p in self._pending.items() if not p.full_taken]
        if not fulls:
            return None, None
        due, _, key, pending = min(fulls, key=lambda item: item[:2])
        if due <= now:
            return (key, pending, pending.full_size, True), None
        return None, due - now

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    choice, wait = self._choose(time.monotonic())
                    if choice is not None:
                        break
                    self._cond.wait(wait)
                key, pending, size, full = choice
                if full:
                    pending.full_taken = True
                else:
                    pending.preview_size = None
                    if pending.full_size <= size:
                        pending.full_taken = True

            def cancelled(key: Hashable = key, pending: _Pending = pending) -> bool:
                return self._stopped or self._pending.get(key) is not pending

            start = time.perf_counter()
            try:
                with self.render_lock:
                    image = self._render(pending.request, size, cancelled)
            except Exception as error:  # noqa: BLE001 (a failed render must not end the thread serving every page)
                note(f"viewer: rendering failed: {error}")
                if self._on_error is not None:
                    self._on_error(key, error)
                continue
            if image is None:
                continue
            result = Rendered(pending.version, pending.request, size, image, time.perf_counter() - start, full)
            try:
                self._deliver(key, result)
            except Exception as error:  # noqa: BLE001 (e.g. the page closed while its picture was being sent)
                note(f"viewer: a picture could not be sent: {error}")
