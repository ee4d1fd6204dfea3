"""The background plate, estimated from the video itself (no separate capture of the empty scene, unlike NeRFace).

Per pixel: the median over a fixed sample of frames (spread over the whole video, so memory does not grow with its
length) of the values where the segmentation says the pixel is not the person. Pixels the person never uncovers are
inpainted and marked as holes.
"""

from __future__ import annotations

import cv2
import numpy as np


class BackgroundAccumulator:
    """Collect background samples from up to ``max_samples`` frames, then take the masked median.

    Args:
        height, width: frame size.
        max_samples: frames kept in memory (each (H, W, 3) uint8 plus an (H, W) mask).
        person_threshold: person probability above which a pixel is not background.
        margin_px: the person mask is grown by this much first (soft edges and motion blur stay out of the plate).
    """

    def __init__(self, height: int, width: int, max_samples: int = 60, *, person_threshold: float = 0.2,
                 margin_px: int = 4) -> None:
        self.height, self.width = height, width
        self.max_samples = max_samples
        self._images = np.zeros((max_samples, height, width, 3), np.uint8)
        self._valid = np.zeros((max_samples, height, width), bool)
        self._count = 0
        self._threshold = person_threshold
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1, 2 * margin_px + 1))

    @property
    def count(self) -> int:
        return self._count

    def add(self, image: np.ndarray, person: np.ndarray) -> None:
        """Add one (H, W, 3) uint8 frame and its (H, W) person probability (float in [0, 1] or uint8)."""
        if self._count >= self.max_samples:
            raise ValueError(f"the background sample is full ({self.max_samples} frames)")
        probability = person.astype(np.float32) / 255.0 if person.dtype == np.uint8 else person
        grown = cv2.dilate((probability > self._threshold).astype(np.uint8), self._kernel)
        self._images[self._count] = image
        self._valid[self._count] = grown == 0
        self._count += 1

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The plate and its holes.

        Returns:
            (H, W, 3) uint8 plate, and (H, W) bool holes (pixels never seen as background, inpainted).
        """
        if self._count == 0:
            raise ValueError("no frames were added to the background")
        images = self._images[: self._count]
        valid = self._valid[: self._count]
        plate = masked_median(images, valid)
        holes = ~valid.any(0)
        if holes.any():
            plate = cv2.inpaint(plate, holes.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        return plate, holes


def masked_median(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-pixel median over the valid samples.

    Args:
        images: (N, H, W, 3) uint8.
        valid: (N, H, W) bool.

    Returns:
        (H, W, 3) uint8; 0 where no sample is valid. For an even number of valid samples the lower middle value.
    """
    n = valid.sum(0)  # (H, W)
    # invalid samples sort to the end (256 is above every uint8 value)
    values = np.where(valid[..., None], images.astype(np.int16), np.int16(256))
    values.sort(axis=0)
    middle = np.clip((n - 1) // 2, 0, None)  # (H, W)
    picked = np.take_along_axis(values, middle[None, :, :, None].repeat(3, axis=3), axis=0)[0]
    picked = np.where(n[..., None] > 0, picked, 0)
    return picked.astype(np.uint8)
