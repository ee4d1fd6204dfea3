"""What the viewer shows, as plain values: the expression and head pose a person set, the orbit of the browser's
camera turned into a head rotation and a zoom, and the picture sent to the page.

Camera mapping (the browser's 3D camera drives the render). The page's viewport has its own orbit camera (drag to
orbit, wheel to zoom, right-drag to pan). It starts at ``REST_CAMERA_POSITION`` (0, -1, 0) looking at the origin with
+z up; the head sits at the look-at point, facing the camera. From the camera's offset ``v = position - look_at``:

- azimuth ``atan2(v_x, -v_y)`` (positive when the camera moves to the viewer's right) -> ``Orbit.yaw = -azimuth``:
  moving the camera around the head shows the same side as turning the head the other way, so a drag to the right
  turns the face to the right of the picture, like spinning a globe;
- elevation ``atan2(v_z, |v_xy|)`` (camera above the head) -> ``Orbit.pitch = -elevation``: seen from above, the
  face turns down;
- distance ``|v|`` (1 at rest) -> the head's distance from the camera, as a factor on the pose's translation
  (a dolly: perspective changes as it would for a real camera; the scene plate behind the head stays as it is).

The orbit turns the head about its own origin around the picture's axes (vertical for yaw, then horizontal for
pitch), after the pose sliders; the saved pose (yaw, pitch, roll for ``avatar4d render --state``) is the combined
rotation. Roll has no mouse gesture (the orbit keeps +z up): it is a slider only. Panning moves the look-at point and
changes nothing, since only the offset from it counts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from avatar4d.avatar import Avatar
from avatar4d.geometry.angles import HeadRotation, rotated_pose
from avatar4d.tracking.controls import CONTROL_NAMES, ExpressionEdit, resolve_expression

REST_CAMERA_POSITION = (0.0, -1.0, 0.0)
REST_CAMERA_LOOK_AT = (0.0, 0.0, 0.0)
REST_CAMERA_UP = (0.0, 0.0, 1.0)

POSE_LIMITS_DEG = {"yaw": 60.0, "pitch": 45.0, "roll": 45.0}
"""The pose sliders span -limit..+limit degrees."""

BACKDROP_RGB = (38, 38, 42)
"""Colour around the picture where the viewport's shape differs from it."""


@dataclass(frozen=True)
class Orbit:
    """The browser camera's orbit, as a head rotation (degrees) and a distance factor (1 = the tracked distance)."""

    yaw: float = 0.0
    pitch: float = 0.0
    distance: float = 1.0

    def close_to(self, other: Orbit, *, angle_tol: float = 0.05, distance_tol: float = 1e-3) -> bool:
        return (abs(self.yaw - other.yaw) <= angle_tol and abs(self.pitch - other.pitch) <= angle_tol
                and abs(self.distance - other.distance) <= distance_tol)


def orbit_from_camera(position: np.ndarray, look_at: np.ndarray, *,
                      distance_range: tuple[float, float] = (0.5, 3.0)) -> Orbit | None:
    """The head rotation and zoom that the browser's camera stands for (see the module docstring).

    Args:
        position: (3,) camera position in the viewport's world (+z up; rest at (0, -1, 0)).
        look_at: (3,) the orbit centre.
        distance_range: the distance factor is clamped to it (the head must stay in front of the camera).

    Returns:
        The orbit, or None when the camera values are not finite or the camera sits on the look-at point.
    """
    offset = np.asarray(position, dtype=np.float64) - np.asarray(look_at, dtype=np.float64)
    if offset.shape != (3,) or not np.all(np.isfinite(offset)):
        return None
    distance = float(np.linalg.norm(offset))
    if distance < 1e-9:
        return None
    azimuth = math.degrees(math.atan2(offset[0], -offset[1]))
    elevation = math.degrees(math.atan2(offset[2], math.hypot(offset[0], offset[1])))
    low, high = distance_range
    return Orbit(yaw=-azimuth, pitch=-elevation, distance=float(np.clip(distance, low, high)))


