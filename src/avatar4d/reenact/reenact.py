"""``reenact``: drive an avatar with another video (or the subject's own): track the driver, transfer its expression
and head motion, render every frame, and write driver | avatar side by side with the driver's audio."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar4d.avatar import load_avatar
from avatar4d.errors import ControlError
from avatar4d.images import resize_square, to_uint8, write_png
from avatar4d.preparation.config import PrepareConfig
from avatar4d.preparation.passes import track_video
from avatar4d.progress import Progress, note
from avatar4d.reenact.transfer import (
    clamp_to_range,
    hold_last_good,
    match_spread,
    mean_pose,
    transfer_expressions,
    transfer_poses,
)
from avatar4d.validation import check_image_size, check_output_file
from avatar4d.video.read import iter_frames, prefetch
from avatar4d.video.write import Mp4Writer


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


def drive(avatar_dir: Path, driver: Path, *, max_frames: int | None = None, fov_deg: float = 70.0,
          expression_only: bool = False, extrapolate: bool = False):
    """Track a driver video and transfer it onto an avatar (no rendering).

    Args:
        extrapolate: keep the transferred codes as they are; by default each component is scaled down to the
            avatar's own spread over the clip and clipped to the range training saw (see :mod:`.transfer`).

    Returns:
        The loaded avatar and the :class:`Reenactment` (without output).
    """
    avatar = load_avatar(avatar_dir)
    # landmarks do not need a large crop (Face Mesh works on its own 192-pixel region of interest)
    track = track_video(driver, PrepareConfig(size=256, fov_deg=fov_deg, max_frames=max_frames, overlay=False,
                                              min_frames=min(10, max_frames or 10)))
    codes = transfer_expressions(track.model, track.fit.codes, avatar.face_model)
    if not extrapolate:
        model = avatar.face_model
        codes = match_spread(codes, avatar.frames.codes[avatar.frames.train_indices].std(axis=0))
        codes, clipped = clamp_to_range(codes, model.code_min, model.code_max)
        if clipped.any():
            note(f"the driver's expression went beyond what the avatar's video showed in {int(clipped.sum())} of "
                 f"{len(clipped)} frames: clamped to the range seen in training (--extrapolate keeps it)")
    avatar_mean = avatar.frames.mean_camera_from_head
    if expression_only:
        poses = np.repeat(avatar_mean[None], len(codes), axis=0)
    else:
        poses = transfer_poses(track.fit.camera_from_head, mean_pose(track.fit.camera_from_head), avatar_mean)
    held = ~track.tracked
    if held.any():
        note(f"the driver's face was lost in {int(held.sum())} of {len(held)} frames: the last good expression and "
             "pose are held there")
    return avatar, track, Reenactment(source_frames=track.source_frames, codes=hold_last_good(codes, track.tracked),
                                      camera_from_head=hold_last_good(poses, track.tracked), held=held, output=None)


def reenact(avatar_dir: Path, driver: Path, out: Path, *, frame: int | None = None, size: int | None = None,
            max_frames: int | None = None, fov_deg: float = 70.0, expression_only: bool = False,
            extrapolate: bool = False) -> Reenactment:
    """Drive an avatar with a video.

    Args:
        avatar_dir: a trained avatar.
        driver: a video of a face (another person for cross-identity, or the subject's own).
        out: an ``.mp4`` (driver | avatar, with the driver's audio) or, with ``frame``, a ``.png`` still.
        frame: render only this driver frame (0-based, among the processed frames).
        size: output height of each panel (default: the avatar's training resolution).
        expression_only: keep the avatar's mean head pose; transfer the expression only.
        extrapolate: keep the transferred expression beyond the avatar's own spread and range (see :func:`drive`).
    """
    out = check_output_file(out, (".png",) if frame is not None else (".mp4",),
                            what="a still" if frame is not None else "a reenactment video")
    check_image_size(size)
    avatar, track, result = drive(avatar_dir, driver, max_frames=max_frames, fov_deg=fov_deg,
                                  expression_only=expression_only, extrapolate=extrapolate)
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
    return Reenactment(result.source_frames, result.codes, result.camera_from_head, result.held, out)
