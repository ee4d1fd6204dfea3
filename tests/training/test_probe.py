"""The plateau rule on the held-out probe: when training stops for lack of held-out progress."""

from __future__ import annotations

from avatar4d.training.probe import plateau


def probes(*points: tuple[int, float, float]) -> list[dict]:
    """Log entries (step, seconds, held-out PSNR), with step entries between them that carry no probe."""
    log = []
    for step, time_s, psnr in points:
        log.append({"step": step, "time_s": time_s - 1.0, "loss": 0.1})
        log.append({"step": step, "time_s": time_s, "heldout_psnr": psnr})
    return log


def test_no_stop_while_the_probe_still_rises():
    log = probes((100, 30, 22.0), (200, 60, 23.0), (300, 90, 23.6), (400, 120, 24.0))
    assert plateau(log, 120, window_s=60, min_gain_db=0.1) is None


def test_stop_once_the_last_window_brings_less_than_the_gain():
    log = probes((100, 30, 22.0), (200, 60, 24.0), (300, 90, 24.05), (400, 120, 23.9))
    reason = plateau(log, 120, window_s=60, min_gain_db=0.1)
    assert reason is not None and "24.05" in reason and "24.00" in reason


def test_a_late_gain_above_the_threshold_keeps_training():
    log = probes((100, 30, 22.0), (200, 60, 24.0), (300, 90, 23.5), (400, 120, 24.2))
    assert plateau(log, 120, window_s=60, min_gain_db=0.1) is None


def test_too_few_probes_or_probes_before_the_final_resolution_never_stop():
    assert plateau([], 500, window_s=60, min_gain_db=0.1) is None
    assert plateau(probes((100, 30, 24.0)), 120, window_s=60, min_gain_db=0.1) is None  # nothing recent
    log = probes((100, 30, 25.0), (200, 60, 22.0), (300, 90, 22.0))
    assert plateau(log, 90, window_s=45, min_gain_db=0.1) is not None
    assert plateau(log, 90, window_s=45, min_gain_db=0.1, from_step=150) is None  # the 64 px phase does not count


def test_non_finite_probes_are_ignored():
    log = probes((100, 30, float("nan")), (200, 60, 23.0))
    assert plateau(log, 60, window_s=20, min_gain_db=0.1) is None
