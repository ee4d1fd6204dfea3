"""What a user renders from a trained avatar: an orbit around the head, and stills or short clips with expression
and head-pose edits.

Poses are edited in the head's own frame around the avatar's mean training pose: ``yaw`` turns the head (positive to
the subject's left), ``pitch`` nods (positive up), ``roll`` tilts. The backdrop (scene plate) stays fixed, so an orbit
looks like the head turning in front of the camera.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from avatar4d.atomic import disk_errors
from avatar4d.avatar import Avatar, load_avatar
from avatar4d.errors import ControlError
from avatar4d.geometry.angles import HeadRotation, rotated_pose
from avatar4d.images import to_uint8, write_png
from avatar4d.progress import Progress, note
from avatar4d.validation import check_finite, check_output_file
from avatar4d.video.write import Mp4Writer

IMAGE_SUFFIXES = (".png",)
VIDEO_SUFFIXES = (".mp4",)


def load_edit_state(path: Path) -> tuple[dict[str, float], HeadRotation]:
    """Read the expression and pose that the viewer saves: ``{"expression": {...}, "pose": {"yaw": ...}}``."""
    try:
        state = json.loads(Path(path).read_text())
        expression = {str(k): float(v) for k, v in state.get("expression", {}).items()}
        pose = state.get("pose", {})
        rotation = HeadRotation(float(pose.get("yaw", 0.0)), float(pose.get("pitch", 0.0)),
                                float(pose.get("roll", 0.0)))
    except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
        raise ControlError(f"{path} is not a saved expression/pose state ({error})") from error
    values = {**expression, "yaw": rotation.yaw, "pitch": rotation.pitch, "roll": rotation.roll}
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise ControlError(f"{path}: the values of {', '.join(bad)} are not finite numbers")
    return expression, rotation


def _warn_beyond_training(avatar: Avatar, rotation: HeadRotation, margin_deg: float = 5.0) -> None:
    low, high = avatar.frames.rotation_range()
    for name, value, lo, hi in zip(("yaw", "pitch", "roll"), (rotation.yaw, rotation.pitch, rotation.roll), low, high):
        if value < lo - margin_deg or value > hi + margin_deg:
            note(f"{name} {value:+.0f} deg is beyond the training views ({lo:+.0f}..{hi:+.0f} deg): expect artefacts")


def render_frame(avatar: Avatar, code: np.ndarray, rotation: HeadRotation, size: int) -> np.ndarray:
    """(size, size, 3) uint8 render of the avatar with an expression code and a head rotation."""
    pose = rotated_pose(avatar.frames.mean_camera_from_head, rotation)
    return to_uint8(avatar.render_image(pose, code, size))


def _even(size: int) -> int:
    return size + (size % 2)


def render_orbit(avatar_dir: Path, out: Path, *, frames: int = 90, yaw_deg: float | None = None,
                 pitch_deg: float | None = None, expression: dict[str, float] | str | None = None,
                 size: int | None = None, fps: float = 30.0, extrapolate: bool = False) -> Path:
    """A novel-view video: the head turns left and right, then nods, at a chosen expression.

    Args:
        frames: video length; the first half sweeps yaw, the second pitch.
        yaw_deg, pitch_deg: sweep amplitudes (default: the largest turn seen in training, at least 10 and 5 degrees).
        expression: semantic controls / raw components (default: the mean face).
    """
    out = check_output_file(out, VIDEO_SUFFIXES)
    check_finite(yaw=yaw_deg, pitch=pitch_deg)
    if frames < 2:
        raise ControlError(f"an orbit needs at least 2 frames, got {frames}")
    avatar = load_avatar(avatar_dir)
    size = _even(avatar.output_size(size))
    low, high = avatar.frames.rotation_range()
    yaw = yaw_deg if yaw_deg is not None else max(10.0, float(max(abs(low[0]), abs(high[0]))))
    pitch = pitch_deg if pitch_deg is not None else max(5.0, float(max(abs(low[1]), abs(high[1]))))
    _warn_beyond_training(avatar, HeadRotation(yaw, pitch))
    code = avatar.resolve_expression(expression, extrapolate=extrapolate).code
    half = frames // 2
    rotations = [HeadRotation(yaw=yaw * math.sin(2 * math.pi * i / half)) for i in range(half)]
    rotations += [HeadRotation(pitch=pitch * math.sin(2 * math.pi * i / (frames - half))) for i in range(frames - half)]
    _write_video(avatar, out, [(code, r) for r in rotations], size, fps, "orbit")
    return out


def render_edit(avatar_dir: Path, out: Path, *, expression: dict[str, float] | str | None = None,
                rotation: HeadRotation = HeadRotation(), size: int | None = None, frames: int = 48, fps: float = 30.0,
                extrapolate: bool = False) -> Path:
    """A still (``.png``) or a short clip (``.mp4``: from the mean face and pose to the edit and back).

    Args:
        expression: e.g. ``"jaw_open=0.8,smile=0.5"`` or ``{"e0": 2.0}``.
        rotation: head yaw, pitch, roll relative to the mean pose, degrees.
    """
    out = check_output_file(out, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    check_finite(yaw=rotation.yaw, pitch=rotation.pitch, roll=rotation.roll)
    avatar = load_avatar(avatar_dir)
    size = _even(avatar.output_size(size))
    edit = avatar.resolve_expression(expression, extrapolate=extrapolate)
    _warn_beyond_training(avatar, rotation)
    if out.suffix.lower() in IMAGE_SUFFIXES:
        with disk_errors(out):
            write_png(out, render_frame(avatar, edit.code, rotation, size))
        return out
    if frames < 2:
        raise ControlError(f"a clip needs at least 2 frames, got {frames}")
    steps = []
    for i in range(frames):
        t = 0.5 - 0.5 * math.cos(2 * math.pi * i / (frames - 1))  # 0 -> 1 -> 0, eased
        steps.append((t * edit.code, HeadRotation(t * rotation.yaw, t * rotation.pitch, t * rotation.roll)))
    _write_video(avatar, out, steps, size, fps, "edit")
    return out


def _write_video(avatar: Avatar, out: Path, steps: list[tuple[np.ndarray, HeadRotation]], size: int, fps: float,
                 label: str) -> None:
    with Mp4Writer(out, fps, crf=18) as writer, Progress(label, len(steps), "frames") as progress:
        for code, rotation in steps:
            writer.write(render_frame(avatar, code, rotation, size))
            progress.update()
