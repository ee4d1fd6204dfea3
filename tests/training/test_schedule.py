"""The training schedule: resolutions switch at their fractions of the run; learning rates decay exponentially."""

from __future__ import annotations

import pytest

from avatar4d.training.schedule import ScheduleConfig, lr_factor_at, resolution_at


def test_resolution_switches_at_the_configured_fractions():
    config = ScheduleConfig(iterations=100, resolutions=(32, 64, 128), resolution_starts=(0.0, 0.25, 0.6))
    sizes = [resolution_at(step, config) for step in range(101)]
    assert sizes[:25] == [32] * 25
    assert sizes[25:60] == [64] * 35
    assert sizes[60:] == [128] * 41


def test_one_resolution_is_used_throughout():
    config = ScheduleConfig(iterations=10, resolutions=(48,), resolution_starts=(0.0,))
    assert {resolution_at(step, config) for step in range(11)} == {48}


@pytest.mark.parametrize("iterations, final", [(100, 0.1), (7, 0.5), (1, 0.01)])
def test_learning_rate_factor_decays_exponentially_to_the_final_factor(iterations, final):
    config = ScheduleConfig(iterations=iterations, final_lr_factor=final)
    assert lr_factor_at(0, config) == 1.0
    assert lr_factor_at(iterations, config) == pytest.approx(final, rel=1e-12)
    for step in range(iterations + 1):
        assert lr_factor_at(step, config) == pytest.approx(final ** (step / iterations), rel=1e-12)
    assert lr_factor_at(iterations + 50, config) == lr_factor_at(iterations, config)  # no further decay


def test_inconsistent_schedules_are_refused():
    with pytest.raises(ValueError, match="same length"):
        ScheduleConfig(resolutions=(64, 128), resolution_starts=(0.0,))
    with pytest.raises(ValueError, match="increase from 0.0"):
        ScheduleConfig(resolutions=(64, 128), resolution_starts=(0.3, 0.6))
    with pytest.raises(ValueError, match="increase from 0.0"):
        ScheduleConfig(resolutions=(64, 128, 256), resolution_starts=(0.0, 0.6, 0.3))
