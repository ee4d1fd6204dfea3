"""The dataset folder: documented names, lossless tracking files, and a loader that names what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from avatar4d.dataset.layout import DATASET_FORMAT, DATASET_VERSION, DatasetLayout, Tracking, load_dataset
from avatar4d.errors import DatasetError


@pytest.fixture()
def dataset_copy(prepared_dataset, tmp_path) -> Path:
    """A copy of the prepared dataset that a test may damage."""
    return Path(shutil.copytree(prepared_dataset, tmp_path / "dataset"))


def test_layout_names_are_the_documented_ones(tmp_path):
    layout = DatasetLayout(tmp_path)
    relative = {name: str(getattr(layout, name).relative_to(tmp_path)) for name in (
        "manifest", "frames_dir", "person_masks_dir", "face_masks_dir", "background", "background_holes", "tracking",
        "face_model", "overlay", "plot")}
    assert relative == {
        "manifest": "manifest.json", "frames_dir": "frames", "person_masks_dir": "masks/person",
        "face_masks_dir": "masks/face", "background": "background.png", "background_holes": "background_holes.png",
        "tracking": "tracking.safetensors", "face_model": "face_model.safetensors", "overlay": "overlay.mp4",
        "plot": "tracking.png"}
    assert layout.frame(7) == tmp_path / "frames" / "000007.jpg"
    assert layout.person_mask(123456) == tmp_path / "masks" / "person" / "123456.png"
    assert layout.face_mask(0) == tmp_path / "masks" / "face" / "000000.png"
    layout.make_dirs()
    assert all(p.is_dir() for p in (layout.frames_dir, layout.person_masks_dir, layout.face_masks_dir))


def test_tracking_round_trips_exactly(prepared_dataset, tmp_path):
    tracking = load_dataset(prepared_dataset).tracking
    path = tmp_path / "tracking.safetensors"
    tracking.save(path)
    loaded = Tracking.load(path)
    for name in Tracking.__dataclass_fields__:
        original, again = getattr(tracking, name), getattr(loaded, name)
        assert again.dtype == original.dtype, name
        np.testing.assert_array_equal(again, original, err_msg=name)
    assert [p.name for p in tmp_path.iterdir()] == ["tracking.safetensors"]


def test_loaded_dataset_has_the_documented_types(prepared_dataset):
    dataset = load_dataset(prepared_dataset)
    t = dataset.tracking
    count = t.num_frames
    expected = {
        "source_frames": ((count,), np.int64), "times_s": ((count,), np.float64),
        "landmarks": ((count, 478, 3), np.float32), "camera_from_head": ((count, 4, 4), np.float64),
        "raw_camera_from_head": ((count, 4, 4), np.float64), "expression": ((count, 32), np.float32),
        "controls": ((count, 8), np.float32), "reprojection_error_px": ((count,), np.float32),
        "flagged": ((count,), np.bool_),
    }
    for name, (shape, dtype) in expected.items():
        array = getattr(t, name)
        assert array.shape == shape and array.dtype == dtype, name
    assert dataset.size == 256
    assert dataset.load_frame(0).shape == (256, 256, 3) and dataset.load_frame(0).dtype == np.uint8
    assert dataset.load_person_mask(0).shape == (256, 256)
    assert dataset.load_face_mask(0).shape == (256, 256)
    assert dataset.load_background().shape == (256, 256, 3)


@pytest.mark.parametrize("name", ["manifest.json", "background.png", "background_holes.png", "tracking.safetensors",
                                  "face_model.safetensors"])
def test_missing_file_is_named(dataset_copy, name):
    (dataset_copy / name).unlink()
    with pytest.raises(DatasetError, match=f"incomplete: missing {name}"):
        load_dataset(dataset_copy)


def test_not_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="is not a dataset folder"):
        load_dataset(tmp_path / "nothing")


def test_damaged_manifest(dataset_copy):
    (dataset_copy / "manifest.json").write_text('{"format": "avatar4d.dataset", ')
    with pytest.raises(DatasetError, match="is not valid JSON"):
        load_dataset(dataset_copy)


@pytest.mark.parametrize("key, value, message", [
    ("format", "something.else", "is not an avatar4d dataset"),
    ("version", DATASET_VERSION + 1, f"is a version {DATASET_VERSION + 1} dataset"),
])
def test_other_formats_and_versions_are_refused(dataset_copy, key, value, message):
    manifest = json.loads((dataset_copy / "manifest.json").read_text())
    assert manifest["format"] == DATASET_FORMAT
    manifest[key] = value
    (dataset_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=message):
        load_dataset(dataset_copy)


def test_frames_that_do_not_match_the_tracking_are_refused(dataset_copy):
    count = load_dataset(dataset_copy).tracking.num_frames
    last = DatasetLayout(dataset_copy).frame(count - 1)
    last.rename(DatasetLayout(dataset_copy).frame(count))
    with pytest.raises(DatasetError, match=f"does not hold the {count} frames"):
        load_dataset(dataset_copy)


def test_damaged_tracking_is_refused(dataset_copy):
    path = dataset_copy / "tracking.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="cannot read the tracking"):
        load_dataset(dataset_copy)


def test_tracking_from_another_version_is_named(dataset_copy, prepared_dataset):
    tracking = load_dataset(prepared_dataset).tracking
    tensors = {name: np.ascontiguousarray(getattr(tracking, name)) for name in ("source_frames", "times_s")}
    save_file(tensors, str(dataset_copy / "tracking.safetensors"))
    with pytest.raises(DatasetError, match="tracking lacks '(flagged|landmarks)'; the dataset is from another version"):
        load_dataset(dataset_copy)


def test_missing_image_is_named(dataset_copy):
    dataset = load_dataset(dataset_copy)
    dataset.layout.person_mask(3).unlink()
    with pytest.raises(DatasetError, match="000003.png is missing"):
        dataset.load_person_mask(3)
