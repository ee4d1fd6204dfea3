"""Rigid transforms as (..., 4, 4) matrices named ``b_from_a`` (``head_from_camera @ x_camera`` is a head point).

The functions take numpy arrays or torch tensors alike and return the same kind.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def make_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation and (3,) translation -> (4, 4) rigid transform."""
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = translation
    return pose


def invert_rigid(b_from_a: Array) -> Array:
    """``a_from_b``: the inverse of (..., 4, 4) rigid transforms (same kind, dtype and device)."""
    rotation = b_from_a[..., :3, :3].swapaxes(-1, -2)
    out = torch.zeros_like(b_from_a) if isinstance(b_from_a, torch.Tensor) else np.zeros_like(b_from_a)
    out[..., :3, :3] = rotation
    out[..., :3, 3:] = -(rotation @ b_from_a[..., :3, 3:])
    out[..., 3, 3] = 1.0
    return out


def transform_points(b_from_a: Array, points_a: Array) -> Array:
    """(N, 3) points of frame a -> (N, 3) points of frame b under one (4, 4) rigid transform."""
    return points_a @ b_from_a[:3, :3].swapaxes(0, 1) + b_from_a[:3, 3]
