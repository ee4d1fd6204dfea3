"""What a video shows of each semantic control (its capture coverage), and the face it rests at (its neutral).

An avatar learns only what its video shows: eyes that never close cannot blink, a mouth never opened wide opens only
as far as it was seen, a head that never turned is a guess from the side. ``prepare`` reports this coverage in the
manifest and warns about what is missing; ``reenact`` says which of a driver's controls the avatar cannot follow.

Controls are compared in their raw units (metres in the head frame, whose scale is set by the 63 mm eye distance, or
ratios: see :func:`avatar4d.tracking.controls.measure_controls`), as changes from the person's neutral face, so that a
threshold means the same for every person. The neutral face is not the mean face (a talking mouth is open half the
time): it is the median of the frames with a closed mouth, open eyes, relaxed brows and no smile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from avatar4d.tracking.controls import CONTROL_NAMES, TWO_SIDED

NEUTRAL_MIN_FRAMES = 25
"""Fewer tracked frames than this (1 s at 25 fps) are too few to find a neutral face in: the median face stands in."""
MIN_ACTION_FRAMES = 2
"""Frames at the far end of a control needed to count it as shown (a blink is fully closed for a frame or two)."""
TURN_DEG = 12.0
"""A turn of the head this far from its median direction counts as turning (yaw, to each side)."""

ACTION_THRESHOLD: dict[str, float] = {
    # change from the neutral face that counts as doing the action (raw units; blinks: the share of the neutral eye
    # opening that closes)
    "jaw_open": 0.015, "smile": 0.006, "blink_left": 0.55, "blink_right": 0.55, "brow_raise": 0.0025,
    "pucker": 0.006, "gaze_horizontal": 0.1, "gaze_vertical": 0.1,
}
ACTION_WORDS: dict[str, tuple[str, str, str]] = {
    # (what a video lacks, what the avatar therefore cannot do, what a driver does)
    "jaw_open": ("the mouth never opens wide", "open its mouth wide", "opens the mouth wide"),
    "smile": ("the face never smiles", "smile", "smiles"),
    "blink_left": ("the left eye never closes", "close its left eye", "closes the left eye"),
    "blink_right": ("the right eye never closes", "close its right eye", "closes the right eye"),
    "brow_raise": ("the brows are never raised", "raise its brows", "raises the brows"),
    "pucker": ("the lips never pucker", "pucker", "puckers the lips"),
    "gaze_horizontal": ("the eyes never look to the side", "look to the side", "looks to the side"),
    "gaze_vertical": ("the eyes never look up or down", "look up or down", "looks up or down"),
}


@dataclass(frozen=True)
class Neutral:
    """A person's neutral face in raw control values."""

    raw: np.ndarray
    """(C,) raw control values of the neutral face."""
    frames: int
    """Frames it is the median of."""
    fallback: str | None
    """Why the median face stands in (None when the neutral was found)."""


def estimate_neutral(raw: np.ndarray) -> Neutral:
    """The neutral face: the median of the frames with the mouth closed (lowest quarter of ``jaw_open``), no smile
    (lower half), open eyes and relaxed brows (lower 60 %); the median of all frames when there are too few.

    Args:
        raw: (F, C) raw controls, in the order of :data:`CONTROL_NAMES`.
    """
    count = len(raw)
    if count < NEUTRAL_MIN_FRAMES:
        return Neutral(np.median(raw, axis=0), count,
                       f"{count} tracked frames are too few to find a neutral face in (closed mouth, open eyes, "
                       f"relaxed brows; at least {NEUTRAL_MIN_FRAMES} are needed): the median face stands in")
    column = {name: raw[:, i] for i, name in enumerate(CONTROL_NAMES)}
    quiet = column["jaw_open"] <= np.percentile(column["jaw_open"], 25)
    eyes_open = np.ones(count, dtype=bool)
    for name in ("blink_left", "blink_right", "brow_raise"):
        eyes_open &= column[name] <= np.percentile(column[name], 60)
    chosen = quiet & eyes_open & (column["smile"] <= np.percentile(column["smile"], 50))
    if chosen.sum() < 5:  # the quiet frames all smile or blink: keep the closed mouth and open eyes only
        chosen = quiet & eyes_open if (quiet & eyes_open).sum() >= 5 else quiet
    return Neutral(np.median(raw[chosen], axis=0), int(chosen.sum()), None)


