"""Tensors that travel together through a training step."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RayBatch:
    """Rays of a few frames, in the canonical head frame, with their training targets."""

    origins: Tensor
    """(R, 3) head frame, metres."""
    directions: Tensor
    """(R, 3) unit, head frame."""
    frame_ids: Tensor
    """(R,) int64 position of the ray's frame in ``frame_rows``."""
    frame_rows: Tensor
    """(F,) int64 training-frame rows (into the training frames' codes and latent codes)."""
    rgb: Tensor
    """(R, 3) target colour in [0, 1]."""
    opacity: Tensor
    """(R,) target opacity of the head field: the head mask (person above the neck cut)."""
    background: Tensor
    """(R, 3) colour behind the ray (the static scene plate)."""

    @property
    def num_rays(self) -> int:
        return self.origins.shape[0]

    def to(self, device: torch.device) -> RayBatch:
        """The same batch with every tensor on ``device``."""
        return RayBatch(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


@dataclass
class LandmarkRays:
    """Rays through tracked face landmarks, whose true distance to the camera the face model gives."""

    origins: Tensor
    """(R, 3) head frame, metres."""
    directions: Tensor
    """(R, 3) unit, head frame."""
    frame_ids: Tensor
    """(R,) int64 position of the ray's frame in the batch's ``frame_rows``."""
    distance: Tensor
    """(R,) distance from the camera to the landmark along the ray, metres."""


@dataclass
class PatchRays:
    """A square patch of one frame at full resolution, and one ray per ``factor x factor`` block of it (what the
    upsampler is trained on)."""

    origins: Tensor
    """(P * P, 3) head frame, metres, row-major blocks."""
    directions: Tensor
    """(P * P, 3) unit, head frame."""
    frame_ids: Tensor
    """(P * P,) int64 position of the patch's frame in the batch's ``frame_rows``."""
    rgb: Tensor
    """(1, 3, P * factor, P * factor) target colour in [0, 1]."""
    opacity: Tensor
    """(1, 1, P * factor, P * factor) target opacity (the head mask)."""
    background: Tensor
    """(1, 3, P * factor, P * factor) the scene plate behind it."""

    @property
    def blocks(self) -> int:
        """P, the rays per side."""
        return math.isqrt(self.origins.shape[0])

    def to(self, device: torch.device) -> PatchRays:
        """The same patch with every tensor on ``device``."""
        return PatchRays(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})
