"""``reenact``: drive an avatar with another video (or the subject's own): track the driver, transfer its expression
and head motion, render every frame, and write driver | avatar side by side with the driver's audio."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar4d.avatar import Avatar, load_avatar
from avatar4d.errors import ControlError
from avatar4d.images import resize_square, to_uint8, write_png
from avatar4d.preparation.config import PrepareConfig
from avatar4d.preparation.passes import VideoTrack, track_video
from avatar4d.progress import Progress, note
from avatar4d.reenact.transfer import (
    clamp_controls,
    clamp_to_range,
    fit_control_regression,
    hold_last_good,
    match_spread,
    mean_pose,
    retarget_controls,
    smooth_controls,
    transfer_expressions,
    transfer_poses,
)
from avatar4d.tracking.controls import CONTROL_NAMES
from avatar4d.tracking.coverage import cannot_follow, measure_coverage
from avatar4d.tracking.head_pose import contiguous_segments, head_angles_deg
from avatar4d.validation import check_image_size, check_output_file
from avatar4d.video.read import iter_frames, prefetch
from avatar4d.video.write import Mp4Writer

TRANSFERS = ("controls", "residuals")
"""Ways to transfer the driver's expression (see :mod:`.transfer`)."""


@dataclass(frozen=True)
class Reenactment:
    """What the avatar was driven with, per processed driver frame."""

    source_frames: np.ndarray
    """(F,) driver frame index."""
    codes: np.ndarray
    """(F, K) avatar expression codes."""
    camera_from_head: np.ndarray
    """(F, 4, 4) avatar poses."""
    held: np.ndarray
    """(F,) bool: the driver's face was lost; the last good expression and pose were held."""
    output: Path | None
    cannot_follow: tuple[str, ...] = ()
    """What the driver does that the avatar's own video never showed (one sentence per control)."""


def track_driver(driver: Path, *, max_frames: int | None = None, fov_deg: float = 70.0) -> VideoTrack:
    """Track a driver video (its own face model; landmarks need no large crop: Face Mesh works on its own 192-pixel
    region of interest)."""
    return track_video(driver, PrepareConfig(size=256, fov_deg=fov_deg, max_frames=max_frames, overlay=False,
                                             min_frames=min(10, max_frames or 10)))


def drive(avatar_dir: Path, driver: Path, *, max_frames: int | None = None, fov_deg: float = 70.0,
          expression_only: bool = False, extrapolate: bool = False, transfer: str = "controls"):
    """Track a driver video and transfer it onto an avatar (no rendering).

    Returns:
        The loaded avatar, the driver's track and the :class:`Reenactment` (without output).
    """
    check_transfer(transfer)
    avatar = load_avatar(avatar_dir)
    track = track_driver(driver, max_frames=max_frames, fov_deg=fov_deg)
    return avatar, track, drive_avatar(avatar, track, expression_only=expression_only, extrapolate=extrapolate,
                                       transfer=transfer)


def check_transfer(transfer: str) -> None:
    if transfer not in TRANSFERS:
        raise ControlError(f"unknown transfer {transfer!r}; choose one of {', '.join(TRANSFERS)}")


def drive_avatar(avatar: Avatar, track: VideoTrack, *, expression_only: bool = False, extrapolate: bool = False,
                 transfer: str = "controls") -> Reenactment:
    """Transfer a tracked driver onto an avatar.

    Args:
        extrapolate: keep the transferred expression beyond what the avatar's video showed (by default the controls,
            or with ``transfer="residuals"`` each code component, are kept within the avatar's own range).
        transfer: ``"controls"`` or ``"residuals"`` (see :mod:`.transfer`).
    """
    check_transfer(transfer)
    follow: list[str] = []
    if transfer == "controls":
        codes, follow = _codes_by_controls(avatar, track, extrapolate)
    else:
        codes = _codes_by_residuals(avatar, track, extrapolate)
    avatar_mean = avatar.frames.mean_camera_from_head
    if expression_only:
        poses = np.repeat(avatar_mean[None], len(codes), axis=0)
    else:
        poses = transfer_poses(track.fit.camera_from_head, mean_pose(track.fit.camera_from_head), avatar_mean)
    held = ~track.tracked
    if held.any():
        note(f"the driver's face was lost in {int(held.sum())} of {len(held)} frames (the longest gap: "
             f"{longest_run(held)} frames): the last good expression and pose are held there")
    return Reenactment(source_frames=track.source_frames, codes=hold_last_good(codes, track.tracked),
                       camera_from_head=hold_last_good(poses, track.tracked), held=held, output=None,
                       cannot_follow=tuple(follow))


def longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in an (F,) bool array."""
    longest = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def _codes_by_controls(avatar: Avatar, track: VideoTrack, extrapolate: bool) -> tuple[np.ndarray, list[str]]:
    """The driver's controls, smoothed, relative to its neutral face, on the avatar's neutral face -> codes."""
    driver_map = track.model.controls
    driver_raw = driver_map.raw(track.fit.controls)
    segments = contiguous_segments(track.source_frames[track.tracked])
    smoothed = smooth_controls(driver_raw, driver_map.scale, segments, track.located.info.fps)
    driver_coverage = measure_coverage(driver_raw, head_angles_deg(track.fit.camera_from_head)[:, :2])
    model, train = avatar.face_model, avatar.frames.train_indices
    avatar_controls = avatar.frames.controls[train].astype(np.float64)
    avatar_coverage = measure_coverage(model.controls.raw(avatar_controls), avatar.frames.head_rotations()[:, :2])
    if driver_coverage.neutral.fallback:
        note(f"driver: {driver_coverage.neutral.fallback}")
    follow = cannot_follow(driver_coverage, avatar_coverage)
    for message in follow:
        note(message)
    controls = retarget_controls(smoothed, driver_coverage.neutral.raw, avatar_coverage.neutral.raw, model.controls)
    if not extrapolate:
        controls, clipped = clamp_controls(controls, avatar_controls.min(0), avatar_controls.max(0))
        if clipped.any():
            counts = ", ".join(f"{name} {int(n)}" for name, n in zip(CONTROL_NAMES, clipped.sum(0)) if n)
            note(f"the driver's expression went beyond what the avatar's video showed in {int(clipped.any(1).sum())}"
                 f" of {len(clipped)} frames (frames per control: {counts}): kept to the avatar's range "
                 "(--extrapolate goes beyond it)")
    regression = fit_control_regression(avatar_controls, avatar.frames.codes[train].astype(np.float64))
    return regression(controls), follow


def _codes_by_residuals(avatar: Avatar, track: VideoTrack, extrapolate: bool) -> np.ndarray:
    """The earlier transfer: landmark residuals from the driver's mean face, projected on the avatar's basis."""
    codes = transfer_expressions(track.model, track.fit.codes, avatar.face_model)
    if not extrapolate:
        model = avatar.face_model
        codes = match_spread(codes, avatar.frames.codes[avatar.frames.train_indices].std(axis=0))
        codes, clipped = clamp_to_range(codes, model.code_min, model.code_max)
        if clipped.any():
            note(f"the driver's expression went beyond what the avatar's video showed in {int(clipped.sum())} of "
                 f"{len(clipped)} frames: clamped to the range seen in training (--extrapolate keeps it)")
    return codes


def reenact(avatar_dir: Path, driver: Path, out: Path, *, frame: int | None = None, size: int | None = None,
            max_frames: int | None = None, fov_deg: float = 70.0, expression_only: bool = False,
            extrapolate: bool = False, transfer: str = "controls") -> Reenactment:
    """Drive an avatar with a video.

    Args:
        avatar_dir: a trained avatar.
        driver: a video of a face (another person for cross-identity, or the subject's own).
        out: an ``.mp4`` (driver | avatar, with the driver's audio) or, with ``frame``, a ``.png`` still.
        frame: render only this driver frame (0-based, among the processed frames).
        size: output height of each panel (default: the avatar's training resolution).
        expression_only: keep the avatar's mean head pose; transfer the expression only.
        extrapolate: keep the transferred expression beyond the avatar's own range (see :func:`drive_avatar`).
        transfer: ``"controls"`` (semantic controls from the driver's neutral face) or ``"residuals"`` (the earlier
            landmark-residual transfer); see :mod:`.transfer`.
    """
    out = check_output_file(out, (".png",) if frame is not None else (".mp4",),
                            what="a still" if frame is not None else "a reenactment video")
    check_image_size(size)
    avatar, track, result = drive(avatar_dir, driver, max_frames=max_frames, fov_deg=fov_deg,
                                  expression_only=expression_only, extrapolate=extrapolate, transfer=transfer)
    size = avatar.output_size(size)
    size += size % 2
    if frame is not None and not 0 <= frame < len(result.codes):
        raise ControlError(f"--frame {frame} is outside the driver's {len(result.codes)} frames (0.."
                           f"{len(result.codes) - 1})")
    crop = track.located.crop

    def panels(position: int, image: np.ndarray) -> np.ndarray:
        left = resize_square(crop.apply(image), size)
        right = to_uint8(avatar.render_image(result.camera_from_head[position], result.codes[position], size))
        return np.concatenate([left, right], axis=1)

    if frame is not None:
        source = int(result.source_frames[frame])
        image = next(f.image for f in iter_frames(driver, max_frames=source + 1) if f.index == source)
        write_png(out, panels(frame, image))
    else:
        wanted_frames = {int(i): p for p, i in enumerate(result.source_frames)}
        with (Mp4Writer(out, track.located.info.fps, crf=20, audio_from=driver) as writer,
              Progress("reenact", len(result.codes), "frames") as progress):
            for item in prefetch(iter_frames(driver, max_frames=int(result.source_frames[-1]) + 1)):
                position = wanted_frames.get(item.index)
                if position is None:
                    continue
                writer.write(panels(position, item.image))
                progress.update()
    note(f"reenactment written: {out}")
    return dataclasses.replace(result, output=out)
