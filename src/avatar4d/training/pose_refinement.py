"""Per-frame corrections of the tracked head pose, learned with the field from the photometric loss.

Landmark tracking places the head to a pixel or two at 512 px; every training frame that is off by that much blurs
the canonical head that all frames share. Each training frame gets a small rigid correction of its ``head_from_camera``
(a rotation vector and a translation, zero at the start), applied to its rays in the head frame:
``head' = exp([w]x) head + t``. Held-out and novel frames keep their tracked poses, so the corrections' mean over the
training frames is held at zero: the canonical head stays where the tracker puts it, and only the frames' scatter
around it is taken out. The depth targets of the landmark and face depth rays stay those of the tracked pose: the
corrections (tenths of a millimetre and of a degree on the shared videos) are far below those losses' 5-10 mm scales.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

Rays = TypeVar("Rays")


@dataclass(frozen=True)
class PoseRefinementConfig:
    """Whether and how fast the training frames' head poses are corrected."""

    enabled: bool = False
    rotation_lr: float = 1e-4
    """Adam learning rate of the rotation vectors, radians per step."""
    translation_lr: float = 3e-5
    """Adam learning rate of the translations, metres per step."""
    start: float = 0.3
    """Fraction of the schedule before which the poses stay as tracked (the field is too blurred early on to say
    which way a frame is off)."""


def rotation_matrices(rotation_vectors: Tensor) -> Tensor:
    """(F, 3) rotation vectors (axis times angle, radians) -> (F, 3, 3) rotation matrices (Rodrigues' formula,
    differentiable at zero)."""
    angle_sq = rotation_vectors.square().sum(-1, keepdim=True)[..., None]  # (F, 1, 1)
    x, y, z = rotation_vectors.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(-1, 3, 3)
    small = angle_sq < 1e-8
    safe = torch.where(small, torch.ones_like(angle_sq), angle_sq)
    angle = safe.sqrt()
    # sin(a) / a and (1 - cos(a)) / a^2, with their Taylor series near zero
    first = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(angle) / angle)
    second = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - torch.cos(angle)) / safe)
    eye = torch.eye(3, dtype=rotation_vectors.dtype, device=rotation_vectors.device)
    return eye + first * skew + second * (skew @ skew)


class PoseRefinement(nn.Module):
    """One rigid correction per training frame.

    Args:
        num_frames: training frames.
    """

    def __init__(self, num_frames: int) -> None:
        super().__init__()
        self.rotation = nn.Parameter(torch.zeros(num_frames, 3))
        self.translation = nn.Parameter(torch.zeros(num_frames, 3))

    def parameter_groups(self, config: PoseRefinementConfig) -> list[dict]:
        """The optimiser's groups: rotations and translations, each at its learning rate."""
        return [{"name": "pose_rotation", "params": [self.rotation], "lr": config.rotation_lr},
                {"name": "pose_translation", "params": [self.translation], "lr": config.translation_lr}]

    def apply(self, origins: Tensor, directions: Tensor, frame_ids: Tensor, frame_rows: Tensor) -> tuple[Tensor, Tensor]:
        """Move rays given in a frame's tracked head frame into its corrected one.

        Args:
            origins, directions: (R, 3) head frame.
            frame_ids: (R,) position of each ray's frame in ``frame_rows``.
            frame_rows: (F,) training-frame rows.

        Returns:
            (R, 3) origins and (R, 3) unit directions.
        """
        rotation = rotation_matrices(self.rotation[frame_rows])[frame_ids]  # (R, 3, 3)
        translation = self.translation[frame_rows][frame_ids]
        moved = (rotation @ origins.unsqueeze(-1)).squeeze(-1) + translation
        return moved, (rotation @ directions.unsqueeze(-1)).squeeze(-1)

    def corrections(self) -> Tensor:
        """(F, 4, 4) each frame's correction as a rigid transform of its head frame (``corrected_from_tracked``)."""
        out = torch.eye(4, dtype=self.rotation.dtype, device=self.rotation.device).repeat(self.rotation.shape[0], 1, 1)
        out[:, :3, :3] = rotation_matrices(self.rotation)
        out[:, :3, 3] = self.translation
        return out

    def correct(self, rays: Rays, frame_rows: Tensor) -> Rays:
        """A copy of ``rays`` (a ``RayBatch``, ``PatchRays``: anything with ``origins``, ``directions`` and
        ``frame_ids``) moved by :meth:`apply`."""
        origins, directions = self.apply(rays.origins, rays.directions, rays.frame_ids, frame_rows)
        return dataclasses.replace(rays, origins=origins, directions=directions)

    @torch.no_grad()
    def center_(self) -> None:
        """Hold the corrections' mean over the training frames at zero (after each optimiser step)."""
        self.rotation.sub_(self.rotation.mean(0))
        self.translation.sub_(self.translation.mean(0))

    def magnitudes(self) -> tuple[float, float]:
        """The root-mean-square correction: rotation in degrees and translation in millimetres."""
        rotation = float(self.rotation.detach().square().sum(-1).mean().sqrt()) * 180.0 / torch.pi
        return rotation, float(self.translation.detach().square().sum(-1).mean().sqrt()) * 1000.0