def camera_for_orbit(orbit: Orbit) -> tuple[np.ndarray, np.ndarray]:
    """(3,) position and (3,) look-at of the browser camera that :func:`orbit_from_camera` maps to ``orbit``."""
    azimuth, elevation = math.radians(-orbit.yaw), math.radians(-orbit.pitch)
    offset = orbit.distance * np.array([math.cos(elevation) * math.sin(azimuth),
                                        -math.cos(elevation) * math.cos(azimuth), math.sin(elevation)])
    look_at = np.asarray(REST_CAMERA_LOOK_AT, dtype=np.float64)
    return look_at + offset, look_at


def distance_range(avatar: Avatar, *, far: float = 3.0, margin: float = 1.15) -> tuple[float, float]:
    """Zoom limits: the nearest keeps the camera outside the head box (with ``margin``), the farthest is ``far``."""
    box_min = avatar.field.box_min.detach().cpu().numpy().astype(np.float64)
    box_max = avatar.field.box_max.detach().cpu().numpy().astype(np.float64)
    corners = np.array([[x, y, z] for x in (box_min[0], box_max[0]) for y in (box_min[1], box_max[1])
                        for z in (box_min[2], box_max[2])])
    radius = float(np.linalg.norm(corners, axis=1).max())
    tracked = float(np.linalg.norm(avatar.frames.mean_camera_from_head[:3, 3]))
    return min(max(0.3, margin * radius / max(tracked, 1e-6)), 0.95), far


@dataclass(frozen=True)
class ViewState:
    """Everything that decides one picture (the render queue's request)."""

    controls: tuple[float, ...]
    """(C,) normalised semantic controls in :data:`CONTROL_NAMES` order (the face model's mean = the mean face)."""
    components: tuple[tuple[int, float], ...] = ()
    """Raw expression components pinned by a person: (k, value); they override what the controls give for that
    component (as ``e3=1.0`` does for ``avatar4d render``)."""
    base: tuple[float, ...] | None = None
    """(K,) a replayed frame's code minus what its controls give, so that the semantic sliders move the expression
    from that frame's face; None: from the mean face."""
    rotation: HeadRotation = HeadRotation()  # noqa: RUF009 (frozen: one shared instance is safe)
    """The pose sliders (degrees, relative to the mean training pose)."""
    orbit: Orbit = Orbit()
    """The browser camera's contribution."""
    frame: int | None = None
    """A replayed dataset frame: its head position is used and its photo is shown beside the render."""

    def with_component(self, k: int, value: float) -> ViewState:
        pinned = dict(self.components)
        pinned[k] = float(value)
        return dataclasses.replace(self, components=tuple(sorted(pinned.items())))

    def with_control(self, index: int, value: float) -> ViewState:
        controls = list(self.controls)
        controls[index] = float(value)
        return dataclasses.replace(self, controls=tuple(controls))


def rest_state(avatar: Avatar) -> ViewState:
    """The mean face at the mean training pose, camera at rest."""
    return ViewState(controls=tuple(float(v) for v in avatar.face_model.controls.mean))


def frame_state(avatar: Avatar, index: int) -> ViewState:
    """A dataset frame's tracked expression and pose, camera at rest. The frame's controls set the semantic sliders
    and ``base`` holds the rest of its code, so the sliders then edit that frame's face."""
    controls = avatar.face_model.controls
    values = np.clip(avatar.frames.controls[index].astype(np.float64), controls.range_min, controls.range_max)
    base = avatar.frames.codes[index].astype(np.float64) - controls.to_code(values)
    yaw, pitch, roll = avatar.frames.head_rotations(np.array([index]))[0]
    return ViewState(controls=tuple(float(v) for v in values), base=tuple(float(v) for v in base),
                     rotation=HeadRotation(float(yaw), float(pitch), float(roll)), frame=int(index))


def state_assignments(avatar: Avatar, state: ViewState) -> dict[str, float]:
    """The expression as ``avatar4d render --expr`` / ``--state`` names it: the semantic controls and the pinned
    components; with a replayed frame's ``base``, every component of the resulting code (which then decides)."""
    out = {name: float(value) for name, value in zip(CONTROL_NAMES, state.controls)}
    if state.base is None:
        out.update({f"e{k}": float(value) for k, value in state.components})
        return out
    model = avatar.face_model
    controls = np.clip(np.asarray(state.controls, dtype=np.float64), model.controls.range_min,
                       model.controls.range_max)
    code = model.controls.to_code(controls) + np.asarray(state.base, dtype=np.float64)
    for k, value in state.components:
        code[k] = value
    code = np.clip(code, model.code_min, model.code_max)
    out.update({f"e{k}": float(value) for k, value in enumerate(code)})
    return out


