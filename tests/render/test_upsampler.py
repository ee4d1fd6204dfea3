"""The upsampler: untrained, it is exactly the bilinearly enlarged render over the full-resolution backdrop; its rays
are those of the low-resolution camera; it renders any output size; gradients reach it and the field's features."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.field.heads import DecoderConfig
from avatar4d.field.voxel_grid import VoxelGridConfig
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rays import block_centres, pixel_centers, pixel_directions
from avatar4d.render.renderer import RendererConfig, render_image
from avatar4d.render.upsampler import Upsampler, UpsamplerConfig, render_upsampled

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def field(face_template) -> HeadField:
    """A coarse head field on the real template with 4 feature channels and density raised so rays are partly
    opaque."""
    config = HeadFieldConfig(canonical=VoxelGridConfig(voxel_size_m=0.01, init_std=0.5),
                             decoder=DecoderConfig(density_bias=3.0, feature_channels=4))
    config = dataclasses.replace(config, expression=dataclasses.replace(config.expression, voxel_size_m=0.016))
    return HeadField(config, field_geometry(face_template, config), num_components=32, num_frames=2,
                     template=face_template, generator=torch.Generator().manual_seed(0))


def random_upsampler(factor: int, features: int, seed: int, doubling: str = "resize") -> Upsampler:
    """An upsampler whose every weight, the zero-initialised last layer included, is random."""
    upsampler = Upsampler(UpsamplerConfig(factor=factor, channels=16, doubling=doubling), features)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in upsampler.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return upsampler


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_an_untrained_upsampler_is_the_enlarged_render_over_the_backdrop(factor):
    generator = torch.Generator().manual_seed(0)
    opacity = torch.rand(2, 1, 6, 5, generator=generator)
    colour = torch.rand(2, 3, 6, 5, generator=generator) * opacity  # premultiplied
    features = torch.rand(2, 3, 6, 5, generator=generator)
    background = torch.rand(2, 3, 6 * factor, 5 * factor, generator=generator)
    image = Upsampler(UpsamplerConfig(factor=factor), 3)(colour, opacity, features, background)
    big_colour = F.interpolate(colour, scale_factor=factor, mode="bilinear", align_corners=False)
    big_opacity = F.interpolate(opacity, scale_factor=factor, mode="bilinear", align_corners=False)
    assert image.rgb.shape == (2, 3, 6 * factor, 5 * factor)
    torch.testing.assert_close(image.opacity, big_opacity)
    torch.testing.assert_close(image.rgb, big_colour + (1 - big_opacity) * background)


def test_a_fully_opaque_head_hides_the_backdrop_and_an_empty_one_shows_it():
    upsampler = Upsampler(UpsamplerConfig(factor=2), 0)
    background = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    empty = upsampler(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), None, background)
    torch.testing.assert_close(empty.rgb, background)
    solid = upsampler(torch.full((1, 3, 4, 4), 0.25), torch.ones(1, 1, 4, 4), None, background)
    torch.testing.assert_close(solid.rgb, torch.full_like(background, 0.25))


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_block_centres_are_the_mean_of_their_pixels_centres(factor):
    centres = block_centres(6, 10, 3, 5, factor)
    pixels = pixel_centers(40, 40).reshape(40, 40, 2)[6:6 + 3 * factor, 10:10 + 5 * factor]
    expected = pixels.reshape(3, factor, 5, factor, 2).mean((1, 3)).reshape(-1, 2)
    torch.testing.assert_close(centres, expected)


def test_block_centres_of_a_whole_image_are_the_pixel_centres_of_the_smaller_camera():
    camera = PinholeCamera(fx=500.0, fy=510.0, cx=250.0, cy=260.0, width=512, height=512)
    small = camera.resized(128, 128)
    through_blocks = pixel_directions(camera, block_centres(0, 0, 128, 128, 4))
    through_small = pixel_directions(small, pixel_centers(128, 128))
    torch.testing.assert_close(through_blocks, through_small)


@pytest.mark.parametrize("size", [64, 50])
def test_render_upsampled_gives_the_output_size_from_rays_at_a_quarter(field, size):
    camera = PinholeCamera(fx=1.2 * size, fy=1.2 * size, cx=size / 2, cy=size / 2, width=size, height=size)
    pose = torch.eye(4)
    pose[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # looking at the face (head z is front)
    pose[:3, 3] = torch.tensor([0.0, -0.03, 0.45])
    code = torch.zeros(32)
    background = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(2))
    config = RendererConfig(samples_per_ray=24)
    upsampler = Upsampler(UpsamplerConfig(factor=4), 4)
    out = render_upsampled(field, upsampler, camera, pose, code, None, background, config)
    low = -(-size // 4)
    direct = render_image(field, camera.resized(low, low), pose, code, None, torch.zeros(low, low, 3), config)
    assert out.rgb.shape == (size * size, 3) and out.opacity.shape == (size * size,)
    assert out.samples_evaluated == direct.samples_evaluated
    assert 0.0 <= float(out.rgb.min()) and float(out.rgb.max()) <= 1.0
    if size % 4 == 0:  # untrained: the enlarged low-resolution render over the full-resolution backdrop
        planes = direct.rgb.reshape(1, low, low, 3).permute(0, 3, 1, 2)
        alpha = direct.opacity.reshape(1, 1, low, low)
        big = F.interpolate(torch.cat([planes, alpha], 1), scale_factor=4, mode="bilinear", align_corners=False)
        expected = big[:, :3] + (1 - big[:, 3:]) * background.permute(2, 0, 1)[None]
        torch.testing.assert_close(out.rgb, expected[0].permute(1, 2, 0).reshape(-1, 3).clamp(0, 1))


def test_gradients_reach_every_layer_and_the_field_features():
    upsampler = random_upsampler(4, 3, 3)
    features = torch.rand(1, 3, 5, 5, requires_grad=True)
    image = upsampler(torch.rand(1, 3, 5, 5), torch.rand(1, 1, 5, 5), features, torch.rand(1, 3, 20, 20))
    (image.rgb.sum() + image.opacity.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in upsampler.parameters())
    assert features.grad.abs().sum() > 0


def test_an_unknown_factor_or_doubling_is_refused():
    with pytest.raises(ValueError, match="factor"):
        UpsamplerConfig(factor=3)
    with pytest.raises(ValueError, match="doubling"):
        UpsamplerConfig(factor=2, doubling="transposed")


def test_a_uniform_render_gives_a_uniform_picture_whatever_the_weights():
    """Bilinear enlargement then convolution has no sub-pixel filters of its own, so trained weights cannot stamp a
    pattern of the output's blocks on a flat region; sub-pixel convolution (the reference) does."""
    background = torch.full((1, 3, 64, 64), 0.5)
    inputs = (torch.full((1, 3, 16, 16), 0.3), torch.full((1, 1, 16, 16), 0.6), torch.full((1, 3, 16, 16), 0.2))
    interior = (..., slice(20, 44), slice(20, 44))  # beyond the zero padding's reach
    resized = random_upsampler(4, 3, 5)(*inputs, background).rgb[interior]
    torch.testing.assert_close(resized, resized[..., :1, :1].expand_as(resized))
    shuffled = random_upsampler(4, 3, 5, doubling="pixel_shuffle")(*inputs, background).rgb[interior]
    blocks = shuffled.reshape(1, 3, 6, 4, 6, 4)
    torch.testing.assert_close(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))  # the same 4 x 4 stamp everywhere
    assert float(blocks.std((3, 5)).min()) > 1e-3


def test_a_pixel_shuffle_doubling_starts_as_a_nearest_neighbour_one():
    """ICNR: the convolution before each pixel shuffle starts with equal sub-pixel filters (no checkerboard)."""
    upsampler = Upsampler(UpsamplerConfig(factor=4, doubling="pixel_shuffle"), 8)
    doubled = upsampler.stages[:2](torch.rand(1, 32, 6, 5, generator=torch.Generator().manual_seed(4)))
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        torch.testing.assert_close(doubled[..., dy::2, dx::2], doubled[..., ::2, ::2])
