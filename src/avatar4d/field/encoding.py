"""Encodings of view directions (real spherical harmonics; degree 1 keeps view dependence small)."""

from __future__ import annotations

import torch
from torch import Tensor

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)


def spherical_harmonics(directions: Tensor, degree: int) -> Tensor:
    """Real spherical harmonics of unit directions.

    Args:
        directions: (N, 3) unit vectors.
        degree: 0, 1 or 2.

    Returns:
        (N, (degree + 1) ** 2).
    """
    x, y, z = directions.unbind(-1)
    terms = [torch.full_like(x, _C0)]
    if degree >= 1:
        terms += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        terms += [_C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * z * z - x * x - y * y), _C2[3] * x * z,
                  _C2[4] * (x * x - y * y)]
    if degree > 2:
        raise ValueError(f"spherical harmonics of degree {degree} are not implemented (0-2)")
    return torch.stack(terms, -1)


def num_sh_coefficients(degree: int) -> int:
    return (degree + 1) ** 2