def action_amount(raw: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """(F, C) how far each frame is from the neutral face towards each control's action, in the units of
    :data:`ACTION_THRESHOLD` (blinks: the share of the neutral eye opening that is closed)."""
    amount = raw - neutral
    for name in ("blink_left", "blink_right"):
        i = CONTROL_NAMES.index(name)
        amount[:, i] = 1.0 - raw[:, i] / min(neutral[i], -1e-6)  # raw blink is minus the openness
    return amount


@dataclass(frozen=True)
class ControlCoverage:
    """What a video shows of one control."""

    name: str
    low: float
    """2nd percentile of the raw value."""
    high: float
    """98th percentile of the raw value."""
    neutral: float
    """Raw value of the neutral face."""
    frames_low_end: int
    """Frames at the low end: at rest (one-sided) or past the threshold below neutral (gaze)."""
    frames_high_end: int
    """Frames past the action threshold."""
    shown: bool
    """At least :data:`MIN_ACTION_FRAMES` frames at the action end (gaze: at either end)."""


@dataclass(frozen=True)
class HeadCoverage:
    """How far the head turned, degrees from its median direction (2nd and 98th percentiles)."""

    yaw_min: float
    yaw_max: float
    pitch_min: float
    pitch_max: float
    turned_left: bool
    """Yaw reached :data:`TURN_DEG` towards the subject's left."""
    turned_right: bool


@dataclass(frozen=True)
class Coverage:
    """What a video shows of every control and of head turns."""

    frames: int
    controls: tuple[ControlCoverage, ...]
    head: HeadCoverage | None
    neutral: Neutral

    def control(self, name: str) -> ControlCoverage:
        return self.controls[CONTROL_NAMES.index(name)]

    @property
    def missing(self) -> list[str]:
        """Names of the controls the video does not show."""
        return [c.name for c in self.controls if not c.shown]

    def warnings(self) -> list[str]:
        """Plain sentences on what the video does not show and what the avatar will therefore not do."""
        missing = set(self.missing)
        out = []
        if {"blink_left", "blink_right"} <= missing:
            out.append("the eyes never close in this video: the avatar will not blink")
            missing -= {"blink_left", "blink_right"}
        for name in CONTROL_NAMES:
            if name in missing:
                lacks, cannot, _ = ACTION_WORDS[name]
                extra = f" (at most {1000 * self.control(name).high:.0f} mm)" if name == "jaw_open" else ""
                out.append(f"{lacks} in this video{extra}: the avatar will not {cannot}")
        head = self.head
        if head is not None and not (head.turned_left and head.turned_right):
            sides = [side for side, turned in (("left", head.turned_left), ("right", head.turned_right)) if not turned]
            out.append(f"the head never turns to the {' or '.join(sides)} (yaw {head.yaw_min:+.0f}..{head.yaw_max:+.0f}"
                       f" deg): views from that side will be blurred guesses")
        if self.neutral.fallback:
            out.append(self.neutral.fallback)
        return out

    def summary(self) -> str:
        """One short line: what is shown and what is missing."""
        shown = [c.name for c in self.controls if c.shown]
        head = self.head
        if head is not None:
            turns = [side for side, turned in (("left", head.turned_left), ("right", head.turned_right)) if turned]
            if turns:
                shown.append(f"head turn {'/'.join(turns)}")
        missing = self.missing + (["head turn"] if head is not None and not (head.turned_left or head.turned_right)
                                  else [])
        return f"shows {', '.join(shown) or 'nothing'}; missing {', '.join(missing) or 'nothing'}"

    def to_dict(self) -> dict:
        """Plain values for the manifest."""
        return {
            "frames": self.frames,
            "neutral_frames": self.neutral.frames,
            "neutral_fallback": self.neutral.fallback,
            "controls": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.controls},
            "head": asdict(self.head) if self.head is not None else None,
            "missing": self.missing,
            "warnings": self.warnings(),
        }


def measure_coverage(raw: np.ndarray, yaw_pitch_deg: np.ndarray | None = None) -> Coverage:
    """What a video's frames show.

    Args:
        raw: (F, C) raw controls of the tracked frames.
        yaw_pitch_deg: (F, 2) head yaw (positive to the subject's left) and pitch, degrees; None: not reported.
    """
    neutral = estimate_neutral(raw)
    amount = action_amount(raw, neutral.raw)
    rows = []
    for i, name in enumerate(CONTROL_NAMES):
        threshold = ACTION_THRESHOLD[name]
        high_end = int((amount[:, i] >= threshold).sum())
        if name in TWO_SIDED:
            low_end = int((amount[:, i] <= -threshold).sum())
            shown = max(low_end, high_end) >= MIN_ACTION_FRAMES
        else:
            low_end = int((amount[:, i] <= threshold / 3).sum())
            shown = high_end >= MIN_ACTION_FRAMES
        low, high = np.percentile(raw[:, i], [2, 98])
        rows.append(ControlCoverage(name=name, low=float(low), high=float(high), neutral=float(neutral.raw[i]),
                                    frames_low_end=low_end, frames_high_end=high_end, shown=bool(shown)))
    head = None
    if yaw_pitch_deg is not None:
        relative = yaw_pitch_deg - np.median(yaw_pitch_deg, axis=0)
        (yaw_min, pitch_min), (yaw_max, pitch_max) = np.percentile(relative, [2, 98], axis=0)
        head = HeadCoverage(yaw_min=float(yaw_min), yaw_max=float(yaw_max), pitch_min=float(pitch_min),
                            pitch_max=float(pitch_max), turned_left=bool(yaw_max >= TURN_DEG),
                            turned_right=bool(yaw_min <= -TURN_DEG))
    return Coverage(frames=len(raw), controls=tuple(rows), head=head, neutral=neutral)


def cannot_follow(driver: Coverage, avatar: Coverage) -> list[str]:
    """Sentences, one per control, on what the driver does that the avatar's own video never showed."""
    out = []
    for mine, theirs in zip(avatar.controls, driver.controls):
        if theirs.shown and not mine.shown:
            lacks, cannot, does = ACTION_WORDS[mine.name]
            frames = max(theirs.frames_high_end, theirs.frames_low_end if mine.name in TWO_SIDED else 0)
            out.append(f"the driver {does} ({frames} frames), but in the avatar's own video {lacks}: the avatar "
                       f"cannot {cannot} and goes only as far as its video did")
    return out
