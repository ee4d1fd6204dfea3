"""Semantic expression controls a person understands, measured from canonical landmarks, and the linear map from
them to the expression code (so sliders and ``--expr jaw_open=0.8`` speak in these terms).

Each control is a raw geometric measurement (metres or ratios, in the head frame, so head pose does not affect it),
normalised by the range this subject shows in the video: one-sided controls map the 2nd..98th percentile to 0..1
(0 = closed mouth, open eyes, relaxed brows), two-sided ones (gaze) map the median to 0 and the larger excursion to 1.
A floor on the range keeps a control the subject never uses from amplifying tracker noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar4d.errors import ControlError
from avatar4d.tracking import landmarks as lm

CONTROL_NAMES: tuple[str, ...] = (
    "jaw_open", "smile", "blink_left", "blink_right", "brow_raise", "pucker", "gaze_horizontal", "gaze_vertical",
)
TWO_SIDED = frozenset({"gaze_horizontal", "gaze_vertical"})
MIN_RANGE: dict[str, float] = {
    # smallest raw range treated as real movement (below it the control is marked as barely seen)
    "jaw_open": 0.004, "smile": 0.004, "blink_left": 0.08, "blink_right": 0.08, "brow_raise": 0.003,
    "pucker": 0.004, "gaze_horizontal": 0.05, "gaze_vertical": 0.05,
}


def _eye_openness(points: np.ndarray, lids: tuple[tuple[int, int], ...], corners: tuple[int, int]) -> np.ndarray:
    gaps = np.stack([np.linalg.norm(points[:, a] - points[:, b], axis=-1) for a, b in lids], axis=0).mean(0)
    width = np.linalg.norm(points[:, corners[0]] - points[:, corners[1]], axis=-1)
    return gaps / width


def _gaze(points: np.ndarray, iris: int, corners: tuple[int, int], axis: int) -> np.ndarray:
    center = 0.5 * (points[:, corners[0]] + points[:, corners[1]])
    width = np.linalg.norm(points[:, corners[0]] - points[:, corners[1]], axis=-1)
    return (points[:, iris, axis] - center[:, axis]) / width


def measure_controls(points: np.ndarray) -> np.ndarray:
    """Raw control measurements, larger = more of the action (gaze: positive = subject's left / up).

    Args:
        points: (F, L, 3) landmarks in the head frame, metres.

    Returns:
        (F, C) raw values in the order of :data:`CONTROL_NAMES`.
    """
    p = points
    lip_gap = np.linalg.norm(p[:, lm.UPPER_LIP_INNER] - p[:, lm.LOWER_LIP_INNER], axis=-1)
    corners = 0.5 * (p[:, lm.MOUTH_CORNERS[0]] + p[:, lm.MOUTH_CORNERS[1]])
    lip_center = 0.5 * (p[:, lm.UPPER_LIP_OUTER] + p[:, lm.LOWER_LIP_OUTER])
    mouth_width = np.linalg.norm(p[:, lm.MOUTH_CORNERS[0]] - p[:, lm.MOUTH_CORNERS[1]], axis=-1)
    smile = mouth_width + 2.0 * (corners[:, 1] - lip_center[:, 1])
    protrusion = lip_center[:, 2] - p[:, lm.NOSE_TIP, 2]
    pucker = protrusion - 0.5 * mouth_width
    eyes_center_y = 0.5 * (p[:, list(lm.RIGHT_EYE_CORNERS)].mean(1)[:, 1] + p[:, list(lm.LEFT_EYE_CORNERS)].mean(1)[:, 1])
    brows_y = 0.5 * (p[:, list(lm.RIGHT_BROW), 1].mean(1) + p[:, list(lm.LEFT_BROW), 1].mean(1))
    brow_raise = brows_y - eyes_center_y
    blink_left = -_eye_openness(p, lm.LEFT_EYE_LIDS, lm.LEFT_EYE_CORNERS)
    blink_right = -_eye_openness(p, lm.RIGHT_EYE_LIDS, lm.RIGHT_EYE_CORNERS)
    gaze_h = 0.5 * (_gaze(p, lm.RIGHT_IRIS_CENTER, lm.RIGHT_EYE_CORNERS, 0)
                    + _gaze(p, lm.LEFT_IRIS_CENTER, lm.LEFT_EYE_CORNERS, 0))
    gaze_v = 0.5 * (_gaze(p, lm.RIGHT_IRIS_CENTER, lm.RIGHT_EYE_CORNERS, 1)
                    + _gaze(p, lm.LEFT_IRIS_CENTER, lm.LEFT_EYE_CORNERS, 1))
    return np.stack([lip_gap, smile, blink_left, blink_right, brow_raise, pucker, gaze_h, gaze_v], axis=1)


@dataclass(frozen=True)
class ControlMap:
    """Normalisation of the raw controls and the linear map ``code = weights @ (c - mean)``.

    Each column of ``weights`` is a simple regression of the code on that control alone: how the face changes in the
    video when the control changes, with what naturally goes with it (an open jaw also stretches the lips). A joint
    regression would instead give each control's effect with the others held fixed, which for controls that move
    together in the video (jaw, smile and pucker on a talking face) is a direction the video never shows.
    """

    names: tuple[str, ...]
    low: np.ndarray
    """(C,) raw value that normalises to 0 (one-sided: 2nd percentile; two-sided: median)."""
    scale: np.ndarray
    """(C,) raw units per normalised unit."""
    mean: np.ndarray
    """(C,) mean normalised control over the video (the template face's controls)."""
    weights: np.ndarray
    """(K, C) expression code per unit of each normalised control (simple regression slope per control)."""
    r2: np.ndarray
    """(C,) how much of each control's variation the code explains (1 = fully), from the reverse fit."""
    seen: np.ndarray
    """(C,) bool: the subject visibly used the control (raw range above a floor)."""
    range_min: np.ndarray
    """(C,) smallest normalised value seen in the video."""
    range_max: np.ndarray
    """(C,) largest normalised value seen in the video."""

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """(F, C) raw measurements -> (F, C) normalised controls."""
        return (raw - self.low) / self.scale

    def raw(self, controls: np.ndarray) -> np.ndarray:
        """(F, C) normalised controls -> (F, C) raw measurements (the inverse of :meth:`normalise`)."""
        return self.low + controls * self.scale

    def to_code(self, controls: np.ndarray) -> np.ndarray:
        """(..., C) normalised controls -> (..., K) expression code (the video's mean face at ``self.mean``)."""
        return (controls - self.mean) @ self.weights.T


def fit_control_map(raw: np.ndarray, codes: np.ndarray) -> ControlMap:
    """Normalise raw controls and fit, per control, the code's regression on it.

    Args:
        raw: (F, C) raw measurements.
        codes: (F, K) expression codes of the same frames.
    """
    names = CONTROL_NAMES
    low = np.empty(len(names))
    scale = np.empty(len(names))
    seen = np.empty(len(names), dtype=bool)
    for i, name in enumerate(names):
        p2, p50, p98 = np.percentile(raw[:, i], [2, 50, 98])
        floor = MIN_RANGE[name]
        if name in TWO_SIDED:
            low[i] = p50
            extent = max(p98 - p50, p50 - p2)
            scale[i] = max(extent, floor / 2)
            seen[i] = 2 * extent >= floor
        else:
            low[i] = p2
            scale[i] = max(p98 - p2, floor)
            seen[i] = (p98 - p2) >= floor
    normalised = (raw - low) / scale
    mean = normalised.mean(0)
    centred = normalised - mean
    code_centred = codes - codes.mean(0)
    variance = np.maximum((centred**2).mean(0), 1e-12)
    weights = (code_centred.T @ centred / len(raw)) / variance  # (K, C): cov(code, c) / var(c)
    # reverse fit: how well the code predicts each control (a control the code cannot see is not a good slider)
    reverse, *_ = np.linalg.lstsq(code_centred, centred, rcond=None)
    predicted = code_centred @ reverse
    variance = centred.var(0)
    r2 = np.where(variance > 0, 1.0 - (centred - predicted).var(0) / np.maximum(variance, 1e-12), 0.0)
    return ControlMap(names=names, low=low, scale=scale, mean=mean, weights=weights, r2=r2, seen=seen,
                      range_min=normalised.min(0), range_max=normalised.max(0))


@dataclass(frozen=True)
class ExpressionEdit:
    """An expression set by semantic controls and raw components, resolved to a code."""

    code: np.ndarray
    """(K,) the expression code to render."""
    controls: dict[str, float]
    """The semantic controls that were set (after clamping)."""
    components: dict[int, float]
    """Raw components that were set (after clamping)."""
    clamped: list[str]
    """Human-readable notes on values that were pulled back into the range seen in training."""


def parse_assignments(spec: str) -> dict[str, float]:
    """``"jaw_open=0.8, smile=0.5,e0=2"`` -> ``{"jaw_open": 0.8, "smile": 0.5, "e0": 2.0}``.

    Raises:
        ControlError: an item is not ``name=value`` or a value is not a finite number.
    """

    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ControlError(f"{item!r} is not of the form name=value (e.g. jaw_open=0.8 or e0=2.0)")
        try:
            number = float(value)
        except ValueError:
            raise ControlError(f"the value of {name.strip()!r} is not a number: {value.strip()!r}") from None
        if not np.isfinite(number):
            raise ControlError(f"the value of {name.strip()!r} must be finite, got {value.strip()!r}")
        out[name.strip()] = number
    return out


def valid_control_names(num_components: int) -> list[str]:
    return list(CONTROL_NAMES) + [f"e{k}" for k in range(num_components)]


def resolve_expression(assignments: dict[str, float], controls: ControlMap, code_min: np.ndarray,
                       code_max: np.ndarray, *, extrapolate: bool = False) -> ExpressionEdit:
    """Turn named settings into an expression code.

    Semantic controls not mentioned stay at the video's mean face; the code is ``controls.to_code`` of them; raw
    components (``e3=1.5``) then set single entries. Without ``extrapolate`` every value given is clamped to the range
    seen in training: a control to its observed normalised range, a raw component to that component's observed range.
    (The code a set of in-range controls maps to is not clipped component by component: it is the video's own
    direction for those controls, and may pass a single component's extreme slightly.)

    Raises:
        ControlError: a name that is neither a control nor a component (the valid names are listed), or a value
            that is not a finite number.
    """

    num_components = len(code_min)
    valid = valid_control_names(num_components)
    unknown = [name for name in assignments if name not in valid]
    if unknown:
        raise ControlError(f"unknown control(s) {', '.join(unknown)}; valid names: {', '.join(CONTROL_NAMES)}, "
                           f"and raw components e0..e{num_components - 1}")
    not_finite = [name for name, value in assignments.items() if not np.isfinite(value)]
    if not_finite:
        raise ControlError(f"the value(s) of {', '.join(not_finite)} must be finite numbers")
    clamped: list[str] = []
    values = controls.mean.copy()
    chosen_controls: dict[str, float] = {}
    for name, value in assignments.items():
        if name in CONTROL_NAMES:
            i = CONTROL_NAMES.index(name)
            low, high = float(controls.range_min[i]), float(controls.range_max[i])
            if not extrapolate and not low <= value <= high:
                clamped.append(f"{name}={value:g} clamped to {np.clip(value, low, high):.3g} (seen: {low:.2f}..{high:.2f})")
                value = float(np.clip(value, low, high))
            values[i] = value
            chosen_controls[name] = value
    code = controls.to_code(values)
    chosen_components: dict[int, float] = {}
    for name, value in assignments.items():
        if name not in CONTROL_NAMES:
            k = int(name[1:])
            code[k] = value
            chosen_components[k] = value
    if not extrapolate:
        for k in chosen_components:
            limited = float(np.clip(code[k], code_min[k], code_max[k]))
            if abs(limited - code[k]) > 1e-9:
                clamped.append(f"e{k}={code[k]:.3g} clamped to {limited:.3g} (seen: {code_min[k]:.2f}..{code_max[k]:.2f})")
                code[k] = limited
        chosen_components = {k: float(code[k]) for k in chosen_components}
    return ExpressionEdit(code=code, controls=chosen_controls, components=chosen_components, clamped=clamped)
