"""The head-shape prior: the cranium's ellipsoid and its core on the sample subject's real landmark template, and
uniform sampling inside an ellipsoid against the volume fractions it must give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar4d.field.head_field import HeadFieldConfig, field_geometry
from avatar4d.field.head_shape import CORE_MARGIN, CORE_SCALE, Ellipsoid, cranium, head_core
from avatar4d.tracking import landmarks as lm


def test_the_cranium_is_as_broad_as_the_template_and_sits_behind_the_face(face_template):
    shape = cranium(face_template)
    assert 2 * shape.radii[0] == pytest.approx(np.ptp(face_template[:, 0]))
    assert shape.radii[2] > shape.radii[0]  # longer front to back than broad
    assert shape.centre[2] < face_template[lm.NOSE_TIP, 2] - 0.05  # several centimetres behind the nose tip
    top = shape.centre[1] + shape.radii[1]
    assert top > face_template[lm.FOREHEAD, 1] + 0.02  # the skull rises above the forehead landmark
    assert shape.centre[2] + shape.radii[2] == pytest.approx(face_template[lm.FOREHEAD, 2])  # as far forward


def test_no_landmark_comes_near_the_core_and_the_core_is_inside_the_field(face_template):
    shape, core = cranium(face_template), head_core(face_template)
    scale = core.radii[0] / shape.radii[0]
    assert 0.5 < scale <= CORE_SCALE
    assert core.radius_of(face_template).min() >= (scale + CORE_MARGIN) / scale - 1e-9
    geometry = field_geometry(face_template, HeadFieldConfig())
    low = np.array(core.centre) - np.array(core.radii)
    high = np.array(core.centre) + np.array(core.radii)
    assert (low >= np.array(geometry.box_min)).all() and (high <= np.array(geometry.box_max)).all()


def test_samples_fill_the_ellipsoid_uniformly():
    ellipsoid = Ellipsoid(centre=(0.01, -0.02, -0.09), radii=(0.07, 0.06, 0.08))
    points = ellipsoid.sample(200_000, torch.Generator().manual_seed(0))
    assert points.shape == (200_000, 3) and points.dtype == torch.float32
    radius = ellipsoid.radius_of(points.numpy())
    assert radius.max() <= 1.0 + 1e-6
    # the volume inside a fraction f of the radii is f^3 of the whole
    for f in (0.5, 0.8):
        assert (radius <= f).mean() == pytest.approx(f ** 3, abs=0.005)
    np.testing.assert_allclose(points.numpy().mean(0), ellipsoid.centre, atol=5e-4)


def test_scaling_keeps_the_centre():
    ellipsoid = Ellipsoid(centre=(0.0, 0.1, -0.1), radii=(0.1, 0.2, 0.3))
    half = ellipsoid.scaled(0.5)
    assert half.centre == ellipsoid.centre and half.radii == pytest.approx((0.05, 0.1, 0.15))
