"""``avatar4d view``: a web page, served on localhost, where a person plays with a trained avatar.

Built on viser (its web client ships in its wheel, so the page works offline): the page's controls are viser GUI
elements, the picture is the viewport's background, and the viewport's own orbit camera drives the head (see
:mod:`avatar4d.viewer.view_state` for the mapping). Rendering runs here, on one thread for every open page
(:class:`~avatar4d.viewer.render_queue.RenderQueue`): a 64 px preview while a control moves, the full resolution once
it rests, never a backlog. Each browser tab gets its own controls and camera.

The page has:

- semantic expression sliders (jaw_open, smile, ..., range = what the video showed) and raw components (e0..e9, the
  rest in a collapsed folder; range = code_min..code_max). Moving a component pins it (it then overrides what the
  semantic sliders give it, as ``e3=1.0`` does for ``avatar4d render``); the unpinned ones follow and show the code;
- head yaw / pitch / roll sliders, and the mouse: drag to orbit, wheel to zoom;
- a frame scrubber over every dataset frame (training and held-out) that replays the frame's tracked expression and
  pose and shows its photo beside the render when the dataset folder is there (the page says so when it is not);
  the sliders then edit that frame's face until Reset;
- the render time of the last picture at each size, the resolution at rest, reset, and buttons that save the view
  (PNG) and the expression/pose (JSON for ``avatar4d render --state``) into ``AVATAR_DIR/viewer/`` and offer them
  as downloads in the page.

Values a page sends are checked: a number out of range is clamped (and the slider moved back), anything that is not a
finite number is refused (the slider returns to its last value); the server keeps serving. The HTTP side is viser's:
it serves the files of its web client only (no path outside it).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np
import viser

from avatar4d.avatar import Avatar, load_avatar
from avatar4d.images import to_uint8
from avatar4d.progress import note
from avatar4d.render.renderer import RenderCancelled
from avatar4d.validation import check_image_size
from avatar4d.viewer.render_queue import Rendered, RenderQueue
from avatar4d.viewer.session import GroundTruth, ViewerConfig, ViewerSession
from avatar4d.viewer.view_state import (
    REST_CAMERA_LOOK_AT,
    REST_CAMERA_POSITION,
    REST_CAMERA_UP,
    ViewState,
    distance_range,
    resolve_state,
    state_pose,
)


class AvatarViewer:
    """A running viewer: the viser server, the avatar, one render thread, one session per open page."""

    def __init__(self, avatar: Avatar, *, host: str = "127.0.0.1", port: int = 7007,
                 config: ViewerConfig = ViewerConfig()) -> None:
        self.avatar = avatar
        self.config = config
        self.full_size = config.full_size or avatar.native_size
        self.preview_size = config.preview_size if config.preview_size is not None else (
            0 if avatar.upsampler is not None else 64)
        """Side of the quick picture while a control moves (0: none)."""
        self.truth = GroundTruth(avatar)
        self.distance_range = distance_range(avatar)
        self._sessions: dict[int, ViewerSession] = {}
        self._lock = threading.Lock()
        self.queue = RenderQueue(self._render, self._deliver, rest_s=config.rest_s, on_error=self._render_failed)
        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: serve_viewer prints the address itself
            self.server = viser.ViserServer(host=host, port=port, label=f"avatar4d · {avatar.root.name}",
                                            verbose=False)
        self.host = host
        self.port = self.server.get_port()
        camera = self.server.initial_camera
        camera.position = REST_CAMERA_POSITION
        camera.look_at = REST_CAMERA_LOOK_AT
        camera.up = REST_CAMERA_UP
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def sessions(self) -> list[ViewerSession]:
        with self._lock:
            return list(self._sessions.values())

    def _connect(self, client) -> None:
        session = ViewerSession(self, client)
        with self._lock:
            self._sessions[client.client_id] = session
        session.start()

    def _disconnect(self, client) -> None:
        with self._lock:
            self._sessions.pop(client.client_id, None)
        self.queue.forget(client.client_id)

    def _render(self, state: ViewState, size: int, cancelled: Callable[[], bool]) -> np.ndarray | None:
        """(size, size, 3) uint8 picture of a state, or None when ``cancelled()`` stopped it."""
        code = resolve_state(self.avatar, state).code
        try:
            return to_uint8(self.avatar.render_image(state_pose(self.avatar, state), code, size, cancelled=cancelled))
        except RenderCancelled:
            return None

    def render_now(self, state: ViewState, size: int) -> np.ndarray:
        """Render a state at once (waits for the render thread's current picture)."""
        with self.queue.render_lock:
            image = self._render(state, size, lambda: False)
        assert image is not None
        return image

    def _deliver(self, client_id: int, result: Rendered) -> None:
        with self._lock:
            session = self._sessions.get(client_id)
        if session is not None:
            session.deliver(result)

    def _render_failed(self, client_id: int, error: Exception) -> None:
        with self._lock:
            session = self._sessions.get(client_id)
        if session is not None:
            session.render_failed(error)

    def stop(self) -> None:
        self.queue.stop()
        self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_viewer(avatar_dir: Path, *, host: str = "127.0.0.1", port: int = 7007,
                 config: ViewerConfig = ViewerConfig()) -> AvatarViewer:
    """Load an avatar and serve its viewer in the background; ``.stop()`` (or ``with``) ends it.

    Args:
        host: the address to listen on; 127.0.0.1 keeps the page on this machine.
        port: the port (viser takes the next free one when it is busy: see ``.port``).
    """
    avatar = load_avatar(Path(avatar_dir))
    check_image_size(config.full_size, option="--size")
    return AvatarViewer(avatar, host=host, port=port, config=config)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_viewer(avatar_dir: Path, *, host: str = "127.0.0.1", port: int = 7007, preview_size: int | None = None,
                 full_size: int | None = None, rest_s: float = 0.3) -> None:
    """Serve the avatar's viewer until Ctrl-C (KeyboardInterrupt), then stop it cleanly and return.

    Args:
        host: the address to listen on; the default keeps the page on this machine.
        port: the port (the next free one is taken when it is busy; the address is printed).
        preview_size: side of the quick picture while a control moves (0: none; None: none for an avatar with an
            upsampler, else 64 px).
        full_size: side of the picture at rest (default: the avatar's native resolution; the page can change it).
        rest_s: seconds without a change before the full-resolution render.
    """
    config = ViewerConfig(preview_size=preview_size, full_size=full_size, rest_s=rest_s)
    viewer = start_viewer(avatar_dir, host=host, port=port, config=config)
    previous = _stop_on_signals()
    try:
        if port != 0 and viewer.port != port:
            note(f"port {port} is busy; using {viewer.port}")
        if not _is_loopback(host):
            note(f"listening on {host}: anyone who can reach this address can use the viewer and save into "
                 f"{Path(avatar_dir) / 'viewer'}")
        note(f"viewer for {avatar_dir} at {viewer.url} (Ctrl-C stops it)")
        stop = threading.Event()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    note("viewer stopped")


def _stop_on_signals() -> dict[int, object]:
    """SIGINT and SIGTERM stop the viewer (as KeyboardInterrupt), even where the process was started with SIGINT
    ignored: a shell without job control starts every background command so, and Python then leaves Ctrl-C ignored
    (the cause of the Ctrl-C test's hangs in backgrounded test runs). Returns the handlers it replaced (none off the
    main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame) -> None:
        raise KeyboardInterrupt

    return {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
