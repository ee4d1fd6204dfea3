"""One browser tab of the viewer: its controls, its state, the pictures it was sent, and saving them."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from avatar4d.atomic import disk_errors, write_json_atomic
from avatar4d.avatar import Avatar
from avatar4d.dataset.layout import load_dataset
from avatar4d.errors import Avatar4dError, DatasetError
from avatar4d.images import write_png
from avatar4d.viewer.panel import build_panel
from avatar4d.viewer.render_queue import Rendered, RenderQueue
from avatar4d.viewer.view_state import (
    POSE_LIMITS_DEG,
    REST_CAMERA_LOOK_AT,
    REST_CAMERA_POSITION,
    REST_CAMERA_UP,
    Orbit,
    ViewState,
    compose_view,
    frame_state,
    orbit_from_camera,
    resolve_state,
    rest_state,
    state_json,
)


@dataclass(frozen=True)
class ViewerConfig:
    """How the viewer renders."""

    preview_size: int | None = None
    """Side of the quick picture rendered while a control moves (0: no preview; None: none for an avatar with an
    upsampler, which renders its full resolution while a control moves, else 64 px)."""
    full_size: int | None = None
    """Side of the picture once the controls rest (default: the avatar's native resolution)."""
    rest_s: float = 0.3
    """Seconds without a change before the full-resolution render starts."""
    jpeg_quality: int = 92
    """Quality of the pictures sent to the page."""


class GroundTruth:
    """The dataset's photos, when the dataset folder the avatar was trained on is still there."""

    def __init__(self, avatar: Avatar) -> None:
        self.dataset = None
        self.unavailable_reason = ""
        if avatar.dataset_path is None:
            self.unavailable_reason = "the avatar does not name its dataset folder"
            return
        try:
            self.dataset = load_dataset(avatar.dataset_path)
        except DatasetError as error:
            self.unavailable_reason = f"the dataset folder cannot be read ({error})"

    @property
    def available(self) -> bool:
        return self.dataset is not None

    def photo(self, index: int) -> np.ndarray | None:
        """(S, S, 3) uint8 RGB, or None (no dataset, or the frame's file is unreadable)."""
        if self.dataset is None:
            return None
        try:
            return self.dataset.load_frame(index)
        except DatasetError:
            return None


class SessionListener(Protocol):
    """Hears of a session's requests and of the pictures sent to its page, for benchmarks and scripts that time the
    viewer. Called with the session's lock held (a picture on the render thread): it must return quickly."""

    def requested(self, version: int, state: ViewState) -> None:
        """A picture of ``state`` was asked for (a control moved, the camera turned); ``version`` is the request's."""

    def sent(self, result: Rendered) -> None:
        """``result`` was handed to the page (after its JPEG was encoded and queued on the websocket)."""


class ViewerHost(Protocol):
    """What a session needs of the running viewer."""

    avatar: Avatar
    config: ViewerConfig
    full_size: int
    truth: GroundTruth
    distance_range: tuple[float, float]
    queue: RenderQueue

    def render_now(self, state: ViewState, size: int) -> np.ndarray:
        """Render a state at once."""


def _timestamp() -> str:
    now = datetime.now()
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


class ViewerSession:
    """One browser tab: its controls, its state, and the pictures it was sent."""

    def __init__(self, viewer: ViewerHost, client) -> None:
        self.viewer = viewer
        self.client = client
        self.avatar = viewer.avatar
        self._lock = threading.RLock()
        self.state = rest_state(self.avatar)
        self.version = 0
        self.full_size = viewer.full_size
        self.progressive = viewer.preview_size > 0
        self.orbit_enabled = True
        self._aspect = self._camera_aspect() or 16 / 9
        self._shown: Rendered | None = None
        self.picture: np.ndarray | None = None
        """The last picture sent to the page's viewport (render, photo, padding)."""
        self.latest_full: Rendered | None = None
        self.render_ms: dict[int, float] = {}
        self._rendered = threading.Condition()
        self._message = ""
        self._frame_text_shown = ""
        self._listeners: list[SessionListener] = []
        build_panel(self)

    def start(self) -> None:
        """Ask for the first picture (once the viewer knows this session, so that it can be delivered)."""
        with self._lock:
            self._change(self.state, progressive=False)

    def listen(self, listener: SessionListener) -> None:
        """Tell ``listener`` of every later request and picture sent (see :class:`SessionListener`)."""
        with self._lock:
            self._listeners.append(listener)

    # --- page layout -------------------------------------------------------------------------------------------

    def _status_text(self) -> str:
        times = " · ".join(f"{size} px **{ms:.0f} ms**" for size, ms in sorted(self.render_ms.items()))
        shown = f"showing {self._shown.size} px" if self._shown is not None else "rendering…"
        lines = [f"**{self.avatar.root.name}** (renders at {self.avatar.native_size} px)",
                 f"Frame time: {times or '—'} · {shown}"]
        if self._message:
            lines.append(self._message)
        return "\n\n".join(lines)

    def _frame_text(self) -> str:
        state = self.state
        truth = self.viewer.truth
        if not truth.available:
            photo = f"Ground truth not shown: {truth.unavailable_reason}."
        else:
            photo = "The frame's photo is shown to the right of the render."
        if state.frame is None:
            return f"No frame replayed (mean face, mean pose). {photo}"
        split = "held-out" if self.avatar.frames.heldout[0] <= state.frame < self.avatar.frames.heldout[1] \
            else "training"
        return (f"Replaying frame {state.frame} ({split}); the sliders now edit this frame's face (Reset: the mean "
                f"face). {photo}")

    # --- checking what a page sends ------------------------------------------------------------------------------

    def _checked(self, handle, low: float, high: float, previous: float) -> float | None:
        """The handle's new value clamped to [low, high], or None (refused: not a finite number; the slider goes
        back to ``previous``)."""
        value = handle.value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            self._message = f"Refused {handle.label} = {value!r}: not a finite number."
            handle.value = previous
            self._update_status()
            return None
        self._message = ""
        if not low <= number <= high:
            clamped = float(np.clip(number, low, high))
            self._message = f"{handle.label} = {number:g} clamped to {clamped:.3g} (range {low:.3g}..{high:.3g})."
            handle.value = type(handle.value)(clamped) if isinstance(handle.value, (int, float)) else clamped
            return clamped
        return number

    # --- event handlers (viser calls them on its thread pool; ``event.client`` is None for our own updates) ------

    def _slider_handler(self, handle, low: float, high: float, current: Callable[[ViewState], float],
                        apply: Callable[[ViewState, float], ViewState]):
        """An ``on_update`` for a slider: its value checked (clamped to [low, high] or refused, back to
        ``current(state)``), then ``apply(state, value)`` is the new state."""
        def on_update(event) -> None:
            if event.client is None:
                return
            with self._lock:
                value = self._checked(handle, low, high, current(self.state))
                if value is not None:
                    self._change(apply(self.state, value))
        return on_update

    def _control_handler(self, index: int, handle, low: float, high: float):
        return self._slider_handler(handle, low, high, lambda state: state.controls[index],
                                    lambda state, value: state.with_control(index, value))

    def _component_handler(self, k: int, handle, low: float, high: float):
        return self._slider_handler(handle, low, high,
                                    lambda state: float(resolve_state(self.avatar, state).code[k]),
                                    lambda state, value: state.with_component(k, value))

    def _pose_handler(self, name: str, handle, limit: float):
        def turned(state: ViewState, value: float) -> ViewState:
            return dataclasses.replace(state, rotation=dataclasses.replace(state.rotation, **{name: value}))

        return self._slider_handler(handle, -limit, limit, lambda state: getattr(state.rotation, name), turned)

    def _on_frame(self, event) -> None:
        if event.client is None:
            return
        with self._lock:
            last = len(self.avatar.frames.codes) - 1
            previous = self.state.frame if self.state.frame is not None else 0
            value = self._checked(self.frame_slider, 0, last, previous)
            if value is None:
                return
            index = round(value)
            self._reset_camera()
            self._change(frame_state(self.avatar, index))
            self._show_sliders()

    def _on_resolution(self, event) -> None:
        if event.client is None:
            return
        with self._lock:
            try:
                size = int(self.resolution.value)
            except (TypeError, ValueError):
                size = -1
            if str(size) not in self.resolution.options:
                self._message = f"Refused resolution {self.resolution.value!r}: choose one of the list."
                self.resolution.value = str(self.full_size)
                self._update_status()
                return
            self.full_size = size
            self._change(self.state, progressive=False)

    def _on_progressive(self, event) -> None:
        if event.client is None:
            return
        with self._lock:
            self.progressive = bool(self.progressive_box.value) and self.viewer.preview_size > 0

    def _on_orbit_enabled(self, event) -> None:
        if event.client is None:
            return
        with self._lock:
            self.orbit_enabled = bool(self.orbit_box.value)
            orbit = self._camera_orbit() if self.orbit_enabled else Orbit()
            if orbit is not None:
                self._change(dataclasses.replace(self.state, orbit=orbit))

    def _camera_aspect(self) -> float | None:
        """The viewport's width / height as the page reports it, or None when that is not a usable number."""
        try:
            aspect = float(self.client.camera.image_width) / float(self.client.camera.image_height)
        except (AssertionError, AttributeError, TypeError, ValueError, ZeroDivisionError):
            return None
        return aspect if math.isfinite(aspect) and aspect > 0 else None

    def _camera_orbit(self) -> Orbit | None:
        try:
            camera = self.client.camera
            return orbit_from_camera(np.asarray(camera.position, dtype=np.float64),
                                     np.asarray(camera.look_at, dtype=np.float64),
                                     distance_range=self.viewer.distance_range)
        except (AssertionError, TypeError, ValueError):  # no camera message yet, or values that are not numbers
            return None

    def _on_camera(self, camera) -> None:
        with self._lock:
            aspect = self._camera_aspect()
            if aspect is not None and abs(aspect - self._aspect) > 0.01 * self._aspect:
                self._aspect = aspect
                if self._shown is not None:
                    self._send_picture(self._shown)
            if not self.orbit_enabled:
                return
            orbit = self._camera_orbit()
            if orbit is not None and not orbit.close_to(self.state.orbit):
                self._change(dataclasses.replace(self.state, orbit=orbit))

    def _reset(self) -> None:
        with self._lock:
            self._message = ""
            self._reset_camera()
            self._change(rest_state(self.avatar))
            self._show_sliders()

    def _reset_camera(self) -> None:
        camera = self.client.camera
        try:
            camera.position = REST_CAMERA_POSITION
            camera.look_at = REST_CAMERA_LOOK_AT
            camera.up_direction = REST_CAMERA_UP
        except (AssertionError, ValueError):  # the page has not sent a usable camera yet; its next one will do
            pass

    # --- state -> render -> page ---------------------------------------------------------------------------------

    def _change(self, state: ViewState, *, progressive: bool | None = None) -> None:
        """Make ``state`` current and ask for its picture (the caller holds the lock)."""
        progressive = self.progressive if progressive is None else progressive
        self.state = state
        preview = self.viewer.preview_size if progressive else None
        self.version = self.viewer.queue.submit(self.client.client_id, state, full_size=self.full_size,
                                                preview_size=preview)
        for listener in self._listeners:
            listener.requested(self.version, state)
        self._show_components()
        text = self._frame_text()
        if text != self._frame_text_shown:
            self._frame_text_shown = text
            self.frame_text.content = text

    def _show_components(self) -> None:
        """Unpinned component sliders follow the code the semantic sliders give."""
        code = resolve_state(self.avatar, self.state).code
        pinned = dict(self.state.components)
        for k, slider in enumerate(self.component_sliders):
            if k not in pinned:
                low, high = self._component_ranges[k]
                slider.value = float(np.clip(round(float(code[k]), 4), low, high))

    def _show_sliders(self) -> None:
        """All sliders show the state (after a reset or a replayed frame)."""
        state = self.state
        for slider, (low, high), value in zip(self.control_sliders, self._control_ranges, state.controls):
            slider.value = float(np.clip(value, low, high))
        for name, slider in self.pose_sliders.items():
            limit = POSE_LIMITS_DEG[name]
            slider.value = float(np.clip(getattr(state.rotation, name), -limit, limit))
        code = resolve_state(self.avatar, state).code
        for k, slider in enumerate(self.component_sliders):
            low, high = self._component_ranges[k]
            slider.value = float(np.clip(code[k], low, high))
        if state.frame is not None:
            self.frame_slider.value = state.frame

    def deliver(self, result: Rendered) -> None:
        """Show a finished picture unless a newer one is already on the page (called by the render thread)."""
        with self._lock:
            shown = self._shown
            if shown is not None and (result.version < shown.version
                                      or (result.version == shown.version and shown.full and not result.full)):
                return
            self._shown = result
            self.render_ms[result.size] = result.seconds * 1000
            if result.full:
                self.latest_full = result
            self._send_picture(result)
            self._update_status()
            for listener in self._listeners:
                listener.sent(result)
        with self._rendered:
            self._rendered.notify_all()

    def _send_picture(self, result: Rendered) -> None:
        state: ViewState = result.request
        truth = self.viewer.truth.photo(state.frame) if state.frame is not None else None
        labels = ("render", f"ground truth, frame {state.frame}") if truth is not None else None
        display = max(result.size, self.full_size, 256)
        picture = compose_view(result.image, display, self._aspect, truth=truth, labels=labels)
        self.picture = picture
        self.client.scene.set_background_image(picture, format="jpeg",
                                               jpeg_quality=self.viewer.config.jpeg_quality)

    def _update_status(self) -> None:
        self.status.content = self._status_text()

    def render_failed(self, error: Exception) -> None:
        with self._lock:
            self._message = f"Rendering failed: {error}"
            self._update_status()

    def wait_for_render(self, predicate: Callable[[ViewerSession], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds after a picture arrives (or now); False on timeout. For tests and
        scripts that drive the page."""
        deadline = time.monotonic() + timeout
        with self._rendered:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._rendered.wait(min(left, 0.2))
        return True

    def current_full_render(self) -> Rendered | None:
        """The full-resolution picture of the current state, once it has arrived."""
        with self._lock:
            full = self.latest_full
            if full is not None and full.version == self.version and full.size == self.full_size:
                return full
            return None

    # --- saving --------------------------------------------------------------------------------------------------

    def _save(self, save: Callable[[], Path]) -> None:
        try:
            path = save()
        except Avatar4dError as error:
            self.client.add_notification("Not saved", str(error), color="red", auto_close_seconds=10)
            return
        self.client.add_notification("Saved", str(path), auto_close_seconds=8)
        self.client.send_file_download(path.name, path.read_bytes())

    def _viewer_dir(self) -> Path:
        folder = self.avatar.root / "viewer"
        with disk_errors(folder):
            folder.mkdir(exist_ok=True)
        return folder

    def _save_png(self) -> Path:
        with self._lock:
            state, size = self.state, self.full_size
            full = self.current_full_render()
        if full is not None:
            image = full.image
        else:
            image = self.viewer.render_now(state, size)
        path = self._viewer_dir() / f"view-{_timestamp()}.png"
        with disk_errors(path):
            write_png(path, image)
        return path

    def _save_state(self) -> Path:
        with self._lock:
            state = self.state
        path = self._viewer_dir() / f"state-{_timestamp()}.json"
        write_json_atomic(path, state_json(self.avatar, state))
        return path
