"""Training losses: photometric, opacity vs head mask, total variation of the grids, latent-code regulariser."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avatar4d.evaluation.metrics import block_means


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms."""

    mask: float = 0.1
    """Squared error between the field's opacity and the head mask (0 = no mask loss)."""
    tv_canonical: float = 1e-3
    """Total variation of the canonical grid."""
    tv_motion: float = 1e-2
    """Total variation of the motion grids."""
    latent: float = 1e-3
    """Squared norm of the latent codes used in the batch."""
    tv_samples: int = 8192
    """Grid vertices the total variation is estimated from at each step."""
    landmark_depth: float = 1e-3
    """Expected squared distance (in units of ``landmark_depth_sigma_m``) between where rays through tracked
    landmarks end and the face model's landmark: pulls the density onto the face surface (monocular video alone leaves
    it smeared along the camera rays), which is what makes new viewpoints and the mesh work (0 = off)."""
    landmark_depth_sigma_m: float = 0.01
    face_depth: float = 0.0
    """Weight of :func:`face_depth_loss`: where rays through the face region end against the face model's surface
    rasterised into the frame (``avatar4d.dataset.face_depth``); dense where ``landmark_depth`` has 478 points (0 = off;
    the preview preset uses 0.01: on four shared videos its held-out scores moved -0.08 to +0.13 dB)."""
    face_depth_sigma_m: float = 0.005
    """Scale of :func:`face_depth_loss`: quadratic below it, linear above (the template surface is a coarse
    triangulation, a few millimetres off the skin between landmarks; occluders such as hair or hands are far off)."""
    face_depth_spread: float = 0.0
    """Within :func:`face_depth_loss`, the weight of the expected squared distance (in ``face_depth_sigma_m``) of
    where the light ends from the face surface: unlike the offset it also penalises thin haze in front of the face
    balanced by density behind it, the sheets that float off the face in side views (0 = off)."""
    distortion: float = 0.0
    """Weight of Mip-NeRF 360's distortion loss (per metre of spread along the ray, mean over the batch's rays):
    pulls each ray's weight into one short stretch, a thin surface instead of a haze (0 = off)."""
    head_prior: float = 0.0
    """Weight of :func:`head_prior_loss`: the transmittance through 5 mm at random points of the head's core
    (``avatar4d.field.head_shape``), which no training view sees: the sides and back of the head stay solid in
    views beyond the video's turn (0 = off)."""
    head_prior_points: int = 1024
    """Points of the core drawn at each step."""
    patch_l1: float = 0.1
    """Mean absolute error of the upsampler's full-resolution patch (with an upsampler only)."""
    patch_perceptual: float = 0.05
    """LPIPS (AlexNet) distance of the same patch: what makes the upsampled picture sharp rather than a blurred
    average (with an upsampler only; skipped, with a note, where the LPIPS weights cannot be obtained)."""
    patch_pattern: float = 0.1
    """Weight of the rms of the patch error's :func:`avatar4d.evaluation.metrics.block_means` (4 px blocks): a
    pattern the upsampler repeats on its blocks, which a photograph does not have (0 = off). Without it the upsampler
    stamps a faint dot grid on the picture, which LPIPS rewards; 0.1 takes it down 5-9 fold on the five shared videos
    (LPIPS -0.001 to +0.007, SSIM +0.007 to +0.014); at 1 the face gets softer (LPIPS +0.016-0.031 on three of them,
    2026-12-05)."""
    patch_perceptual_shift: int = 0
    """LPIPS sees the patch cropped by a random 0 to ``shift - 1`` pixels at its top and left (and as many fewer at
    the other side), 0: the whole patch. AlexNet's first layer samples the picture every 4 pixels and the upsampler's
    4 x 4 blocks start at the patch's corner, so at a fixed phase the stamp always meets the same samples; a shift
    of 4 lowered the stamp by a third on hdtf_speaker_8s, for LPIPS +0.005 (2026-12-05): off."""


