"""Options of ``avatar4d prepare`` (and of tracking a reenactment driver), checked when they are made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from avatar4d.errors import ControlError
from avatar4d.tracking.camera import PHONE_FRONT_CAMERA_FOV_DEG
from avatar4d.tracking.head_pose import PoseSmoothingConfig
from avatar4d.validation import MAX_IMAGE_SIZE


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``avatar4d prepare``."""

    size: int = 512
    """Side of the square head crop in pixels."""
    fov_deg: float = PHONE_FRONT_CAMERA_FOV_DEG
    """Field of view across the source video's longer side (default: a phone front camera)."""
    max_frames: int | None = None
    """Use at most this many frames (after --every)."""
    every: int = 1
    """Keep one frame in every K."""
    num_components: int = 32
    """Expression components (PCA of the landmark residuals)."""
    crop_margin: float = 2.2
    """Crop side as a multiple of the face-box size (room for hair and neck)."""
    heldout_fraction: float = 0.1
    """Share of frames held out at the end of the video, as one contiguous block."""
    min_frames: int = 30
    """Refuse videos with fewer usable frames than this."""
    scan_frames: int = 80
    """Frames analysed by face detection in the first pass, at most."""
    background_samples: int = 60
    """Frames the background plate is estimated from."""
    jpeg_quality: int = 95
    smoothing: PoseSmoothingConfig = field(default_factory=PoseSmoothingConfig)
    """The zero-lag adaptive pose smoother."""
    max_source_pixels: int = 8192 * 8192
    """Refuse videos whose frames are larger than this."""
    overlay: bool = True
    """Write overlay.mp4 and tracking.png."""

    def __post_init__(self) -> None:
        checks = [
            (self.size >= 16, f"--size must be at least 16 pixels, got {self.size}"),
            (self.size <= MAX_IMAGE_SIZE, f"--size {self.size} is larger than the {MAX_IMAGE_SIZE}-pixel limit"),
            (math.isfinite(self.fov_deg) and 10.0 <= self.fov_deg <= 150.0,
             f"--fov must be a field of view within 10-150 degrees, got {self.fov_deg}"),
            (self.every >= 1, f"--every must be 1 or more (keep one frame in every K), got {self.every}"),
            (self.max_frames is None or self.max_frames >= 1, f"--max-frames must be positive, got {self.max_frames}"),
            (self.num_components >= 1, f"--components must be positive, got {self.num_components}"),
            (0.0 < self.heldout_fraction < 0.5, f"the held-out fraction must be in (0, 0.5), got "
                                                f"{self.heldout_fraction}"),
            (self.min_frames >= 3, f"at least 3 frames are needed, got min_frames={self.min_frames}"),
            (self.crop_margin > 0, f"the crop margin must be positive, got {self.crop_margin}"),
        ]
        failed = [message for ok, message in checks if not ok]
        if failed:
            raise ControlError("; ".join(failed))
