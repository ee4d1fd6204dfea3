"""Images at the file boundary: (H, W, 3) floats in [0, 1] inside the package, uint8 RGB in files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from avatar4d.atomic import atomic_file


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float [0, 1] (any device) -> uint8 numpy."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)


def to_float(image: np.ndarray) -> torch.Tensor:
    """(H, W, ...) uint8 -> float32 tensor in [0, 1] (CPU)."""
    return torch.from_numpy(image.astype(np.float32) / 255.0)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """An (S, S, ...) image resized to (size, size, ...): area filter when shrinking, bilinear when enlarging."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    with atomic_file(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"cannot write {path}")


def read_rgb(path: Path) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of an image file, or None when it is not a readable image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
