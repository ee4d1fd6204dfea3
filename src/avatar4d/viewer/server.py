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
import dataclasses
import io
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Self

import numpy as np
import torch

from avatar4d.atomic import disk_errors, write_json_atomic
from avatar4d.avatar import Avatar, load_avatar
from avatar4d.errors import Avatar4dError, DatasetError
from avatar4d.evaluation.strips import to_uint8, write_png
from avatar4d.progress import note
from avatar4d.render.renderer import render_image
from avatar4d.tracking.camera import PinholeCamera
from avatar4d.tracking.controls import CONTROL_NAMES
from avatar4d.viewer.render_queue import Rendered, RenderQueue
from avatar4d.viewer.view_state import (
    POSE_LIMITS_DEG,
    REST_CAMERA_LOOK_AT,
    REST_CAMERA_POSITION,
    REST_CAMERA_UP,
    Orbit,
    ViewState,
    compose_view,
    distance_range,
    frame_state,
    orbit_from_camera,
    resolve_state,
    rest_state,
    state_json,
    state_pose,
)

VISIBLE_COMPONENTS = 10
"""Raw components e0..e9 are shown; the rest sit in a collapsed folder."""
RESOLUTION_CHOICES = (64, 128, 256, 512)


@dataclass(frozen=True)
class ViewerConfig:
    """How the viewer renders."""

    preview_size: int = 64
    """Side of the quick picture rendered while a control moves (0: no preview)."""
    full_size: int | None = None
    """Side of the picture once the controls rest (default: the avatar's training resolution)."""
    rest_s: float = 0.3
    """Seconds without a change before the full-resolution render starts."""
    band_rays: int = 8192
    """A full render proceeds in bands of about this many rays (whole rows) and is abandoned between bands when a
    newer state comes (each band costs about what two 64 px previews cost)."""
    jpeg_quality: int = 92
    """Quality of the pictures sent to the page."""


def render_view(avatar: Avatar, camera_from_head: np.ndarray, code: np.ndarray, size: int, *,
                band_rows: int | None = None, cancelled: Callable[[], bool] = lambda: False) -> np.ndarray | None:
    """Render like :meth:`Avatar.render`, in bands of rows so that it can stop early.

    Args:
        camera_from_head: (4, 4) head pose.
        code: (K,) expression code.
        size: output side in pixels.
        band_rows: rows per band (None: the whole picture at once).
        cancelled: asked before each band; True stops the render.

    Returns:
        (size, size, 3) uint8, or None when cancelled.
    """
    if band_rows is None or band_rows >= size:
        if cancelled():
            return None
        return to_uint8(avatar.render(camera_from_head, code, size=size).rgb.reshape(size, size, 3).cpu())
    camera = avatar.camera_at(size)
    scene = avatar.scene_at(size).float()
    latent = avatar.field.mean_latent().detach() if avatar.config.field.use_latent_code else None
    pose = torch.as_tensor(camera_from_head, dtype=torch.float32)
    code_t = torch.as_tensor(code, dtype=torch.float32)
    bands = []
    for top in range(0, size, band_rows):
        if cancelled():
            return None
        rows = min(band_rows, size - top)
        # the same pixels' rays: pixel centres are at y + 0.5 in the band, so moving the principal point up by
        # ``top`` rows keeps every ray of the full picture
        band_camera = PinholeCamera(camera.fx, camera.fy, camera.cx, camera.cy - top, camera.width, rows)
        out = render_image(avatar.field, band_camera, pose, code_t, latent, scene[top:top + rows],
                           avatar.config.renderer, avatar.occupancy)
        bands.append(out.rgb.reshape(rows, size, 3).cpu())
    return to_uint8(torch.cat(bands, dim=0))


class GroundTruth:
    """The dataset's photos, when the dataset folder the avatar was trained on is still there."""

    def __init__(self, avatar: Avatar) -> None:
        self.dataset = None
        self.unavailable_reason = ""
        if avatar.dataset_path is None:
            self.unavailable_reason = "the avatar does not name its dataset folder"
            return
        from avatar4d.dataset.layout import load_dataset

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


