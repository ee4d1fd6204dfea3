"""The expression basis equals an SVD of the same residuals, codes have unit variance, and encoding round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from avatar4d.dataset.layout import load_dataset
from avatar4d.tracking.expression import ResidualCovariance, fit_expression_basis
from avatar4d.tracking.face_model import remove_rigid_motion
from avatar4d.tracking.head_pose import landmarks_to_head_space


@pytest.fixture(scope="module")
def residuals(prepared_dataset) -> np.ndarray:
    """(F, L, 3) real non-rigid residuals: every frame's landmarks in the head frame minus the template."""
    dataset = load_dataset(prepared_dataset)
    tracking, template = dataset.tracking, dataset.face_model.template
    lifted = np.stack([landmarks_to_head_space(tracking.landmarks[i].astype(np.float64), tracking.camera_from_head[i],
                                               dataset.camera, template) for i in range(tracking.num_frames)])
    return remove_rigid_motion(lifted, template) - template[None]


def accumulate(residuals: np.ndarray, chunk: int) -> ResidualCovariance:
    covariance = ResidualCovariance(residuals[0].size)
    for start in range(0, len(residuals), chunk):
        covariance.add(residuals[start:start + chunk])
    return covariance


def test_streamed_moments_equal_the_whole_matrix(residuals):
    flat = residuals.reshape(len(residuals), -1)
    covariance = accumulate(residuals, chunk=10)
    assert covariance.count == len(residuals)
    np.testing.assert_allclose(covariance.outer, flat.T @ flat, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(covariance.sum, flat.sum(0), rtol=1e-12, atol=1e-15)


@pytest.fixture(scope="module")
def basis(residuals):
    return fit_expression_basis(accumulate(residuals, chunk=16), num_components=32)


def test_basis_equals_svd_of_the_residuals(residuals, basis):
    flat = residuals.reshape(len(residuals), -1)
    count = len(flat)
    _, singular, vt = np.linalg.svd(flat, full_matrices=False)
    k = len(basis.stddev)
    assert k == 32
    # second moments about zero (the template is the mean face): eigenvalues are s^2 / F
    np.testing.assert_allclose(basis.stddev, singular[:k] / np.sqrt(count), rtol=1e-6)
    np.testing.assert_allclose(basis.explained_variance_ratio, singular[:k] ** 2 / (singular**2).sum(), rtol=1e-6,
                               atol=1e-12)
    for i in range(k):  # the same directions up to sign
        assert abs(float(basis.components[i] @ vt[i])) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(k), atol=1e-10)
    # the sign rule: the largest-magnitude entry of each component is positive
    rows = np.arange(k)
    assert (basis.components[rows, np.abs(basis.components).argmax(1)] > 0).all()


def test_reconstruction_error_is_the_svd_truncation_error(residuals, basis):
    """Eckart-Young: the best rank-k approximation leaves exactly the energy of the discarded singular values."""
    flat = residuals.reshape(len(residuals), -1)
    singular = np.linalg.svd(flat, compute_uv=False)
    left = ((basis.decode(basis.encode(residuals)) - residuals) ** 2).sum()
    assert left == pytest.approx((singular[32:] ** 2).sum(), rel=1e-6)


def test_components_are_limited_by_the_frame_count(residuals):
    basis = fit_expression_basis(accumulate(residuals[:10], chunk=10), num_components=32)
    assert len(basis.stddev) == 9
    with pytest.raises(ValueError, match="at least two frames"):
        fit_expression_basis(accumulate(residuals[:1], chunk=1), num_components=4)


def test_codes_have_unit_variance_over_the_video(residuals, basis):
    codes = basis.encode(residuals)
    assert codes.shape == (len(residuals), 32)
    np.testing.assert_allclose((codes**2).mean(0), 1.0, rtol=1e-6)


def test_encode_decode_round_trip(residuals, basis):
    k = len(basis.stddev)
    codes = np.random.default_rng(0).normal(size=(5, k))
    decoded = basis.decode(codes)
    assert decoded.shape == (5,) + residuals.shape[1:]
    np.testing.assert_allclose(basis.encode(decoded), codes, atol=1e-9)
    # scaled: the displacement of one unit of each code
    np.testing.assert_allclose(np.einsum("fk,kld->fld", codes, basis.scaled), decoded, atol=1e-15)
    # on real residuals, decode(encode(r)) is the projection onto the basis: applying it twice changes nothing
    projected = basis.decode(basis.encode(residuals))
    np.testing.assert_allclose(basis.decode(basis.encode(projected)), projected, atol=1e-12)
