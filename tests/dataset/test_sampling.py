"""The upsampler's training patches, on the prepared sample clip: the crop is the frame's own pixels, and its rays go
through the centres of its ``factor x factor`` blocks, the rays the low-resolution camera shoots at render time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar4d.dataset.layout import load_dataset
from avatar4d.dataset.sampling import ImportanceConfig, RaySampler, load_frame_images
from avatar4d.geometry.rays import block_centres


@pytest.fixture(scope="module")
def full_images(prepared_dataset):
    dataset = load_dataset(prepared_dataset)
    indices = dataset.train_indices[:3]
    images = load_frame_images(dataset, indices, [dataset.size], ImportanceConfig(), plate_samples=3)
    poses = torch.from_numpy(dataset.tracking.camera_from_head[indices]).float()
    return images[dataset.size], poses


def pixels_of(rays_origins: torch.Tensor, rays_directions: torch.Tensor, camera_from_head: torch.Tensor, camera):
    """Where head-frame rays cross the image (pixel coordinates)."""
    points = rays_origins + 0.5 * rays_directions
    in_camera = points @ camera_from_head[:3, :3].T + camera_from_head[:3, 3]
    return np.asarray(camera.project(in_camera.double().numpy()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_patch_is_the_frames_pixels_with_one_ray_through_each_blocks_centre(full_images, seed):
    images, poses = full_images
    factor, blocks = 4, 8
    sampler = RaySampler(poses, frames_per_batch=2, rays_per_frame=16)
    rows = torch.tensor([2, 0])
    patch = sampler.sample_patch(images, rows, blocks, factor, torch.Generator().manual_seed(seed))
    side = blocks * factor
    assert patch.rgb.shape == (1, 3, side, side) and patch.background.shape == (1, 3, side, side)
    assert patch.opacity.shape == (1, 1, side, side) and patch.blocks == blocks
    assert torch.equal(patch.frame_ids, torch.zeros(blocks * blocks, dtype=torch.long))
    pixels = pixels_of(patch.origins, patch.directions, poses[2], images.camera)
    top, left = round(pixels[0, 1] - factor / 2), round(pixels[0, 0] - factor / 2)
    np.testing.assert_allclose(pixels, block_centres(top, left, blocks, blocks, factor).numpy(), atol=1e-3)
    size = images.size
    crop = images.rgb[2].reshape(size, size, 3)[top:top + side, left:left + side]
    torch.testing.assert_close(patch.rgb[0].permute(1, 2, 0), crop.float() / 255.0)
    plate = images.background.reshape(size, size, 3)[top:top + side, left:left + side]
    torch.testing.assert_close(patch.background[0].permute(1, 2, 0), plate)


def test_a_patch_larger_than_the_frame_is_cut_to_it(full_images):
    images, poses = full_images
    sampler = RaySampler(poses, frames_per_batch=1, rays_per_frame=16)
    patch = sampler.sample_patch(images, torch.tensor([0]), 10_000, 4, torch.Generator().manual_seed(3))
    assert patch.rgb.shape[-1] == images.size // 4 * 4 and patch.blocks == images.size // 4


def test_patches_centre_where_the_importance_is(full_images):
    """Patches are drawn around important pixels (face, mouth, eyes): their centres lie, on average, where the
    importance map puts its weight, not at the image's centre of mass."""
    images, poses = full_images
    sampler = RaySampler(poses, frames_per_batch=1, rays_per_frame=16)
    size = images.size
    weights = images.importance[0].reshape(size, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centre = torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
    generator = torch.Generator().manual_seed(4)
    centres = []
    for _ in range(40):
        patch = sampler.sample_patch(images, torch.tensor([0]), 4, 4, generator)
        centres.append(pixels_of(patch.origins, patch.directions, poses[0], images.camera).mean(0))
    assert np.linalg.norm(np.mean(centres, 0) - centre.numpy()) < 0.08 * size