def _range_marks(low: float, high: float) -> tuple[tuple[float, str], ...]:
    return ((low, f"{low:.2f}"), (high, f"{high:.2f}"))


def _timestamp() -> str:
    now = datetime.now()
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


class ViewerSession:
    """One browser tab: its controls, its state, and the pictures it was sent."""

    def __init__(self, viewer: AvatarViewer, client) -> None:
        self.viewer = viewer
        self.client = client
        self.avatar = viewer.avatar
        self._lock = threading.RLock()
        self.state = rest_state(self.avatar)
        self.version = 0
        self.full_size = viewer.full_size
        self.progressive = viewer.config.preview_size > 0
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
        self._build_gui()

    def start(self) -> None:
        """Ask for the first picture (once the viewer knows this session, so that it can be delivered)."""
        with self._lock:
            self._change(self.state, progressive=False)

    # --- page layout -------------------------------------------------------------------------------------------

    def _build_gui(self) -> None:
        avatar, gui = self.avatar, self.client.gui
        model = avatar.face_model
        frames = avatar.frames
        gui.configure_theme(control_width="large", show_share_button=False)
        gui.main_panel.dock_right()
        self.status = gui.add_markdown(self._status_text())
        with gui.add_folder("View"):
            sizes = sorted(set(RESOLUTION_CHOICES) | {self.full_size})
            self.resolution = gui.add_dropdown("Resolution at rest", [str(s) for s in sizes],
                                               initial_value=str(self.full_size),
                                               hint=f"pixels; the avatar was trained at {avatar.image_size}")
            self.resolution.on_update(self._on_resolution)
            preview = self.viewer.config.preview_size
            self.progressive_box = gui.add_checkbox(
                f"Preview at {preview} px while moving" if preview > 0 else "Preview while moving (off)",
                self.progressive, disabled=preview <= 0)
            self.progressive_box.on_update(self._on_progressive)
            self.orbit_box = gui.add_checkbox("Mouse turns the head", True,
                                              hint="drag: orbit (head yaw/pitch); wheel: zoom (head distance)")
            self.orbit_box.on_update(self._on_orbit_enabled)
            self.reset_button = gui.add_button("Reset", hint="mean face, mean pose, camera at rest")
            self.reset_button.on_click(lambda event: self._reset())
            self.save_png_button = gui.add_button("Save PNG", hint="the view at full resolution, into AVATAR/viewer/")
            self.save_png_button.on_click(lambda event: self._save(self._save_png))
            self.save_state_button = gui.add_button("Save state (JSON)",
                                                    hint="expression and pose for `avatar4d render --state FILE`")
            self.save_state_button.on_click(lambda event: self._save(self._save_state))
        with gui.add_folder("Head pose"):
            self.pose_sliders = {}
            for name, limit in POSE_LIMITS_DEG.items():
                slider = gui.add_slider(name, -limit, limit, 0.5, 0.0, hint="degrees, relative to the mean pose")
                slider.on_update(self._pose_handler(name, slider, limit))
                self.pose_sliders[name] = slider
        with gui.add_folder("Frames"):
            train, heldout = frames.train, frames.heldout
            last = len(frames.codes) - 1
            self.frame_slider = gui.add_slider(
                "frame", 0, max(last, 1), 1, 0, disabled=last < 1,
                hint=f"replays a frame's tracked expression and pose; training {train[0]}-{train[1] - 1}, "
                     f"held-out {heldout[0]}-{heldout[1] - 1}")
            self.frame_slider.on_update(self._on_frame)
            self.frame_text = gui.add_markdown(self._frame_text())
        with gui.add_folder("Expression"):
            self.control_sliders = []
            self._control_ranges: list[tuple[float, float]] = []
            controls = model.controls
            for i, name in enumerate(CONTROL_NAMES):
                low, high = float(controls.range_min[i]), float(controls.range_max[i])
                if not high > low:
                    high = low + 1e-3
                seen = "" if controls.seen[i] else "; barely used in the video"
                slider = gui.add_slider(name, low, high, (high - low) / 200, float(np.clip(controls.mean[i], low, high)),
                                        marks=_range_marks(low, high),
                                        hint=f"range seen in training {low:.2f}..{high:.2f}{seen}")
                slider.on_update(self._control_handler(i, slider, low, high))
                self.control_sliders.append(slider)
                self._control_ranges.append((low, high))
        num_components = len(model.code_min)
        self.component_sliders = []
        self._component_ranges = []

        def add_component(k: int) -> None:
            low, high = float(model.code_min[k]), float(model.code_max[k])
            if not high > low:
                high = low + 1e-3
            slider = gui.add_slider(f"e{k}", low, high, (high - low) / 200, float(np.clip(0.0, low, high)),
                                    marks=_range_marks(low, high),
                                    hint="raw expression component; moving it pins it (Reset unpins)")
            slider.on_update(self._component_handler(k, slider, low, high))
            self.component_sliders.append(slider)
            self._component_ranges.append((low, high))

        with gui.add_folder("Components"):
            for k in range(min(VISIBLE_COMPONENTS, num_components)):
                add_component(k)
            if num_components > VISIBLE_COMPONENTS:
                with gui.add_folder(f"e{VISIBLE_COMPONENTS}..e{num_components - 1}", expand_by_default=False):
                    for k in range(VISIBLE_COMPONENTS, num_components):
                        add_component(k)
        self.client.camera.on_update(self._on_camera)
        self.client.camera.min_orbit_distance = self.viewer.distance_range[0]
        self.client.camera.max_orbit_distance = self.viewer.distance_range[1]

    def _status_text(self) -> str:
        times = " · ".join(f"{size} px **{ms:.0f} ms**" for size, ms in sorted(self.render_ms.items()))
        shown = f"showing {self._shown.size} px" if self._shown is not None else "rendering…"
        lines = [f"**{self.avatar.root.name}** (trained at {self.avatar.image_size} px)",
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
            self.progressive = bool(self.progressive_box.value) and self.viewer.config.preview_size > 0

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
        preview = self.viewer.config.preview_size if progressive else None
        self.version = self.viewer.queue.submit(self.client.client_id, state, full_size=self.full_size,
                                                preview_size=preview)
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


class AvatarViewer:
    """A running viewer: the viser server, the avatar, one render thread, one session per open page."""

    def __init__(self, avatar: Avatar, *, host: str = "127.0.0.1", port: int = 7007,
                 config: ViewerConfig = ViewerConfig()) -> None:
        import viser

        self.avatar = avatar
        self.config = config
        self.full_size = config.full_size or avatar.image_size
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
        code = resolve_state(self.avatar, state).code
        band_rows = max(1, self.config.band_rays // size)
        return render_view(self.avatar, state_pose(self.avatar, state), code, size, band_rows=band_rows,
                           cancelled=cancelled)

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
    if config.full_size is not None and config.full_size < 1:
        from avatar4d.errors import ControlError

        raise ControlError(f"the full resolution must be a positive number of pixels, got {config.full_size}")
    return AvatarViewer(avatar, host=host, port=port, config=config)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_viewer(avatar_dir: Path, *, host: str = "127.0.0.1", port: int = 7007, preview_size: int = 64,
                 full_size: int | None = None, rest_s: float = 0.3) -> None:
    """Serve the avatar's viewer until Ctrl-C (KeyboardInterrupt), then stop it cleanly and return.

    Args:
        host: the address to listen on; the default keeps the page on this machine.
        port: the port (the next free one is taken when it is busy; the address is printed).
        preview_size: side of the quick picture while a control moves (0: none).
        full_size: side of the picture at rest (default: the training resolution; the page can change it).
        rest_s: seconds without a change before the full-resolution render.
    """
    config = ViewerConfig(preview_size=preview_size, full_size=full_size, rest_s=rest_s)
    viewer = start_viewer(avatar_dir, host=host, port=port, config=config)
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
    note("viewer stopped")
