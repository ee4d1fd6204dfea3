"""The renderer: rays (head frame) -> colours, by sampling the head box, skipping empty space, compositing over the
background. It speaks to the field through :class:`RadianceField` and knows no grids or MLPs; every tensor it makes
is on the field's device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rays import camera_rays_in_head, pixel_centers, pixel_directions
from avatar4d.geometry.rigid import invert_rigid
from avatar4d.render.compositing import Composite, composite, distortion, over_background
from avatar4d.render.marching import OccupancyGrid, intersect_box, stratified_samples


class Conditioning(Protocol):
    """What a field computes once per frame (expression, latent code) before its points are queried."""

    def detached(self) -> Conditioning:
        """The same conditioning cut from the autograd graph."""


class RadianceField(Protocol):
    """Density and colour at head-frame points inside an axis-aligned box, conditioned per frame."""

    box_min: Tensor
    """(3,) the box's lower corner, head frame, metres (its device is the field's)."""
    box_max: Tensor
    channels: int
    """What the field gives per point beside density: 3 colour channels, then any features for an upsampler."""

    def prepare(self, codes: Tensor, latents: Tensor | None) -> Conditioning:
        """Per-frame work for (F, K) expression codes and (F, D) latent codes."""

    def __call__(self, points: Tensor, directions: Tensor, frame_ids: Tensor,
                 frames: Conditioning) -> tuple[Tensor, Tensor]:
        """(N,) density per metre and (N, channels) colour (and features) of (N, 3) points seen along (N, 3)
        directions."""

    def density(self, points: Tensor, frame_ids: Tensor, frames: Conditioning) -> Tensor:
        """(N,) density per metre only."""


class RenderCancelled(Exception):
    """A render stopped early because its caller no longer wants it."""


@dataclass(frozen=True)
class RendererConfig:
    """How rays are sampled."""

    samples_per_ray: int = 64
    """Samples between the ray's entry into and exit from the head box."""
    skip_empty_space: bool = True
    """Evaluate the field only in cells the occupancy grid marks as occupied."""
    chunk_rays: int = 16384
    """Rays per batch when rendering whole images."""
    min_transmittance: float = 1e-3
    """Samples that less than this fraction of the light reaches are skipped (0 = off). When gradients are needed
    (training), a cheap no-gradient density pass first finds them; without gradients (rendering), rays are marched
    front to back in groups of ``march_group`` samples and stop once their transmittance falls below it."""
    march_group: int = 8
    """Samples per ray evaluated together when marching without gradients."""


@dataclass
class RenderOutput:
    """Rendered rays."""

    rgb: Tensor
    """(R, 3) final colour, field over background."""
    opacity: Tensor
    """(R,) accumulated opacity of the field."""
    depth: Tensor
    """(R,) expected distance along the ray (0 where empty)."""
    depth_second_moment: Tensor
    """(R,) expected squared distance along the ray."""
    samples_evaluated: int
    """Samples the field was evaluated at (after empty-space skipping)."""
    features: Tensor | None = None
    """(R, F) composited feature channels of the field (premultiplied, no background), or None without any."""
    distortion: Tensor | None = None
    """(R,) :func:`~avatar4d.render.compositing.distortion` of each ray's weights, metres (when rendering with
    gradients, for training; None otherwise)."""


def _output(result: Composite, background: Tensor, evaluated: int,
            spread: Tensor | None = None) -> RenderOutput:
    """The composite's colour over the background, its features apart (and ``spread``: the rays' distortion)."""
    colour = Composite(rgb=result.rgb[:, :3], opacity=result.opacity, weights=result.weights, depth=result.depth,
                       depth_second_moment=result.depth_second_moment)
    features = result.rgb[:, 3:] if result.rgb.shape[1] > 3 else None
    return RenderOutput(rgb=over_background(colour, background), opacity=result.opacity, depth=result.depth,
                        depth_second_moment=result.depth_second_moment, samples_evaluated=evaluated,
                        features=features, distortion=spread)


