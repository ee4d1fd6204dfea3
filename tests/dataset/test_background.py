"""The background plate: the masked median against a per-pixel loop, and a known background recovered from real frames
with a moving occluder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar4d.dataset.background import BackgroundAccumulator, masked_median


def masked_median_by_loop(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One pixel and channel at a time: the lower middle of the sorted valid samples (0 where there are none)."""
    count, height, width, channels = images.shape
    out = np.zeros((height, width, channels), np.uint8)
    for y in range(height):
        for x in range(width):
            samples = images[valid[:, y, x], y, x]
            if len(samples) == 0:
                continue
            for c in range(channels):
                # np.median would average the two middle values of an even count; the plate takes the lower one so
                # that every plate pixel is a colour that was really seen
                out[y, x, c] = np.percentile(samples[:, c], 50, method="lower")
    return out


@pytest.mark.parametrize("count", [1, 2, 5, 6, 11])
def test_masked_median_equals_a_loop(face_frames, count):
    rng = np.random.default_rng(count)
    # real pixels: patches of frames spread over the clip
    images = np.stack([face_frames[i][100:124, 300:340] for i in np.linspace(0, 71, count).astype(int)])
    valid = rng.random(images.shape[:3]) < 0.6
    valid[:, 0, :5] = False  # some pixels never valid
    np.testing.assert_array_equal(masked_median(images, valid), masked_median_by_loop(images, valid))


def test_masked_median_takes_the_lower_middle_of_an_even_count():
    images = np.array([10, 20, 200, 250], np.uint8).reshape(4, 1, 1, 1).repeat(3, axis=3)
    valid = np.ones((4, 1, 1), bool)
    assert masked_median(images, valid)[0, 0].tolist() == [20, 20, 20]
    valid[3] = False
    assert masked_median(images, valid)[0, 0].tolist() == [20, 20, 20]
    valid[:] = False
    assert masked_median(images, valid)[0, 0].tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def scene(face_frames):
    """A real background (a downscaled frame) and a real 'person' (a patch of another frame) moving across it."""
    background = cv2.resize(face_frames[0], (160, 96), interpolation=cv2.INTER_AREA)
    person = cv2.resize(face_frames[50][60:300, 200:440], (40, 40), interpolation=cv2.INTER_AREA)
    frames, masks = [], []
    for step in range(12):
        x0, y0 = 50 + 3 * step, 30 + (step % 3) * 2  # moves less than its width: some pixels stay hidden
        frame = background.copy()
        frame[y0:y0 + 40, x0:x0 + 40] = person
        mask = np.zeros((96, 160), np.uint8)
        mask[y0:y0 + 40, x0:x0 + 40] = 255
        frames.append(frame)
        masks.append(mask)
    return background, frames, masks


def test_plate_recovers_the_background_behind_a_moving_person(scene):
    background, frames, masks = scene
    accumulator = BackgroundAccumulator(96, 160, max_samples=12, margin_px=4)
    for frame, mask in zip(frames, masks):
        accumulator.add(frame, mask)
    plate, holes = accumulator.finish()
    assert plate.shape == (96, 160, 3) and plate.dtype == np.uint8 and holes.dtype == bool
    # a pixel is a hole when it is within the person (grown by the 4-pixel margin) in every frame
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    covered = np.stack([cv2.dilate(m, kernel) > 0 for m in masks])
    np.testing.assert_array_equal(holes, covered.all(0))
    assert 0 < holes.sum() < 0.1 * holes.size
    np.testing.assert_array_equal(plate[~holes], background[~holes])
    # holes are filled from their surroundings (Telea inpainting, radius 5), not left black
    seen = np.stack(frames)
    valid = ~np.stack([cv2.dilate(m, kernel) > 0 for m in masks])
    expected = cv2.inpaint(masked_median(seen, valid), holes.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    np.testing.assert_array_equal(plate, expected)
    assert (plate[holes].max(axis=1) > 0).all()


def test_soft_masks_count_as_person_above_the_threshold(scene):
    background, frames, _ = scene
    other = frames[5]
    for probability, expect_background in [(0.15, True), (0.25, False)]:
        accumulator = BackgroundAccumulator(96, 160, max_samples=3, person_threshold=0.2, margin_px=0)
        soft = np.zeros((96, 160), np.float32)
        soft[:, :80] = probability  # the left half is ambiguous in every frame but one
        accumulator.add(other, soft)
        accumulator.add(other, soft)
        accumulator.add(background, np.zeros((96, 160), np.uint8))
        plate, holes = accumulator.finish()
        assert not holes.any()
        if expect_background:  # all three samples count: the median is the frame seen twice
            np.testing.assert_array_equal(plate[:, :80], other[:, :80])
        else:  # only the clean frame counts there
            np.testing.assert_array_equal(plate[:, :80], background[:, :80])
    # uint8 masks are probabilities times 255
    a = BackgroundAccumulator(96, 160, max_samples=1, margin_px=0)
    a.add(other, np.full((96, 160), 64, np.uint8))  # 0.25
    assert a.finish()[1].all()


def test_accumulator_refuses_too_many_and_too_few_frames(scene):
    background, _, _ = scene
    accumulator = BackgroundAccumulator(96, 160, max_samples=1)
    with pytest.raises(ValueError, match="no frames"):
        accumulator.finish()
    accumulator.add(background, np.zeros((96, 160), np.uint8))
    with pytest.raises(ValueError, match="full"):
        accumulator.add(background, np.zeros((96, 160), np.uint8))
