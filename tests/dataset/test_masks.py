"""Masks: the guided filter against OpenCV's, region masks against a point-in-polygon test, and the person mask on real
frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from avatar4d.dataset.layout import load_dataset
from avatar4d.dataset.masks import (
    PersonSegmenter,
    eyes_region_mask,
    face_region_mask,
    fast_guided_filter,
    mouth_region_mask,
)
from avatar4d.tracking import landmarks as lm


@pytest.fixture(scope="module")
def dataset(prepared_dataset):
    return load_dataset(prepared_dataset)


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


@pytest.mark.parametrize("frame, radius, eps", [(0, 6, 1e-3), (30, 3, 1e-2), (60, 1, 1e-4), (71, 12, 1e-3)])
def test_exact_guided_filter_equals_opencv(dataset, frame, radius, eps):
    guide = grey(dataset.load_frame(frame))
    source = dataset.load_person_mask(frame).astype(np.float32) / 255.0
    ours = fast_guided_filter(guide, source, radius, eps, subsample=1)
    reference = cv2.ximgproc.guidedFilter(guide, source, radius, eps)
    # Both reflect at the border (BORDER_REFLECT); with BORDER_REFLECT_101 or BORDER_REPLICATE the border pixels
    # would differ by 5e-3 to 1e-2. What remains is OpenCV's float32 arithmetic: our formula evaluated in float64
    # differs from cv2.ximgproc.guidedFilter by 2.4e-5 at most (measured), everywhere including the border.
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
    assert ours.shape == source.shape and ours.dtype == np.float32


def test_subsampled_guided_filter_stays_close_to_the_exact_one(dataset):
    guide = grey(dataset.load_frame(20))
    source = dataset.load_person_mask(20).astype(np.float32) / 255.0
    exact = fast_guided_filter(guide, source, 6, 1e-3, subsample=1)
    fast = fast_guided_filter(guide, source, 6, 1e-3, subsample=2)
    difference = np.abs(fast - exact)
    assert difference.mean() < 0.005 and difference.max() < 0.05  # measured 0.0009 and 0.02


def test_guided_filter_keeps_a_constant_and_follows_the_guide(dataset):
    guide = grey(dataset.load_frame(5))
    constant = np.full_like(guide, 0.7)
    np.testing.assert_allclose(fast_guided_filter(guide, constant, 6, 1e-3, subsample=1), 0.7, atol=1e-5)
    # filtering the guide itself with a tiny eps returns it (a = 1, b = 0 wherever the guide varies)
    np.testing.assert_allclose(fast_guided_filter(guide, guide, 4, 1e-8, subsample=1), guide, atol=2e-3)


def inside_convex_hull(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel by pixel, as on paper: is the pixel's integer coordinate inside or on the hull of the rounded points?"""
    hull = cv2.convexHull(np.round(points[:, :2]).astype(np.int32))
    out = np.zeros((height, width), bool)
    for y in range(height):
        for x in range(width):
            out[y, x] = cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0
    return out, hull


@pytest.mark.parametrize("frame", [0, 40])
def test_face_mask_is_the_inside_of_the_face_outline(dataset, frame):
    landmarks = dataset.tracking.landmarks[frame]
    mask = face_region_mask(landmarks, 256, 256)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    reference, hull = inside_convex_hull(landmarks[list(lm.FACE_OVAL)], 256, 256)
    disagree = np.argwhere((mask > 0) != reference)
    assert len(disagree) < 0.02 * reference.sum()
    # rasterisation differs only on the outline itself
    for y, x in disagree:
        assert abs(cv2.pointPolygonTest(hull, (float(x), float(y)), True)) <= 1.0
    # and the stored face mask is this one
    np.testing.assert_array_equal(dataset.load_face_mask(frame), mask)


def test_mouth_and_eye_masks_cover_their_landmarks(dataset):
    landmarks = dataset.tracking.landmarks[10]
    mouth = mouth_region_mask(landmarks, 256, 256)
    eyes = eyes_region_mask(landmarks, 256, 256)
    face = face_region_mask(landmarks, 256, 256)
    for index in lm.LIPS_OUTER:
        x, y = np.round(landmarks[index, :2]).astype(int)
        assert mouth[y, x] == 255
    for index in lm.RIGHT_EYE_CORNERS + lm.LEFT_EYE_CORNERS + lm.RIGHT_BROW + lm.LEFT_BROW:
        x, y = np.round(landmarks[index, :2]).astype(int)
        assert eyes[y, x] == 255
    assert not np.logical_and(mouth > 0, eyes > 0).any()
    assert (mouth > 0).sum() < 0.2 * (face > 0).sum() and (eyes > 0).sum() < 0.4 * (face > 0).sum()
    grown = mouth_region_mask(landmarks, 256, 256, dilate_px=8)
    assert (grown >= mouth).all() and (grown > 0).sum() > (mouth > 0).sum()


def test_person_mask_on_a_real_frame(dataset):
    image = dataset.load_frame(10)
    landmarks = dataset.tracking.landmarks[10]
    with PersonSegmenter() as segmenter:
        raw = segmenter.predict(image)
        refined = segmenter.segment(image, landmarks)
    assert raw.shape == refined.shape == (256, 256) and refined.dtype == np.float32
    assert 0.0 <= refined.min() and refined.max() <= 1.0
    face = cv2.erode(face_region_mask(landmarks, 256, 256), np.ones((9, 9), np.uint8)) > 0
    assert refined[face].mean() > 0.97  # the face is always person
    assert refined[:24, :24].mean() < 0.05  # the door behind him (top left of the crop)
    assert refined[-24:, :24].mean() > 0.9  # his shirt (bottom left)
    # the stored mask is this one, up to 8-bit storage and the JPEG the frame went through
    stored = dataset.load_person_mask(10).astype(np.float32) / 255.0
    assert np.abs(stored - refined).mean() < 0.01
