"""Configs as plain JSON values and back: the presets survive the round trip, and unknown keys are named."""

from __future__ import annotations

import json

import pytest

from avatar4d.configs import ConfigKeyError, differences, from_dict, to_dict
from avatar4d.training import presets
from avatar4d.training.config import TrainConfig


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_to_dict_is_plain_json_and_from_dict_restores_the_config(name):
    config = presets.get(name, iterations=123, image_size=96)
    plain = to_dict(config)
    # what a checkpoint or config.json stores compares equal to the live config (a resumed run checks exactly this)
    assert json.loads(json.dumps(plain)) == plain
    assert isinstance(plain["schedule"]["resolutions"], list)
    assert from_dict(TrainConfig, json.loads(json.dumps(plain))) == config


def test_from_dict_names_every_unknown_key_with_its_path():
    plain = to_dict(presets.get("preview"))
    plain["extra"] = 1
    plain["field"]["decoder"]["width"] = 2
    with pytest.raises(ConfigKeyError, match="unknown configuration keys: extra") as error:
        from_dict(TrainConfig, plain)
    del plain["extra"]
    with pytest.raises(ConfigKeyError, match="field.decoder.width"):
        from_dict(TrainConfig, plain)
    assert "extra" in str(error.value)


def test_differences_name_each_changed_key_by_its_dotted_path():
    a = to_dict(presets.get("preview"))
    b = to_dict(presets.get("preview", iterations=7, seed=3))
    assert differences(a, a) == ""
    assert differences(a, b) == f"schedule.iterations: {a['schedule']['iterations']} -> 7, seed: 0 -> 3"
    assert differences({"x": {"y": 1}}, {"x": 2}) == "x: {'y': 1} -> 2"