def render_rays(field: RadianceField, origins: Tensor, directions: Tensor, frame_ids: Tensor, frames: Conditioning,
                background: Tensor, config: RendererConfig, occupancy: OccupancyGrid | None = None,
                generator: torch.Generator | None = None) -> RenderOutput:
    """Render rays given in the head frame.

    Args:
        field: the head field.
        origins, directions: (R, 3) rays in the head frame (unit directions).
        frame_ids: (R,) row of ``frames`` each ray belongs to.
        frames: the prepared per-frame conditioning.
        background: (R, 3) colour behind each ray.
        occupancy: skip samples in empty cells (if given and enabled in ``config``).
        generator: jitter the samples (training); None samples interval centres (rendering).
    """
    near, far, hit = intersect_box(origins, directions, field.box_min, field.box_max)
    distances, deltas = stratified_samples(near, far, config.samples_per_ray, generator)
    count, samples = distances.shape
    points = torch.addcmul(origins[:, None, :], distances[..., None], directions[:, None, :])
    keep = hit[:, None].expand(count, samples)
    if occupancy is not None and config.skip_empty_space:
        keep = keep & occupancy.query(points.reshape(-1, 3)).view(count, samples)
    if config.min_transmittance > 0 and not torch.is_grad_enabled():
        result, evaluated = _march(field, points, directions, frame_ids, frames, deltas, distances, keep, config)
        return _output(result, background, evaluated)
    index = keep.reshape(-1).nonzero().squeeze(1)
    if config.min_transmittance > 0 and index.numel():
        index = _visible_samples(field, points, directions, frame_ids, frames, deltas, index,
                                 config.min_transmittance)
    density = points.new_zeros(count * samples)
    color = points.new_zeros(count * samples, field.channels)
    if index.numel():
        ray_of = torch.div(index, samples, rounding_mode="floor")
        sample_density, sample_color = field(points.reshape(-1, 3)[index], directions[ray_of], frame_ids[ray_of],
                                             frames)
        density = density.index_copy(0, index, sample_density)
        color = color.index_copy(0, index, sample_color)
    result = composite(density.view(count, samples), color.view(count, samples, field.channels), deltas, distances)
    return _output(result, background, int(index.numel()), distortion(result.weights, distances, deltas))


def _march(field: RadianceField, points: Tensor, directions: Tensor, frame_ids: Tensor, frames: Conditioning,
           deltas: Tensor, distances: Tensor, keep: Tensor, config: RendererConfig) -> tuple[Composite, int]:
    """Front-to-back marching with early termination: the samples of still-visible rays, ``config.march_group`` at a
    time; each group is composited on its own and added behind what is in front (exactly :func:`composite` of the
    whole ray while no ray has stopped).

    Args:
        points: (R, S, 3); deltas, distances: (R, S); keep: (R, S) bool samples worth evaluating.

    Returns:
        The composite (``weights`` left empty) and how many samples were evaluated.
    """
    count, samples = distances.shape
    group = max(1, config.march_group)
    channels = field.channels
    flat_points, flat_keep = points.reshape(-1, 3), keep.reshape(-1)
    columns = torch.arange(group, device=points.device)
    rgb, transmittance = points.new_zeros(count, channels), points.new_ones(count)
    depth, second = points.new_zeros(count), points.new_zeros(count)
    alive = keep.any(1).nonzero().squeeze(1)
    evaluated = 0
    for start in range(0, samples, group):
        if alive.numel() == 0:
            break
        width = min(group, samples - start)
        window = slice(start, start + width)
        ids = (alive[:, None] * samples + (start + columns[:width])).reshape(-1)  # (A * width,) flat sample ids
        flat = flat_keep[ids].nonzero().squeeze(1)
        density = points.new_zeros(ids.numel())
        if flat.numel():
            chosen = ids[flat]
            rows = torch.div(chosen, samples, rounding_mode="floor")
            sample_density, sample_color = field(flat_points[chosen], directions[rows], frame_ids[rows], frames)
            density.index_copy_(0, flat, sample_density)
            evaluated += int(flat.numel())
        # composite the window behind what is in front: weights relative to the light reaching each ray
        light = transmittance[alive]
        optical = density.view(-1, width) * deltas[alive, window]
        ahead = torch.cumsum(optical, 1)
        weights = torch.exp(optical - ahead) * -torch.expm1(-optical) * light[:, None]  # T before * alpha * light
        if flat.numel():
            rgb.index_add_(0, rows, sample_color * weights.view(-1)[flat, None])
        near = distances[alive, window]
        depth.index_add_(0, alive, (weights * near).sum(1))
        second.index_add_(0, alive, (weights * near.square()).sum(1))
        remaining = light * torch.exp(-ahead[:, -1])
        transmittance.index_copy_(0, alive, remaining)
        alive = alive[remaining > config.min_transmittance]
    return Composite(rgb=rgb, opacity=1.0 - transmittance, weights=points.new_zeros(count, 0), depth=depth,
                     depth_second_moment=second), evaluated


