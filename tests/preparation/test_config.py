"""PrepareConfig refuses options that cannot work, with the option's name, when it is made."""

from __future__ import annotations

import pytest

from avatar4d.errors import ControlError
from avatar4d.preparation.config import PrepareConfig


@pytest.mark.parametrize("options, option", [
    ({"every": 0}, "--every"),
    ({"every": -2}, "--every"),
    ({"fov_deg": 5.0}, "--fov"),
    ({"fov_deg": float("nan")}, "--fov"),
    ({"size": 0}, "--size"),
    ({"size": 100000}, "--size"),
    ({"max_frames": 0}, "--max-frames"),
    ({"num_components": 0}, "--components"),
])
def test_prepare_config_refuses_an_unusable_option_by_name(options, option):
    with pytest.raises(ControlError, match=option):
        PrepareConfig(**options)


def test_prepare_config_accepts_the_defaults_and_common_choices():
    PrepareConfig()
    PrepareConfig(size=256, fov_deg=60.0, every=2, max_frames=100, num_components=16)
