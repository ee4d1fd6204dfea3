"""The batch folder: a new or empty folder becomes one; a folder holding anything else, or a file, is refused and
left as it was; a batch folder made with other settings is refused, naming what differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from files import KNOWN

from avatar4d.batch.layout import BATCH_FORMAT, open_batch_folder
from avatar4d.batch.pipeline import PipelineConfig
from avatar4d.errors import BatchInputError, OutputError

SETTINGS = PipelineConfig(iterations=20, time_limit_s=60.0).settings()


def test_a_new_folder_becomes_a_batch_folder_and_opens_again(tmp_path: Path):
    layout = open_batch_folder(tmp_path / "runs" / "batch", SETTINGS)
    marker = json.loads(layout.marker.read_text())
    assert marker["format"] == BATCH_FORMAT and marker["settings"]["train"]["time_limit_s"] == 60.0
    assert marker["settings"]["train"]["schedule"]["iterations"] == 20
    assert open_batch_folder(layout.root, SETTINGS) == layout
    assert json.loads(layout.marker.read_text()) == marker


def test_an_empty_folder_is_taken(tmp_path: Path):
    assert open_batch_folder(tmp_path, SETTINGS).marker.exists()


def test_a_folder_holding_something_else_is_refused_untouched(tmp_path: Path):
    (tmp_path / "thesis.txt").write_bytes(KNOWN)
    with pytest.raises(OutputError, match="is not a batch folder"):
        open_batch_folder(tmp_path, SETTINGS)
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.txt"] and (tmp_path / "thesis.txt").read_bytes() == KNOWN


def test_a_file_as_the_folder_is_refused_untouched(tmp_path: Path):
    (tmp_path / "out").write_bytes(KNOWN)
    with pytest.raises(OutputError, match="is a file"):
        open_batch_folder(tmp_path / "out", SETTINGS)
    assert (tmp_path / "out").read_bytes() == KNOWN


def test_another_tools_marker_is_refused(tmp_path: Path):
    (tmp_path / "batch.json").write_text(json.dumps({"format": "something.else", "version": 1}))
    with pytest.raises(OutputError, match="is not an avatar4d batch folder"):
        open_batch_folder(tmp_path, SETTINGS)


def test_a_batch_folder_made_with_other_settings_is_refused_naming_the_difference(tmp_path: Path):
    layout = open_batch_folder(tmp_path, SETTINGS)
    before = layout.marker.read_bytes()
    with pytest.raises(BatchInputError) as caught:
        open_batch_folder(tmp_path, PipelineConfig(iterations=40, time_limit_s=60.0, size=256).settings())
    message = str(caught.value)
    assert "prepare.size: 512 then, 256 now" in message and "train.schedule.iterations: 20 then, 40 now" in message
    assert layout.marker.read_bytes() == before