@dataclass
class LossTerms:
    total: Tensor
    rgb: Tensor
    mask: Tensor
    tv: Tensor
    latent: Tensor
    depth: Tensor
    face_depth: Tensor
    patch: Tensor
    distortion: Tensor
    head_prior: Tensor

    def as_floats(self) -> dict[str, float]:
        names = ("total", "rgb", "mask", "tv", "latent", "depth", "face_depth", "patch", "distortion",
                 "head_prior")
        return {k: float(getattr(self, k).detach()) for k in names}


def psnr_from_mse(mse: Tensor | float) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    value = float(mse.detach()) if isinstance(mse, Tensor) else float(mse)
    return float("inf") if value <= 0 else -10.0 * float(torch.log10(torch.tensor(value)))


def landmark_depth_loss(depth: Tensor, depth_second_moment: Tensor, opacity: Tensor, distance: Tensor,
                        sigma_m: float) -> Tensor:
    """Mean over rays of ``sum_s w_s (t_s - t*)^2 / sigma^2`` (spread and offset of where each ray ends) plus the
    missing opacity (a ray through a landmark must end on the face).

    Args:
        depth, depth_second_moment, opacity: (R,) ``sum w t``, ``sum w t^2``, ``sum w`` of each ray.
        distance: (R,) the landmark's distance ``t*`` along the ray.
    """
    spread = depth_second_moment - 2.0 * distance * depth + distance.square() * opacity
    return (spread / sigma_m**2).mean() + (1.0 - opacity).square().mean()


def patch_loss(rgb: Tensor, target_rgb: Tensor, opacity: Tensor, target_opacity: Tensor, config: LossConfig,
               perceptual: Callable[[Tensor, Tensor], Tensor] | None,
               generator: torch.Generator | None = None) -> Tensor:
    """The upsampler's loss on one full-resolution patch: L1 and LPIPS of the colour (LPIPS on a window at a random
    shift where ``LossConfig.patch_perceptual_shift`` asks for it), the rms of the colour error's pattern on the 4 px
    block grid, and the mask loss of its opacity (weighted as the rays' mask loss is).

    Args:
        rgb, target_rgb: (1, 3, H, W) upsampled and observed colour.
        opacity, target_opacity: (1, 1, H, W) upsampled opacity and head mask.
        perceptual: (N, 3, H, W) x 2 -> (N,) distance (LPIPS), or None to leave it out.
        generator: draws the window's shift (the default generator when None).
    """
    loss = config.patch_l1 * (rgb - target_rgb).abs().mean() + config.mask * (opacity - target_opacity).square().mean()
    if config.patch_pattern > 0:
        pattern = block_means((rgb - target_rgb).mean(1, keepdim=True)).square().mean().add(1e-12).sqrt()
        loss = loss + config.patch_pattern * pattern
    if perceptual is not None and config.patch_perceptual > 0:
        window = shifted_window(rgb.shape[-2], rgb.shape[-1], config.patch_perceptual_shift, generator)
        loss = loss + config.patch_perceptual * perceptual(rgb[window], target_rgb[window]).mean()
    return loss


def shifted_window(height: int, width: int, shift: int, generator: torch.Generator | None) -> tuple[slice, ...]:
    """Index of an ``(H - shift + 1) x (W - shift + 1)`` window at a random offset of 0 to ``shift - 1`` pixels down
    and right (the whole picture for shift 0 or 1), for (..., H, W) tensors."""
    if shift <= 1:
        return (Ellipsis,)
    top, left = (int(v) for v in torch.randint(shift, (2,), generator=generator))
    return (Ellipsis, slice(top, height - shift + 1 + top), slice(left, width - shift + 1 + left))


