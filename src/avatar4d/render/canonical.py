"""Rays into the canonical head frame: the head stays still and the camera moves (NeRFace)."""

from __future__ import annotations

import torch
from torch import Tensor


def rays_to_head_space(origins: Tensor, directions: Tensor, head_from_camera: Tensor) -> tuple[Tensor, Tensor]:
    """Express camera rays in the canonical head frame.

    Args:
        origins: (R, 3) ray origins, camera frame.
        directions: (R, 3) unit ray directions, camera frame.
        head_from_camera: (4, 4) shared or (R, 4, 4) per ray; rigid, maps camera points to head points.

    Returns:
        (R, 3) origins and (R, 3) unit directions in the head frame.
    """
    rotation, translation = head_from_camera[..., :3, :3], head_from_camera[..., :3, 3]
    origins_head = (rotation @ origins.unsqueeze(-1)).squeeze(-1) + translation
    directions_head = (rotation @ directions.unsqueeze(-1)).squeeze(-1)
    return origins_head, directions_head


def invert_rigid(transform: Tensor) -> Tensor:
    """Inverse of (..., 4, 4) rigid transforms."""
    rotation = transform[..., :3, :3].transpose(-1, -2)
    out = torch.zeros_like(transform)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = -(rotation @ transform[..., :3, 3].unsqueeze(-1)).squeeze(-1)
    out[..., 3, 3] = 1.0
    return out
