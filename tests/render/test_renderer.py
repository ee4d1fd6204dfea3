"""The renderer: empty-space skipping changes nothing where the grid says occupied and equals zero density where it
says empty; rays that miss the head box show the background exactly; whole images equal their rays."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avatar4d.field.expression_grids import ExpressionGridsConfig
from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.field.voxel_grid import VoxelGridConfig
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rays import pixel_centers, pixel_directions, rays_to_head_space
from avatar4d.geometry.rigid import invert_rigid
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import RendererConfig, render_image, render_rays

# small tensor operations on 2 shared cores run several times faster on one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def field(face_template) -> HeadField:
    """A coarse head field on the real template, with density raised so rays become partly opaque."""
    config = HeadFieldConfig(canonical=VoxelGridConfig(voxel_size_m=0.01, init_std=0.5),
                             expression=ExpressionGridsConfig(voxel_size_m=0.016))
    config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, density_bias=3.0))
    field = HeadField(config, field_geometry(face_template, config), num_components=32, num_frames=3,
                      template=face_template, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        field.expression.tables.normal_(generator=torch.Generator().manual_seed(1))
        field.latents.normal_(generator=torch.Generator().manual_seed(2))
    return field


def rays(field: HeadField, count: int, seed: int):
    """Rays from 0.5 m in front of the face towards random points of a region twice the head box's size (some
    miss), with their frame ids and backgrounds."""
    gen = torch.Generator().manual_seed(seed)
    centre = (field.box_min + field.box_max) / 2
    extent = field.box_max - field.box_min
    origins = centre + torch.tensor([0.0, 0.0, 0.5]) + (torch.rand(count, 3, generator=gen) - 0.5) * 0.1
    targets = centre + (torch.rand(count, 3, generator=gen) - 0.5) * extent * 2
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    frame_ids = torch.randint(2, (count,), generator=gen)
    background = torch.rand(count, 3, generator=gen)
    return origins, directions, frame_ids, background


def occupancy_for(field: HeadField) -> OccupancyGrid:
    return OccupancyGrid(field.box_min, field.box_max, (9, 12, 8))


@pytest.mark.parametrize("jitter", [False, True])
def test_a_fully_occupied_grid_renders_exactly_like_no_grid(field, jitter):
    origins, directions, frame_ids, background = rays(field, 300, 0)
    frames = field.prepare(torch.randn(2, 32, generator=torch.Generator().manual_seed(3)), field.latents[:2])
    config = RendererConfig(samples_per_ray=32, skip_empty_space=True)
    occupancy = occupancy_for(field)
    assert occupancy.occupied.all()
    with torch.no_grad():
        skipping = render_rays(field, origins, directions, frame_ids, frames, background, config, occupancy,
                               torch.Generator().manual_seed(4) if jitter else None)
        plain = render_rays(field, origins, directions, frame_ids, frames, background, config, None,
                            torch.Generator().manual_seed(4) if jitter else None)
    assert torch.equal(skipping.rgb, plain.rgb)
    assert torch.equal(skipping.opacity, plain.opacity)
    assert torch.equal(skipping.depth, plain.depth)
    assert skipping.samples_evaluated == plain.samples_evaluated
    assert 0.2 < float(plain.opacity.mean()) < 1.0  # the test is not about an empty field


class DensityZeroWhereEmpty(torch.nn.Module):
    """The field with its density set to zero where an occupancy grid says empty (the reference for skipping)."""

    def __init__(self, field: HeadField, occupancy: OccupancyGrid) -> None:
        super().__init__()
        self.field, self.occupancy = field, occupancy
        self.box_min, self.box_max, self.channels = field.box_min, field.box_max, field.channels

    def forward(self, points, directions, frame_ids, frames):
        density, rgb = self.field(points, directions, frame_ids, frames)
        return torch.where(self.occupancy.query(points), density, torch.zeros_like(density)), rgb


def test_skipping_empty_cells_equals_zero_density_there(field):
    origins, directions, frame_ids, background = rays(field, 300, 5)
    frames = field.prepare(torch.randn(2, 32, generator=torch.Generator().manual_seed(6)), field.latents[:2])
    config = RendererConfig(samples_per_ray=32)
    occupancy = occupancy_for(field)
    occupancy.occupied.copy_(torch.rand(occupancy.occupied.shape, generator=torch.Generator().manual_seed(7)) < 0.5)
    with torch.no_grad():
        skipping = render_rays(field, origins, directions, frame_ids, frames, background, config, occupancy)
        reference = render_rays(DensityZeroWhereEmpty(field, occupancy), origins, directions, frame_ids, frames,
                                background, config, None)
        switched_off = render_rays(field, origins, directions, frame_ids, frames, background,
                                   dataclasses.replace(config, skip_empty_space=False), occupancy)
    torch.testing.assert_close(skipping.rgb, reference.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(skipping.opacity, reference.opacity, rtol=0, atol=1e-6)
    assert skipping.samples_evaluated < 0.7 * reference.samples_evaluated
    assert switched_off.samples_evaluated == reference.samples_evaluated  # skip_empty_space=False ignores the grid
    assert not torch.allclose(switched_off.rgb, skipping.rgb)


def test_rays_that_miss_the_box_return_the_background_exactly(field):
    origins, directions, frame_ids, background = rays(field, 200, 8)
    directions[:100] = -directions[:100]  # facing away from the head
    origins[100:150] = origins[100:150] + torch.tensor([1.0, 0.0, 0.0])  # beside it, looking parallel
    directions[100:150] = torch.tensor([0.0, 0.0, -1.0])
    frames = field.prepare(torch.randn(2, 32), field.latents[:2])
    config = RendererConfig(samples_per_ray=16)
    with torch.no_grad():
        out = render_rays(field, origins, directions, frame_ids, frames, background, config)
    assert torch.equal(out.rgb[:150], background[:150])
    assert (out.opacity[:150] == 0).all() and (out.depth[:150] == 0).all()
    hits = int((out.opacity[150:] > 0).sum())
    assert hits > 10
    assert out.samples_evaluated <= 50 * 16 and out.samples_evaluated >= hits * 16


def test_render_rays_gradients_reach_every_trained_part(field):
    origins, directions, frame_ids, background = rays(field, 200, 9)
    frames = field.prepare(torch.randn(2, 32), field.latents[:2])
    out = render_rays(field, origins, directions, frame_ids, frames, background, RendererConfig(samples_per_ray=16),
                      None, torch.Generator().manual_seed(0))
    (out.rgb.sum() + out.opacity.sum()).backward()
    for name in ("canonical.table", "expression.tables", "latents", "decoder.first.weight", "decoder.color.weight"):
        parameter = dict(field.named_parameters())[name]
        assert parameter.grad is not None and (parameter.grad != 0).any(), name
    field.zero_grad(set_to_none=True)


def test_render_image_equals_its_rays_whatever_the_chunk_size(field):
    camera = PinholeCamera(fx=20.0, fy=20.0, cx=16.0, cy=17.0, width=32, height=30)  # wide: the box and beyond
    camera_from_head = torch.eye(4)
    camera_from_head[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # looking at the face (head z is front)
    camera_from_head[:3, 3] = torch.tensor([0.0, -0.03, 0.45])
    code = torch.randn(32, generator=torch.Generator().manual_seed(10))
    latent = field.mean_latent().detach()
    background = torch.rand(30, 32, 3, generator=torch.Generator().manual_seed(11))
    occupancy = occupancy_for(field)
    big = render_image(field, camera, camera_from_head, code, latent, background, RendererConfig(samples_per_ray=24),
                       occupancy)
    small = render_image(field, camera, camera_from_head, code, latent, background,
                         RendererConfig(samples_per_ray=24, chunk_rays=97), occupancy)
    assert big.rgb.shape == (30 * 32, 3)
    torch.testing.assert_close(small.rgb, big.rgb, rtol=0, atol=1e-6)
    assert small.samples_evaluated == big.samples_evaluated
    # the same image from explicitly built rays
    directions = pixel_directions(camera, pixel_centers(32, 30))
    origins, directions = rays_to_head_space(torch.zeros_like(directions), directions, invert_rigid(camera_from_head))
    frames = field.prepare(code[None], latent[None])
    with torch.no_grad():
        expected = render_rays(field, origins, directions, torch.zeros(960, dtype=torch.long), frames,
                               background.reshape(-1, 3), RendererConfig(samples_per_ray=24), occupancy)
    torch.testing.assert_close(big.rgb, expected.rgb, rtol=0, atol=1e-6)
    missed = big.opacity == 0
    assert 0.1 < float(missed.float().mean()) < 0.9  # the head box covers part of the image
    assert torch.equal(big.rgb[missed], background.reshape(-1, 3)[missed])


@pytest.mark.parametrize("group", [1, 5, 8, 64])
def test_marching_without_termination_equals_compositing_every_sample(field, group):
    """Without gradients rays are marched group by group; with termination off it is the full composite."""
    origins, directions, frame_ids, background = rays(field, 300, seed=20)
    frames = field.prepare(torch.randn(2, 32, generator=torch.Generator().manual_seed(21)), field.latents[:2])
    occupancy = occupancy_for(field)
    every_sample = render_rays(field, origins, directions, frame_ids, frames, background,
                               RendererConfig(samples_per_ray=40, min_transmittance=0.0), occupancy)
    with torch.no_grad():
        marched = render_rays(field, origins, directions, frame_ids, frames, background,
                              RendererConfig(samples_per_ray=40, min_transmittance=1e-30, march_group=group),
                              occupancy)
    for name in ("rgb", "opacity", "depth", "depth_second_moment"):
        torch.testing.assert_close(getattr(marched, name), getattr(every_sample, name).detach(), rtol=1e-5,
                                   atol=1e-5)


def test_marching_stops_rays_behind_the_surface_within_the_threshold(field):
    origins, directions, frame_ids, background = rays(field, 300, seed=22)
    frames = field.prepare(torch.zeros(2, 32), field.latents[:2])
    with torch.no_grad():
        full = render_rays(field, origins, directions, frame_ids, frames, background,
                           RendererConfig(samples_per_ray=48, min_transmittance=1e-30))
        early = render_rays(field, origins, directions, frame_ids, frames, background,
                            RendererConfig(samples_per_ray=48, min_transmittance=1e-2))
    assert early.samples_evaluated < full.samples_evaluated
    assert float((early.rgb - full.rgb).abs().max()) <= 1e-2 + 1e-6