@torch.no_grad()
def _visible_samples(field: RadianceField, points: Tensor, directions: Tensor, frame_ids: Tensor, frames: Conditioning,
                     deltas: Tensor, index: Tensor, min_transmittance: float) -> Tensor:
    """The subset of sample indices that light still reaches (transmittance before them above the threshold)."""
    count, samples = deltas.shape
    ray_of = torch.div(index, samples, rounding_mode="floor")
    density = points.new_zeros(count * samples).index_copy(
        0, index, field.density(points.reshape(-1, 3)[index], frame_ids[ray_of], frames.detached()))
    optical = density.view(count, samples) * deltas
    before = torch.cumsum(optical, 1) - optical  # optical depth in front of each sample
    visible = (torch.exp(-before) > min_transmittance).reshape(-1)
    return index[visible[index]]


@torch.no_grad()
def render_image(field: RadianceField, camera: PinholeCamera, camera_from_head: Tensor, code: Tensor,
                 latent: Tensor | None, background: Tensor, config: RendererConfig,
                 occupancy: OccupancyGrid | None = None, *,
                 cancelled: Callable[[], bool] | None = None) -> RenderOutput:
    """Render one frame, on the field's device.

    Args:
        camera: intrinsics of the output image (H = camera.height, W = camera.width).
        camera_from_head: (4, 4) head pose.
        code: (K,) expression code.
        latent: (D,) latent code (the training mean for novel frames), or None.
        background: (H, W, 3) colours behind the head.
        cancelled: asked before each chunk of ``config.chunk_rays`` rays; True stops the render (None: never).

    Returns:
        RenderOutput with (H * W, ...) fields, row-major, on the field's device.

    Raises:
        RenderCancelled: ``cancelled()`` said to stop.
    """
    device = field.box_min.device
    frames = field.prepare(code.to(device)[None], latent.to(device)[None] if latent is not None else None)
    directions_camera = pixel_directions(camera, pixel_centers(camera.width, camera.height, device))
    head_from_camera = invert_rigid(camera_from_head.to(device=device, dtype=torch.float32))
    origins, directions = camera_rays_in_head(directions_camera, head_from_camera)
    flat_background = background.to(device).reshape(-1, 3)
    outputs = []
    for start in range(0, origins.shape[0], config.chunk_rays):
        if cancelled is not None and cancelled():
            raise RenderCancelled
        end = min(start + config.chunk_rays, origins.shape[0])
        ids = torch.zeros(end - start, dtype=torch.long, device=device)
        outputs.append(render_rays(field, origins[start:end], directions[start:end], ids, frames,
                                   flat_background[start:end], config, occupancy))
    features = torch.cat([o.features for o in outputs]) if outputs[0].features is not None else None
    return RenderOutput(rgb=torch.cat([o.rgb for o in outputs]), opacity=torch.cat([o.opacity for o in outputs]),
                        depth=torch.cat([o.depth for o in outputs]),
                        depth_second_moment=torch.cat([o.depth_second_moment for o in outputs]),
                        samples_evaluated=sum(o.samples_evaluated for o in outputs), features=features)
