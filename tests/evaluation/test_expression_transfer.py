"""The expression-transfer measures (evaluation/expression_transfer.py) against plain references (numpy's
correlation, a loop for the jitter), a known shift of a real control curve found as the lag, and the tracker run on a
prepared clip's own frames agreeing with that clip's tracking."""

from __future__ import annotations

import numpy as np
import pytest

from avatar4d.dataset.layout import load_dataset
from avatar4d.evaluation.expression_transfer import (
    best_lag,
    compare,
    correlation,
    jitter,
    spread,
    track_sequence,
)
from avatar4d.tracking.controls import CONTROL_NAMES


@pytest.fixture(scope="module")
def dataset(prepared_dataset):
    return load_dataset(prepared_dataset)


@pytest.fixture(scope="module")
def tracked(dataset):
    """The prepared clip's 72 frames (256 px) tracked again as a picture sequence."""
    frames = [dataset.load_frame(i) for i in range(dataset.tracking.num_frames)]
    return track_sequence(frames, dataset.camera, rate_hz=30.0)


def test_correlation_is_numpys_over_the_frames_where_both_are_finite():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(size=40)
    b[:20] += a[:20]
    a[3] = np.nan
    b[7] = np.nan
    keep = np.isfinite(a) & np.isfinite(b)
    assert correlation(a, b) == pytest.approx(np.corrcoef(a[keep], b[keep])[0, 1], abs=1e-12)
    assert np.isnan(correlation(a, np.ones(40)))


def test_best_lag_finds_a_known_delay_of_a_real_control_curve(dataset):
    jaw = dataset.face_model.controls.raw(dataset.tracking.controls.astype(np.float64))[:, 0]
    for delay in (0, 2, -3):
        late = np.roll(jaw, delay)  # late[t + delay] = jaw[t]
        lag, r = best_lag(jaw, late, max_lag=5)
        assert lag == delay and r > 0.99


def test_spread_is_the_5_to_95_percentile_range():
    values = np.arange(101, dtype=float)
    values[50] = np.nan
    finite = values[np.isfinite(values)]
    assert spread(values) == pytest.approx(np.percentile(finite, 95) - np.percentile(finite, 5))


def jitter_by_loop(points: np.ndarray) -> float:
    sizes = []
    for t in range(1, len(points) - 1):
        second = points[t + 1] - 2 * points[t] + points[t - 1]
        size = np.mean([np.linalg.norm(v) for v in second])
        if np.isfinite(size):
            sizes.append(size)
    return float(np.median(sizes))


def test_jitter_matches_a_loop_and_skips_frames_next_to_a_lost_face():
    points = np.random.default_rng(2).normal(size=(12, 5, 3))
    points[6] = np.nan
    assert jitter(points) == pytest.approx(jitter_by_loop(points), rel=1e-12)


def test_tracking_a_clips_frames_again_agrees_with_its_prepared_tracking(dataset, tracked):
    assert tracked.found.all()
    prepared = dataset.face_model.controls.raw(dataset.tracking.controls.astype(np.float64))
    for name in ("jaw_open", "smile"):
        i = CONTROL_NAMES.index(name)
        assert correlation(prepared[:, i], tracked.raw[:, i]) > 0.9, name
    result = compare(tracked, tracked, max_lag=3)
    assert result["both_found"] == 72 and result["jitter_ratio"] == pytest.approx(1.0)
    for name, agreement in result["controls"].items():
        assert agreement.lag_frames == 0 and agreement.range_ratio == pytest.approx(1.0), name
        assert agreement.correlation == pytest.approx(1.0) or np.isnan(agreement.correlation), name