def resolve_state(avatar: Avatar, state: ViewState) -> ExpressionEdit:
    """The expression code of a state, resolved by the same function, from the same names, as ``avatar4d render
    --state`` resolves the JSON that :func:`state_json` writes."""
    model = avatar.face_model
    return resolve_expression(state_assignments(avatar, state), model.controls, model.code_min, model.code_max)


def orbit_rotation(orbit: Orbit) -> np.ndarray:
    """(3, 3) the orbit's turn of the head, in camera axes (OpenCV: x right, y down, z forward): yaw about the
    picture's vertical axis (positive: the face turns to the picture's right), then pitch about its horizontal axis
    (positive: the face turns up)."""
    return Rotation.from_euler("yx", [-orbit.yaw, -orbit.pitch], degrees=True).as_matrix()


def state_pose(avatar: Avatar, state: ViewState) -> np.ndarray:
    """(4, 4) camera_from_head: the mean training pose (at a replayed frame's head position), turned by the pose
    sliders, then by the orbit about the head's origin, and moved along the line of sight by the orbit's distance."""
    base = avatar.frames.mean_camera_from_head.copy()
    if state.frame is not None:
        base[:3, 3] = avatar.frames.camera_from_head[state.frame, :3, 3]
    pose = rotated_pose(base, state.rotation)
    pose[:3, :3] = orbit_rotation(state.orbit) @ pose[:3, :3]
    pose[:3, 3] *= state.orbit.distance
    return pose


def state_rotation(avatar: Avatar, state: ViewState) -> HeadRotation:
    """The sliders and the orbit as one head rotation relative to the mean pose (what ``--state`` files hold)."""
    relative = avatar.frames.mean_camera_from_head[:3, :3].T @ state_pose(avatar, state)[:3, :3]
    return HeadRotation.from_matrix(relative)


def state_json(avatar: Avatar, state: ViewState) -> dict:
    """The file ``avatar4d render --state FILE`` reads (``load_edit_state``): expression and pose (the pose with
    the orbit included). A replayed frame's small head offset and the zoom are not part of that format."""
    rotation = state_rotation(avatar, state)
    return {"expression": state_assignments(avatar, state),
            "pose": {"yaw": rotation.yaw, "pitch": rotation.pitch, "roll": rotation.roll}}


def compose_view(render: np.ndarray, display_size: int, aspect: float, *, truth: np.ndarray | None = None,
                 labels: tuple[str, str] | None = None) -> np.ndarray:
    """The picture for the viewport: the render (and the ground-truth photo to its right), scaled to
    ``display_size`` rows and padded to the viewport's shape, since the page stretches it over the whole viewport.

    Args:
        render: (S, S, 3) uint8.
        display_size: rows of the picture content.
        aspect: the viewport's width / height.
        truth: (T, T, 3) uint8 photo, or None.
        labels: captions of the render and the photo (drawn when ``truth`` is given).

    Returns:
        (H, W, 3) uint8 with W / H close to ``aspect``.
    """
    aspect = float(np.clip(aspect, 0.2, 5.0)) if np.isfinite(aspect) else 1.0
    interpolation = cv2.INTER_AREA if render.shape[0] > display_size else cv2.INTER_LINEAR
    panels = [cv2.resize(render, (display_size, display_size), interpolation=interpolation)]
    if truth is not None:
        interpolation = cv2.INTER_AREA if truth.shape[0] > display_size else cv2.INTER_LINEAR
        panels.append(cv2.resize(truth, (display_size, display_size), interpolation=interpolation))
        if labels is not None:
            scale = max(0.4, display_size / 640)
            for panel, label in zip(panels, labels):
                cv2.putText(panel, label, (8, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                            (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    content = np.concatenate(panels, axis=1)
    height, width = content.shape[:2]
    out_height, out_width = height, width
    if width / height < aspect:
        out_width = round(height * aspect)
    else:
        out_height = round(width / aspect)
    out = np.empty((out_height, out_width, 3), dtype=np.uint8)
    out[:] = BACKDROP_RGB
    top, left = (out_height - height) // 2, (out_width - width) // 2
    out[top:top + height, left:left + width] = content
    return out
