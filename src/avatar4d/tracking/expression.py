"""The expression basis: PCA of the landmarks' non-rigid residuals in canonical space.

The covariance is accumulated frame by frame (memory independent of the video's length); components are scaled so
that codes have unit variance over the video (``e0=2.0`` means two standard deviations along the first component).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ResidualCovariance:
    """Streaming second moments of (N, D) residual vectors (D = 3 L), about zero (the template is their mean)."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.sum = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, residuals: np.ndarray) -> None:
        """Accumulate (N, D) residuals."""
        residuals = np.asarray(residuals, dtype=np.float64).reshape(len(residuals), -1)
        self.count += len(residuals)
        self.sum += residuals.sum(0)
        self.outer += residuals.T @ residuals


@dataclass(frozen=True)
class ExpressionBasis:
    """K principal directions of (L, 3) residuals; ``code = components @ r / stddev``."""

    components: np.ndarray
    """(K, D) orthonormal rows, D = 3 L."""
    stddev: np.ndarray
    """(K,) standard deviation of the residuals along each component, metres."""
    explained_variance_ratio: np.ndarray
    """(K,) share of the total residual variance that each component explains."""

    @property
    def scaled(self) -> np.ndarray:
        """(K, L, 3) displacement per unit code, metres."""
        return (self.components * self.stddev[:, None]).reshape(len(self.stddev), -1, 3)

    def encode(self, residuals: np.ndarray) -> np.ndarray:
        """(F, L, 3) residuals -> (F, K) unit-variance codes."""
        flat = residuals.reshape(len(residuals), -1)
        return (flat @ self.components.T) / self.stddev

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(F, K) codes -> (F, L, 3) residuals."""
        flat = (codes * self.stddev) @ self.components
        return flat.reshape(len(codes), -1, 3)


def fit_expression_basis(covariance: ResidualCovariance, num_components: int) -> ExpressionBasis:
    """Top ``num_components`` eigenvectors of the accumulated (uncentred) covariance."""
    if covariance.count < 2:
        raise ValueError("need at least two frames to fit an expression basis")
    second_moment = covariance.outer / covariance.count
    eigenvalues, eigenvectors = np.linalg.eigh(second_moment)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    k = min(num_components, covariance.count - 1, len(eigenvalues))
    total = float(eigenvalues.sum())
    components = eigenvectors[:, :k].T
    # a deterministic sign: the largest-magnitude entry of each component is positive
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(1)])
    components = components * signs[:, None]
    stddev = np.sqrt(np.maximum(eigenvalues[:k], 1e-16))
    ratio = eigenvalues[:k] / total if total > 0 else np.zeros(k)
    return ExpressionBasis(components=components, stddev=stddev, explained_variance_ratio=ratio)
