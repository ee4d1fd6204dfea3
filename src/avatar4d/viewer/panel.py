"""The viewer page's controls (viser GUI elements) for one session, wired to the session's handlers."""

from __future__ import annotations

import numpy as np

from avatar4d.tracking.controls import CONTROL_NAMES
from avatar4d.viewer.view_state import POSE_LIMITS_DEG

VISIBLE_COMPONENTS = 10
"""Raw components e0..e9 are shown; the rest sit in a collapsed folder."""
RESOLUTION_CHOICES = (64, 128, 256, 512)


def range_marks(low: float, high: float) -> tuple[tuple[float, str], ...]:
    return ((low, f"{low:.2f}"), (high, f"{high:.2f}"))


def build_panel(session) -> None:
    """Add the page's folders (view, head pose, frames, expression, components) to ``session.client.gui``; the
    handles are kept on the session, which reads and moves them."""
    gui = session.client.gui
    gui.configure_theme(control_width="large", show_share_button=False)
    gui.main_panel.dock_right()
    session.status = gui.add_markdown(session._status_text())
    _add_view_folder(session, gui)
    _add_pose_folder(session, gui)
    _add_frames_folder(session, gui)
    _add_expression_folder(session, gui)
    _add_component_folder(session, gui)
    session.client.camera.on_update(session._on_camera)
    session.client.camera.min_orbit_distance = session.viewer.distance_range[0]
    session.client.camera.max_orbit_distance = session.viewer.distance_range[1]


def _add_view_folder(session, gui) -> None:
    avatar = session.avatar
    with gui.add_folder("View"):
        sizes = sorted(set(RESOLUTION_CHOICES) | {session.full_size})
        session.resolution = gui.add_dropdown("Resolution at rest", [str(s) for s in sizes],
                                              initial_value=str(session.full_size),
                                              hint=f"pixels; the avatar renders at {avatar.native_size}")
        session.resolution.on_update(session._on_resolution)
        preview = session.viewer.preview_size
        session.progressive_box = gui.add_checkbox(
            f"Preview at {preview} px while moving" if preview > 0 else "Preview while moving (off)",
            session.progressive, disabled=preview <= 0)
        session.progressive_box.on_update(session._on_progressive)
        session.orbit_box = gui.add_checkbox("Mouse turns the head", True,
                                             hint="drag: orbit (head yaw/pitch); wheel: zoom (head distance)")
        session.orbit_box.on_update(session._on_orbit_enabled)
        session.reset_button = gui.add_button("Reset", hint="mean face, mean pose, camera at rest")
        session.reset_button.on_click(lambda event: session._reset())
        session.save_png_button = gui.add_button("Save PNG", hint="the view at full resolution, into AVATAR/viewer/")
        session.save_png_button.on_click(lambda event: session._save(session._save_png))
        session.save_state_button = gui.add_button("Save state (JSON)",
                                                   hint="expression and pose for `avatar4d render --state FILE`")
        session.save_state_button.on_click(lambda event: session._save(session._save_state))


def _add_pose_folder(session, gui) -> None:
    with gui.add_folder("Head pose"):
        session.pose_sliders = {}
        for name, limit in POSE_LIMITS_DEG.items():
            slider = gui.add_slider(name, -limit, limit, 0.5, 0.0, hint="degrees, relative to the mean pose")
            slider.on_update(session._pose_handler(name, slider, limit))
            session.pose_sliders[name] = slider


def _add_frames_folder(session, gui) -> None:
    frames = session.avatar.frames
    with gui.add_folder("Frames"):
        train, heldout = frames.train, frames.heldout
        last = len(frames.codes) - 1
        session.frame_slider = gui.add_slider(
            "frame", 0, max(last, 1), 1, 0, disabled=last < 1,
            hint=f"replays a frame's tracked expression and pose; training {train[0]}-{train[1] - 1}, "
                 f"held-out {heldout[0]}-{heldout[1] - 1}")
        session.frame_slider.on_update(session._on_frame)
        session.frame_text = gui.add_markdown(session._frame_text())


def _add_expression_folder(session, gui) -> None:
    model = session.avatar.face_model
    with gui.add_folder("Expression"):
        session.control_sliders = []
        session._control_ranges: list[tuple[float, float]] = []
        controls = model.controls
        for i, name in enumerate(CONTROL_NAMES):
            low, high = float(controls.range_min[i]), float(controls.range_max[i])
            if not high > low:
                high = low + 1e-3
            seen = "" if controls.seen[i] else "; barely used in the video"
            slider = gui.add_slider(name, low, high, (high - low) / 200, float(np.clip(controls.mean[i], low, high)),
                                    marks=range_marks(low, high),
                                    hint=f"range seen in training {low:.2f}..{high:.2f}{seen}")
            slider.on_update(session._control_handler(i, slider, low, high))
            session.control_sliders.append(slider)
            session._control_ranges.append((low, high))


def _add_component_folder(session, gui) -> None:
    model = session.avatar.face_model
    num_components = len(model.code_min)
    session.component_sliders = []
    session._component_ranges = []

    def add_component(k: int) -> None:
        low, high = float(model.code_min[k]), float(model.code_max[k])
        if not high > low:
            high = low + 1e-3
        slider = gui.add_slider(f"e{k}", low, high, (high - low) / 200, float(np.clip(0.0, low, high)),
                                marks=range_marks(low, high),
                                hint="raw expression component; moving it pins it (Reset unpins)")
        slider.on_update(session._component_handler(k, slider, low, high))
        session.component_sliders.append(slider)
        session._component_ranges.append((low, high))

    with gui.add_folder("Components"):
        for k in range(min(VISIBLE_COMPONENTS, num_components)):
            add_component(k)
        if num_components > VISIBLE_COMPONENTS:
            with gui.add_folder(f"e{VISIBLE_COMPONENTS}..e{num_components - 1}", expand_by_default=False):
                for k in range(VISIBLE_COMPONENTS, num_components):
                    add_component(k)
