"""Driving a running viewer from a headless Chromium (Debian's, through Playwright), for its tests and benchmarks.

Playwright is a test dependency, not the package's: nothing here imports it; the functions take its objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avatar4d.viewer.server import AvatarViewer
from avatar4d.viewer.session import ViewerSession
from avatar4d.viewer.view_state import Orbit

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's `chromium` package (never a browser downloaded by Playwright)."""
CHROMIUM_ARGS = [
    # as root in a container, without a GPU, on a machine whose network is closed: without the background-networking
    # flags Chromium keeps opening connections that the network refuses
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
"""Launch arguments for ``playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)``."""


def session_ids(viewer: AvatarViewer) -> set[int]:
    """The client ids of the pages connected now."""
    return {s.client.client_id for s in viewer.sessions()}


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def wait_for_new_session(viewer: AvatarViewer, before: set[int], timeout: float = 60.0) -> ViewerSession:
    """The session of a page that connected after ``before`` (from :func:`session_ids`) was taken, once its first
    full picture of the rest view arrived.

    Raises:
        TimeoutError: no page connected, or its first picture did not arrive, within ``timeout`` seconds.
    """
    found: list[ViewerSession] = []

    def appeared() -> bool:
        found[:] = [s for s in viewer.sessions() if s.client.client_id not in before]
        return bool(found)

    _wait_until(appeared, timeout, "the page to connect")
    session = found[0]
    # a page's very first camera message may come before the rest camera is applied: wait for the rest view
    if not session.wait_for_render(lambda s: s.current_full_render() is not None and s.state.orbit.close_to(Orbit()),
                                   timeout):
        raise TimeoutError(f"no first picture of the rest view within {timeout:.0f} s")
    return session


def open_page(browser: Any, viewer: AvatarViewer, width: int = 1280, height: int = 800) -> tuple[Any, ViewerSession]:
    """A new window of a Playwright ``Browser`` on the viewer (its own context: like a second browser, no shared
    storage), and its session once the first picture arrived. Close it with ``page.context.close()``."""
    before = session_ids(viewer)
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(viewer.url)
    return page, wait_for_new_session(viewer, before)


def slider_selector(handle: Any) -> str:
    """The CSS selector of a viser slider's element on the page (viser gives it the id of its handle)."""
    return f"[id='{handle._impl.uuid}']"
