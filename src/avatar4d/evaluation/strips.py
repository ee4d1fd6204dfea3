"""Side-by-side strips a person looks at: ground truth | render | error map."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from avatar4d.images import to_uint8


def error_map(image: torch.Tensor, target: torch.Tensor, max_error: float = 0.25) -> np.ndarray:
    """(H, W, 3) uint8 colour map of the per-pixel mean absolute error (black 0, bright at ``max_error`` and above)."""
    error = (image - target).abs().mean(-1).clamp(0, max_error) / max_error
    gray = (error.numpy() * 255).round().astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def comparison_strip(target: torch.Tensor, render: torch.Tensor, label: str = "") -> np.ndarray:
    """(H, 3 W, 3) uint8: ground truth | render | error map, with an optional label on the render."""
    strip = np.concatenate([to_uint8(target), to_uint8(render), error_map(render, target)], axis=1)
    if label:
        scale = max(0.35, target.shape[0] / 512)
        cv2.putText(strip, label, (6, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (255, 255, 255),
                    1, cv2.LINE_AA)
    return np.ascontiguousarray(strip)
