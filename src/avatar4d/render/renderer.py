"""The renderer: rays (head frame) -> colours, by sampling the head box, skipping empty space, compositing over the
background. It takes the field as an argument and knows no grids or MLPs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avatar4d.field.head_field import HeadField, PreparedFrames
from avatar4d.render.cameras import pixel_centers, pixel_directions
from avatar4d.render.canonical import invert_rigid, rays_to_head_space
from avatar4d.render.compositing import Composite, composite, over_background
from avatar4d.render.marching import OccupancyGrid, intersect_box, stratified_samples
from avatar4d.tracking.camera import PinholeCamera


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
    """When gradients are needed (training), a cheap no-gradient density pass first finds the samples behind the
    visible surface (light reaching them below this fraction) and the full pass skips them (0 = off)."""


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


def render_rays(field: HeadField, origins: Tensor, directions: Tensor, frame_ids: Tensor, frames: PreparedFrames,
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
    points = origins[:, None, :] + distances[..., None] * directions[:, None, :]
    keep = hit[:, None].expand(count, samples)
    if occupancy is not None and config.skip_empty_space:
        keep = keep & occupancy.query(points.reshape(-1, 3)).view(count, samples)
    index = keep.reshape(-1).nonzero().squeeze(1)
    if config.min_transmittance > 0 and torch.is_grad_enabled() and index.numel():
        index = _visible_samples(field, points, directions, frame_ids, frames, deltas, index,
                                 config.min_transmittance)
    density = points.new_zeros(count * samples)
    color = points.new_zeros(count * samples, 3)
    if index.numel():
        ray_of = torch.div(index, samples, rounding_mode="floor")
        sample_density, sample_color = field(points.reshape(-1, 3)[index], directions[ray_of], frame_ids[ray_of],
                                             frames)
        density = density.index_copy(0, index, sample_density)
        color = color.index_copy(0, index, sample_color)
    result: Composite = composite(density.view(count, samples), color.view(count, samples, 3), deltas, distances)
    return RenderOutput(rgb=over_background(result, background), opacity=result.opacity, depth=result.depth,
                        depth_second_moment=result.depth_second_moment, samples_evaluated=int(index.numel()))


@torch.no_grad()
def _visible_samples(field: HeadField, points: Tensor, directions: Tensor, frame_ids: Tensor, frames: PreparedFrames,
                     deltas: Tensor, index: Tensor, min_transmittance: float) -> Tensor:
    """The subset of sample indices that light still reaches (transmittance before them above the threshold)."""
    count, samples = deltas.shape
    ray_of = torch.div(index, samples, rounding_mode="floor")
    prepared = PreparedFrames(mixed=frames.mixed.detach() if frames.mixed is not None else None,
                              frame_bias=frames.frame_bias.detach() if frames.frame_bias is not None else None)
    density = points.new_zeros(count * samples).index_copy(
        0, index, field.density(points.reshape(-1, 3)[index], frame_ids[ray_of], prepared))
    optical = density.view(count, samples) * deltas
    before = torch.cumsum(optical, 1) - optical  # optical depth in front of each sample
    visible = (torch.exp(-before) > min_transmittance).reshape(-1)
    return index[visible[index]]


@torch.no_grad()
def render_image(field: HeadField, camera: PinholeCamera, camera_from_head: Tensor, code: Tensor, latent: Tensor | None,
                 background: Tensor, config: RendererConfig, occupancy: OccupancyGrid | None = None) -> RenderOutput:
    """Render one frame.

    Args:
        camera: intrinsics of the output image (H = camera.height, W = camera.width).
        camera_from_head: (4, 4) head pose.
        code: (K,) expression code.
        latent: (D,) latent code (the training mean for novel frames), or None.
        background: (H, W, 3) colours behind the head.

    Returns:
        RenderOutput with (H * W, ...) fields, row-major.
    """
    frames = field.prepare(code[None], latent[None] if latent is not None else None)
    pixels = pixel_centers(camera.width, camera.height)
    directions_camera = pixel_directions(camera, pixels)
    head_from_camera = invert_rigid(camera_from_head.float())
    origins, directions = rays_to_head_space(torch.zeros_like(directions_camera), directions_camera, head_from_camera)
    flat_background = background.reshape(-1, 3)
    outputs = []
    for start in range(0, origins.shape[0], config.chunk_rays):
        end = start + config.chunk_rays
        ids = torch.zeros(min(end, origins.shape[0]) - start, dtype=torch.long)
        outputs.append(render_rays(field, origins[start:end], directions[start:end], ids, frames,
                                   flat_background[start:end], config, occupancy))
    return RenderOutput(rgb=torch.cat([o.rgb for o in outputs]), opacity=torch.cat([o.opacity for o in outputs]),
                        depth=torch.cat([o.depth for o in outputs]),
                        depth_second_moment=torch.cat([o.depth_second_moment for o in outputs]),
                        samples_evaluated=sum(o.samples_evaluated for o in outputs))