def training_loss(rgb: Tensor, target_rgb: Tensor, opacity: Tensor, target_opacity: Tensor, tv: tuple[Tensor, Tensor],
                  latents: Tensor | None, config: LossConfig, depth: Tensor | None = None,
                  patch: Tensor | None = None, face_depth: Tensor | None = None,
                  distortion: Tensor | None = None, head_prior: Tensor | None = None) -> LossTerms:
    """Combine the loss terms.

    Args:
        rgb, target_rgb: (R, 3) rendered (over the background) and observed colours.
        opacity, target_opacity: (R,) field opacity and head mask.
        tv: total variation of the canonical and motion grids.
        latents: (F, D) the batch's latent codes, or None.
        depth: the landmark depth loss, or None.
        patch: the upsampler's patch loss (already weighted), or None.
        face_depth: :func:`face_depth_loss` (unweighted), or None.
        distortion: (R,) the rays' distortion (``RenderOutput.distortion``, unweighted), or None.
        head_prior: :func:`head_prior_loss` (unweighted), or None.
    """
    rgb_loss = torch.mean((rgb - target_rgb) ** 2)
    mask_loss = torch.mean((opacity - target_opacity) ** 2)
    tv_loss = config.tv_canonical * tv[0] + config.tv_motion * tv[1]
    latent_loss = latents.square().sum(-1).mean() if latents is not None and latents.numel() else rgb.new_zeros(())
    depth_loss = depth if depth is not None else rgb.new_zeros(())
    patch_term = patch if patch is not None else rgb.new_zeros(())
    face_depth_term = face_depth if face_depth is not None else rgb.new_zeros(())
    total = rgb_loss + config.mask * mask_loss + tv_loss + config.latent * latent_loss \
        + config.landmark_depth * depth_loss + patch_term
    if face_depth is not None:
        total = total + config.face_depth * face_depth_term
    distortion_term = distortion.mean() if distortion is not None else rgb.new_zeros(())
    if distortion is not None and config.distortion > 0:
        total = total + config.distortion * distortion_term
    head_prior_term = head_prior if head_prior is not None else rgb.new_zeros(())
    if head_prior is not None:
        total = total + config.head_prior * head_prior_term
    return LossTerms(total=total, rgb=rgb_loss, mask=mask_loss, tv=tv_loss, latent=latent_loss, depth=depth_loss,
                     face_depth=face_depth_term, patch=patch_term, distortion=distortion_term,
                     head_prior=head_prior_term)


def head_prior_loss(density: Tensor, step_m: float = 0.005) -> Tensor:
    """Mean transmittance ``exp(-density * step)`` through ``step_m`` metres at points of the head's core: 0 where
    the field is solid there.

    Args:
        density: (N,) the field's density per metre at points drawn inside the core.
    """
    return torch.exp(-density * step_m).mean()


def face_depth_loss(depth: Tensor, opacity: Tensor, distance: Tensor, sigma_m: float,
                    second_moment: Tensor | None = None, spread: float = 0.0) -> Tensor:
    """Mean over rays of the Huber penalty (``x^2 / 2`` below 1, ``|x| - 1/2`` above) of
    ``x = sum_s w_s (t_s - t*) / sigma``: the rendered expected depth against the face surface's distance ``t*``;
    plus, with ``spread``, ``spread`` times the mean of ``sum_s w_s (t_s - t*)^2 / sigma^2``.

    ``sum_s w_s (t_s - t*) = depth - opacity t*`` is the offset of where the ray ends, scaled by its opacity, so it is
    well defined when the ray is not yet opaque (the mask loss sees to the opacity); it does not see spread around
    ``t*`` (haze in front balanced by density behind), which the second term, written with the moments
    ``sum w t^2 - 2 t* sum w t + t*^2 sum w``, does.

    Args:
        depth, opacity: (R,) ``sum w t`` and ``sum w`` of each ray (``RenderOutput.depth``, ``.opacity``).
        distance: (R,) the face surface's distance ``t*`` along the ray, metres (``FaceDepthRays.distance``).
        sigma_m: the scale, metres.
        second_moment: (R,) ``sum w t^2`` (``RenderOutput.depth_second_moment``), needed when ``spread > 0``.
    """
    offset = (depth - opacity * distance) / sigma_m
    loss = F.huber_loss(offset, torch.zeros_like(offset), delta=1.0)
    if spread > 0:
        squared = second_moment - 2 * distance * depth + distance.square() * opacity
        loss = loss + spread * (squared.clamp(min=0) / sigma_m**2).mean()
    return loss
