"""The held-out frames an avatar is evaluated on: the dataset's last contiguous block, never trained on, with poses
and expression codes from tracking, at the avatar's resolution."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from avatar4d.dataset.layout import PreparedDataset


@dataclass(frozen=True)
class HeldoutFrame:
    index: int
    """Dataset frame index."""
    rgb: torch.Tensor
    """(H, W, 3) float ground truth in [0, 1]."""
    face: torch.Tensor
    """(H, W) bool face region (inside the face outline)."""
    camera_from_head: np.ndarray
    """(4, 4)."""
    code: np.ndarray
    """(K,)."""


def heldout_frames(dataset: PreparedDataset, size: int, indices: np.ndarray | None = None) -> list[HeldoutFrame]:
    """Load held-out frames (all of them by default) resized to ``size``."""
    chosen = dataset.heldout_indices if indices is None else indices
    out = []
    for index in chosen:
        index = int(index)
        rgb = cv2.resize(dataset.load_frame(index), (size, size), interpolation=cv2.INTER_AREA)
        face = cv2.resize(dataset.load_face_mask(index), (size, size), interpolation=cv2.INTER_AREA) > 127
        out.append(HeldoutFrame(index=index, rgb=torch.from_numpy(rgb.astype(np.float32) / 255.0),
                                face=torch.from_numpy(face), camera_from_head=dataset.tracking.camera_from_head[index],
                                code=dataset.tracking.expression[index]))
    return out
