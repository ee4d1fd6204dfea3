"""Held-out quality during training: a few held-out frames rendered with the mean latent code and scored as
``evaluate`` scores them, with a strip to look at (ground truth | render | error)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar4d.dataset.layout import PreparedDataset
from avatar4d.evaluation.holdout import HeldoutFrame, heldout_frames
from avatar4d.evaluation.metrics import score
from avatar4d.evaluation.strips import comparison_strip
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.images import write_png
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import RadianceField, RendererConfig, render_image

PROBE_METRICS = ("psnr", "ssim", "l1", "face_psnr")
"""What the training log records of each probe (mean over its frames)."""


@dataclass(frozen=True)
class HeldoutProbe:
    """A few held-out frames, evenly spread over the held-out block, at one resolution."""

    frames: list[HeldoutFrame]
    size: int

    @classmethod
    def from_dataset(cls, dataset: PreparedDataset, size: int, count: int) -> HeldoutProbe:
        held = dataset.heldout_indices
        chosen = held[np.linspace(0, len(held) - 1, min(count, len(held))).round().astype(int)]
        return cls(frames=heldout_frames(dataset, size, chosen), size=size)

    @property
    def indices(self) -> list[int]:
        return [frame.index for frame in self.frames]


@torch.no_grad()
def probe_heldout(probe: HeldoutProbe, field: RadianceField, occupancy: OccupancyGrid, renderer: RendererConfig,
                  camera: PinholeCamera, background: torch.Tensor, latent: torch.Tensor | None,
                  strip_path: Path | None = None) -> dict[str, float]:
    """Mean held-out scores of the field (:data:`PROBE_METRICS`); the frames' strips into ``strip_path`` if given.

    Args:
        camera: intrinsics at ``probe.size``.
        background: (size, size, 3) the backdrop behind the head.
        latent: (D,) latent code, or None.
    """
    size = probe.size
    rows, strips = [], []
    for frame in probe.frames:
        pose = torch.from_numpy(frame.camera_from_head).float()
        code = torch.from_numpy(np.asarray(frame.code)).float()
        output = render_image(field, camera, pose, code, latent, background, renderer, occupancy)
        render = output.rgb.reshape(size, size, 3).clamp(0, 1).cpu()
        rows.append(score(render, frame.rgb, frame.face))
        strips.append(comparison_strip(frame.rgb, render, f"held-out #{frame.index}"))
    if strip_path is not None:
        strip_path.parent.mkdir(exist_ok=True)
        write_png(strip_path, np.concatenate(strips, axis=0))
    return {name: float(np.nanmean([row[name] for row in rows])) for name in PROBE_METRICS}


def plateau(log: list[dict], now_s: float, window_s: float, min_gain_db: float, from_step: int = 0) -> str | None:
    """Whether held-out quality has stopped improving: the best probe PSNR of the last ``window_s`` seconds of
    training is not ``min_gain_db`` above the best one before them.

    Args:
        log: the training log; probe entries carry ``step``, ``time_s`` and ``heldout_psnr``.
        now_s: seconds of training so far.
        from_step: only probes from this step on count (those at the final resolution).

    Returns:
        Why training may stop (for the log and the user), or None while it still improves or too few probes tell.
    """
    probes = [(entry["time_s"], entry["heldout_psnr"]) for entry in log
              if "heldout_psnr" in entry and entry["step"] >= from_step and math.isfinite(entry["heldout_psnr"])]
    earlier = [psnr for time_s, psnr in probes if time_s <= now_s - window_s]
    recent = [psnr for time_s, psnr in probes if time_s > now_s - window_s]
    if not earlier or not recent or max(recent) >= max(earlier) + min_gain_db:
        return None
    return (f"held-out PSNR has plateaued: best {max(recent):.2f} dB in the last {window_s:g} s of training, "
            f"{max(earlier):.2f} dB before")
