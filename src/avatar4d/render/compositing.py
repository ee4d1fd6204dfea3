"""Volume rendering: alpha compositing of samples along rays, front to back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Composite:
    """What compositing a batch of rays gives."""

    rgb: Tensor
    """(R, C) colour (and any feature channels) of the field alone (premultiplied: add
    ``(1 - opacity) * background``)."""
    opacity: Tensor
    """(R,) accumulated opacity in [0, 1]."""
    weights: Tensor
    """(R, S) contribution of each sample; sums to ``opacity`` along each ray."""
    depth: Tensor
    """(R,) expected distance along the ray (weighted by ``weights``, not normalised)."""
    depth_second_moment: Tensor
    """(R,) ``sum_s weights_s * distance_s ** 2`` (with ``depth``: how spread the ray's termination is)."""


def composite(density: Tensor, color: Tensor, deltas: Tensor, distances: Tensor | None = None) -> Composite:
    """Front-to-back compositing ``sum_s T_s alpha_s c_s`` with ``alpha_s = 1 - exp(-density_s delta_s)``.

    Args:
        density: (R, S) non-negative density per unit length.
        color: (R, S, C) colour (and any features) of each sample.
        deltas: (R, S) length of each sample's interval.
        distances: (R, S) distance of each sample along its ray (for depth), or None.

    Returns:
        The composite; ``weights.sum(-1) <= 1``.
    """
    optical = density * deltas
    alpha = 1.0 - torch.exp(-optical)
    # transmittance before each sample: exp(-sum of optical depth in front of it)
    transmittance = torch.exp(-torch.cumsum(torch.cat([optical.new_zeros(optical.shape[0], 1), optical[:, :-1]], 1), 1))
    weights = transmittance * alpha
    rgb = (weights.unsqueeze(-1) * color).sum(1)
    opacity = weights.sum(1)
    if distances is None:
        depth = second = opacity.new_zeros(opacity.shape)
    else:
        depth = (weights * distances).sum(1)
        second = (weights * distances.square()).sum(1)
    return Composite(rgb=rgb, opacity=opacity, weights=weights, depth=depth, depth_second_moment=second)


def distortion(weights: Tensor, distances: Tensor, deltas: Tensor) -> Tensor:
    """Mip-NeRF 360's distortion loss per ray, ``sum_ij w_i w_j |t_i - t_j| + 1/3 sum_i w_i^2 delta_i``: small when a
    ray's weight sits in one short stretch (a thin surface), large when it is smeared along the ray. O(S) per ray
    through prefix sums, for samples sorted by distance.

    Args:
        weights: (R, S) compositing weights.
        distances: (R, S) sample distances along each ray, ascending.
        deltas: (R, S) interval lengths.

    Returns:
        (R,) in the units of ``distances``.
    """
    before = torch.cumsum(weights, 1) - weights  # sum_{j<i} w_j
    moment_before = torch.cumsum(weights * distances, 1) - weights * distances  # sum_{j<i} w_j t_j
    between = 2.0 * (weights * (distances * before - moment_before)).sum(1)
    return between + (weights.square() * deltas).sum(1) / 3.0


def over_background(result: Composite, background: Tensor) -> Tensor:
    """(R, 3) final colour: the field over a (R, 3) background (NeRFace fixes the ray's end to the background)."""
    return result.rgb + (1.0 - result.opacity).unsqueeze(-1) * background
