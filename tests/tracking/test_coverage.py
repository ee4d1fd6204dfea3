"""Capture coverage (tracking/coverage.py) on the real sample clip's controls, and on the same controls edited the way
a video would differ (a mouth open half the time, eyes that close or never do, a head that turns or never does): the
neutral face is the closed-mouth, open-eyed one, what is missing is said in plain words, and a driver's action that
the avatar never saw is named once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar4d.dataset.layout import load_dataset
from avatar4d.tracking.controls import CONTROL_NAMES
from avatar4d.tracking.coverage import (
    ACTION_THRESHOLD,
    NEUTRAL_MIN_FRAMES,
    action_amount,
    cannot_follow,
    estimate_neutral,
    measure_coverage,
)
from avatar4d.tracking.head_pose import head_angles_deg

JAW, SMILE, BLINK_L, BLINK_R, BROW = (CONTROL_NAMES.index(n) for n in
                                      ("jaw_open", "smile", "blink_left", "blink_right", "brow_raise"))


@pytest.fixture(scope="module")
def real(prepared_dataset):
    """(F, C) raw controls and (F, 2) yaw/pitch of the sample clip (a man talking, 72 frames)."""
    dataset = load_dataset(prepared_dataset)
    raw = dataset.face_model.controls.raw(dataset.tracking.controls.astype(np.float64))
    return raw, head_angles_deg(dataset.tracking.camera_from_head)[:, :2]


def test_raw_controls_are_the_inverse_of_the_normalisation(prepared_dataset):
    dataset = load_dataset(prepared_dataset)
    controls = dataset.face_model.controls
    normalised = dataset.tracking.controls.astype(np.float64)
    np.testing.assert_allclose(controls.normalise(controls.raw(normalised)), normalised, atol=1e-9)


def test_the_neutral_face_has_a_closed_mouth_when_the_mouth_is_open_half_the_time(real):
    raw, _ = real
    talking = raw.copy()
    talking[::2, JAW] += 0.02  # every other frame 2 cm wider open: the mean face's mouth is 1 cm open
    neutral = estimate_neutral(talking)
    assert neutral.fallback is None and 5 <= neutral.frames <= len(raw) // 4 + 1
    closed = talking[1::2, JAW]
    assert neutral.raw[JAW] <= np.percentile(talking[:, JAW], 25)
    assert neutral.raw[JAW] <= np.median(closed) + 1e-9 < talking[:, JAW].mean() - 0.005


def test_the_neutral_face_has_open_eyes_when_the_eyes_close_often(real):
    raw, _ = real
    blinking = raw.copy()
    blinking[::3, BLINK_L] = blinking[::3, BLINK_R] = -0.05  # a third of the frames with nearly closed eyes
    neutral = estimate_neutral(blinking)
    assert neutral.raw[BLINK_L] < -0.15 and neutral.raw[BLINK_R] < -0.15  # (minus) the opening of open eyes


def test_a_clip_too_short_for_a_neutral_falls_back_to_the_median_and_says_so(real):
    raw, _ = real
    short = raw[:NEUTRAL_MIN_FRAMES - 1]
    neutral = estimate_neutral(short)
    np.testing.assert_array_equal(neutral.raw, np.median(short, axis=0))
    assert f"{len(short)} tracked frames are too few" in neutral.fallback and "median face" in neutral.fallback
    assert neutral.fallback in measure_coverage(short).warnings()


def action_by_loop(raw: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    out = np.zeros_like(raw)
    for f in range(raw.shape[0]):
        for i, name in enumerate(CONTROL_NAMES):
            if name.startswith("blink"):
                out[f, i] = 1.0 - (-raw[f, i]) / (-neutral[i])  # share of the neutral eye opening that is closed
            else:
                out[f, i] = raw[f, i] - neutral[i]
    return out


def test_action_amount_matches_a_loop(real):
    raw, _ = real
    neutral = estimate_neutral(raw).raw
    np.testing.assert_allclose(action_amount(raw, neutral), action_by_loop(raw, neutral), atol=1e-12)


def test_eyes_that_never_close_are_reported_and_eyes_that_close_are_shown(real):
    raw, angles = real
    neutral = estimate_neutral(raw).raw
    open_eyes = raw.copy()
    open_eyes[:, [BLINK_L, BLINK_R]] = np.minimum(open_eyes[:, [BLINK_L, BLINK_R]], neutral[[BLINK_L, BLINK_R]])
    coverage = measure_coverage(open_eyes, angles)
    assert {"blink_left", "blink_right"} <= set(coverage.missing)
    assert "the eyes never close in this video: the avatar will not blink" in coverage.warnings()
    blinks = open_eyes.copy()
    blinks[10:13, [BLINK_L, BLINK_R]] = 0.3 * neutral[[BLINK_L, BLINK_R]]  # 70 % closed for three frames
    shown = measure_coverage(blinks, angles)
    assert shown.control("blink_left").shown and shown.control("blink_left").frames_high_end == 3
    assert not any("never close" in w for w in shown.warnings())


def test_a_mouth_never_opened_wide_smiles_and_brows_are_reported_with_what_the_avatar_cannot_do(real):
    raw, angles = real
    neutral = estimate_neutral(raw).raw
    still = np.repeat(neutral[None], len(raw), axis=0) + 1e-4 * np.random.default_rng(0).normal(size=raw.shape)
    warnings = measure_coverage(still, angles).warnings()
    assert any(w.startswith("the mouth never opens wide in this video (at most") for w in warnings)
    assert "the face never smiles in this video: the avatar will not smile" in warnings
    assert "the brows are never raised in this video: the avatar will not raise its brows" in warnings
    moving = still.copy()
    moving[5:9, JAW] += ACTION_THRESHOLD["jaw_open"] + 0.002
    moving[20:30, SMILE] += ACTION_THRESHOLD["smile"] + 0.002
    moving[40:42, BROW] += ACTION_THRESHOLD["brow_raise"] + 0.001
    coverage = measure_coverage(moving, angles)
    assert {"jaw_open", "smile", "brow_raise"}.isdisjoint(coverage.missing)
    assert coverage.control("jaw_open").frames_high_end == 4 and coverage.control("smile").frames_high_end == 10


def test_head_turns_are_reported_to_each_side(real):
    raw, angles = real
    still = measure_coverage(raw, np.zeros_like(angles))
    assert not still.head.turned_left and not still.head.turned_right
    assert any(w.startswith("the head never turns to the left or right") for w in still.warnings())
    turning = np.zeros_like(angles)
    turning[:, 0] = 25.0 * np.sin(np.linspace(0, 2 * np.pi, len(angles)))  # yaw, positive to the subject's left
    coverage = measure_coverage(raw, turning)
    assert coverage.head.turned_left and coverage.head.turned_right
    assert coverage.head.yaw_max > 20 and coverage.head.yaw_min < -20
    assert not any("head never turns" in w for w in coverage.warnings())
    assert "head turn left/right" in coverage.summary()


def test_coverage_is_plain_json_with_every_control(real):
    raw, angles = real
    record = json.loads(json.dumps(measure_coverage(raw, angles).to_dict()))
    assert list(record["controls"]) == list(CONTROL_NAMES)
    assert set(record["controls"]["jaw_open"]) == {"low", "high", "neutral", "frames_low_end", "frames_high_end",
                                                   "shown"}
    assert record["frames"] == len(raw) and set(record["head"]) == {"yaw_min", "yaw_max", "pitch_min", "pitch_max",
                                                                     "turned_left", "turned_right"}


def test_what_a_driver_does_and_the_avatar_never_saw_is_named_once_per_control(real):
    raw, angles = real
    neutral = estimate_neutral(raw).raw
    avatar = raw.copy()
    avatar[:, [BLINK_L, BLINK_R]] = np.minimum(avatar[:, [BLINK_L, BLINK_R]], neutral[[BLINK_L, BLINK_R]])
    driver = avatar.copy()
    driver[30:34, BLINK_L] = 0.2 * neutral[BLINK_L]
    messages = cannot_follow(measure_coverage(driver, angles), measure_coverage(avatar, angles))
    assert len(messages) == 1
    assert messages[0].startswith("the driver closes the left eye (4 frames)")
    assert "the avatar cannot close its left eye" in messages[0]
    assert cannot_follow(measure_coverage(avatar, angles), measure_coverage(driver, angles)) == []
