"""Pixels to camera rays (OpenCV camera frame: x right, y down, z forward; pixel centres at integer + 0.5)."""

from __future__ import annotations

import torch
from torch import Tensor

from avatar4d.tracking.camera import PinholeCamera


def pixel_centers(width: int, height: int) -> Tensor:
    """(H * W, 2) pixel-centre coordinates (x, y), row-major."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                            torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def pixel_directions(camera: PinholeCamera, pixels: Tensor) -> Tensor:
    """Unit ray directions through pixel positions.

    Args:
        camera: intrinsics of the image the pixels are in.
        pixels: (R, 2) pixel coordinates (x, y).

    Returns:
        (R, 3) unit directions, camera frame.
    """
    x = (pixels[:, 0] - camera.cx) / camera.fx
    y = (pixels[:, 1] - camera.cy) / camera.fy
    directions = torch.stack([x, y, torch.ones_like(x)], -1)
    return directions / directions.norm(dim=-1, keepdim=True)
