"""Shared checks of what a user asks for: sizes, finite numbers, output files."""

from __future__ import annotations

import math

import pytest

from avatar4d.errors import ControlError, OutputError
from avatar4d.validation import MAX_IMAGE_SIZE, check_finite, check_image_size, check_output_file


@pytest.mark.parametrize("size", [0, -5, MAX_IMAGE_SIZE + 1, 10**9])
def test_check_image_size_refuses_zero_negative_and_absurd_sizes(size):
    with pytest.raises(ControlError, match="--size"):
        check_image_size(size)


@pytest.mark.parametrize("size", [None, 1, 512, MAX_IMAGE_SIZE])
def test_check_image_size_accepts_none_and_sizes_in_range(size):
    check_image_size(size)


def test_check_finite_names_the_option():
    check_finite(yaw=10.0, pitch=None)
    with pytest.raises(ControlError, match="--pitch"):
        check_finite(yaw=1.0, pitch=math.inf)


def test_check_output_file_refuses_a_wrong_suffix_a_missing_folder_and_a_folder(tmp_path):
    assert check_output_file(tmp_path / "a.mp4", (".mp4",)) == tmp_path / "a.mp4"
    with pytest.raises(OutputError, match="ending in .png"):
        check_output_file(tmp_path / "a.jpg", (".png",))
    with pytest.raises(OutputError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "a.png", (".png",))
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path / "dir.png", (".png",))
