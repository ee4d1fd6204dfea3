"""Pixels to camera rays, and rays from the camera frame into the canonical head frame (NeRFace: the head stays
still and the camera moves)."""

from __future__ import annotations

import torch
from torch import Tensor

from avatar4d.geometry.camera import PinholeCamera


def pixel_centers(width: int, height: int, device: torch.device | str | None = None) -> Tensor:
    """(H * W, 2) pixel-centre coordinates (x, y), row-major."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device) + 0.5,
                            torch.arange(width, dtype=torch.float32, device=device) + 0.5, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)


def block_centres(top: int, left: int, rows: int, columns: int, factor: int, device: torch.device | None = None
                  ) -> Tensor:
    """Pixel coordinates (output resolution) of the centres of ``factor x factor`` blocks: where the rays of the
    low-resolution render go so that each covers its block of output pixels.

    Args:
        top, left: the first block's top-left output pixel.
        rows, columns: blocks down and across.

    Returns:
        (rows * columns, 2) (x, y) row-major, in the convention of :func:`pixel_centers` (pixel ``i`` spans
        ``[i, i + 1)``; for ``factor`` 1 these are the pixel centres).
    """
    ys = top + factor * torch.arange(rows, dtype=torch.float32, device=device) + factor / 2.0
    xs = left + factor * torch.arange(columns, dtype=torch.float32, device=device) + factor / 2.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], -1).reshape(-1, 2)


def pixel_directions(camera: PinholeCamera, pixels: Tensor) -> Tensor:
    """Unit ray directions through pixel positions.

    Args:
        camera: intrinsics of the image the pixels are in.
        pixels: (R, 2) pixel coordinates (x, y).

    Returns:
        (R, 3) unit directions, camera frame (on the pixels' device).
    """
    x = (pixels[:, 0] - camera.cx) / camera.fx
    y = (pixels[:, 1] - camera.cy) / camera.fy
    directions = torch.stack([x, y, torch.ones_like(x)], -1)
    return directions / directions.norm(dim=-1, keepdim=True)


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


def camera_rays_in_head(directions_camera: Tensor, head_from_camera: Tensor) -> tuple[Tensor, Tensor]:
    """Rays from the camera centre along camera-frame directions, in the head frame.

    Args:
        directions_camera: (R, 3) unit directions, camera frame.
        head_from_camera: (4, 4) shared or (R, 4, 4) per ray.

    Returns:
        (R, 3) origins (the camera centre in the head frame) and (R, 3) unit directions, head frame.
    """
    return rays_to_head_space(torch.zeros_like(directions_camera), directions_camera, head_from_camera)
