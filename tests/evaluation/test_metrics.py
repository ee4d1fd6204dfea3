"""Image metrics on real frames: SSIM against pytorch-msssim and scikit-image (whole image and masked), PSNR and L1
against their formulas, the block pattern against SciPy's Gaussian filter, and the mask's bounding box."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_msssim
import torch
from skimage.metrics import structural_similarity

from avatar4d.evaluation.metrics import block_pattern, l1, mask_bbox, psnr, ssim, ssim_map

# small convolutions on 2 shared cores run several times faster on one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames(prepared_dataset):
    """Real frames of the prepared clip (256 px), float64 in [0, 1], and their face masks."""
    from avatar4d.dataset.layout import load_dataset

    dataset = load_dataset(prepared_dataset)
    chosen = [0, 30, 60]
    images = [torch.from_numpy(dataset.load_frame(i).astype(np.float64) / 255.0) for i in chosen]
    faces = [torch.from_numpy(dataset.load_face_mask(i) > 127) for i in chosen]
    return images, faces


def noisy(image: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (image + sigma * torch.randn(image.shape, generator=gen, dtype=image.dtype)).clamp(0, 1)


def pairs(frames):
    images, _ = frames
    return [(images[0], noisy(images[0], 0.02, 1)), (images[1], noisy(images[1], 0.15, 2)), (images[0], images[2]),
            (images[2], images[2])]


def test_ssim_equals_pytorch_msssim(frames):
    # pytorch-msssim builds its Gaussian window in float32 even for float64 images (about 2e-6 off in SSIM); given
    # the same window in float64 it agrees to rounding
    coords = torch.arange(11, dtype=torch.float64) - 5
    window = torch.exp(-(coords**2) / (2 * 1.5**2))
    window = (window / window.sum()).view(1, 1, 11).repeat(3, 1, 1, 1)
    for image, target in pairs(frames):
        x, y = image.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]
        assert ssim(image, target) == pytest.approx(float(pytorch_msssim.ssim(x, y, data_range=1.0)), abs=2e-5)
        assert ssim(image, target) == pytest.approx(float(pytorch_msssim.ssim(x, y, data_range=1.0, win=window)),
                                                    abs=1e-12)


def test_ssim_equals_scikit_image(frames):
    for image, target in pairs(frames):
        expected = structural_similarity(image.numpy(), target.numpy(), gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0, channel_axis=-1)
        assert ssim(image, target) == pytest.approx(expected, abs=1e-12)


def test_ssim_of_identical_images_is_one_and_falls_with_noise(frames):
    image = frames[0][0]
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    values = [ssim(noisy(image, sigma, 3), image) for sigma in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]


def test_masked_ssim_averages_the_scikit_image_map_over_window_centres_in_the_mask(frames):
    images, faces = frames
    image, target, face = images[1], noisy(images[1], 0.05, 4), faces[1]
    _, full = structural_similarity(image.numpy(), target.numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=-1, full=True)
    local = full.mean(-1)
    inner = np.zeros(face.shape, bool)
    inner[5:-5, 5:-5] = True  # centres of windows that lie entirely in the image
    expected = local[face.numpy() & inner].mean()
    assert 1000 < (face.numpy() & inner).sum() < face.numel() / 2
    assert ssim(image, target, face) == pytest.approx(expected, abs=1e-6)
    assert ssim_map(image, target).shape == (246, 246)
    nothing = torch.zeros_like(face)
    nothing[:4] = True  # only the border: no full window is centred there
    assert math.isnan(ssim(image, target, nothing))


def test_psnr_and_l1_equal_their_formulas_with_and_without_a_mask(frames):
    images, faces = frames
    for (image, target), face in zip(pairs(frames)[:3], faces):
        a, b, m = image.numpy(), target.numpy(), face.numpy()
        assert psnr(image, target) == pytest.approx(10 * math.log10(1.0 / ((a - b) ** 2).mean()), rel=1e-9)
        assert psnr(image, target, face) == pytest.approx(10 * math.log10(1.0 / ((a - b) ** 2)[m].mean()), rel=1e-9)
        assert l1(image, target) == pytest.approx(np.abs(a - b).mean(), rel=1e-9)
        assert l1(image, target, face) == pytest.approx(np.abs(a - b)[m].mean(), rel=1e-9)
    assert psnr(images[0], images[0]) == float("inf")


def test_psnr_of_a_known_error():
    target = torch.zeros(8, 8, 3)
    assert psnr(torch.full((8, 8, 3), 0.1), target) == pytest.approx(20.0, abs=1e-5)
    image = torch.zeros(8, 8, 3)
    image[:4] = 0.5  # error only in the top half
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[4:] = True
    assert psnr(image, target, mask) == float("inf")
    assert l1(image, target, ~mask) == pytest.approx(0.5)


def test_metrics_name_the_argument_of_the_wrong_shape():
    good = torch.zeros(16, 16, 3)
    with pytest.raises(ValueError, match="image must be"):
        psnr(torch.zeros(16, 16), good)
    with pytest.raises(ValueError, match="target must be"):
        ssim(good, torch.zeros(3, 16, 16))


def mask_bbox_reference(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    return (max(0, ys.min() - margin), min(mask.shape[0], ys.max() + 1 + margin),
            max(0, xs.min() - margin), min(mask.shape[1], xs.max() + 1 + margin))


def test_mask_bbox_on_real_face_masks_and_at_the_borders(frames):
    _, faces = frames
    for face in faces:
        for margin in (0, 4, 300):
            assert mask_bbox(face, margin) == mask_bbox_reference(face.numpy(), margin)
    corner = torch.zeros(20, 30, dtype=torch.bool)
    corner[0, 29] = True
    assert mask_bbox(corner, 2) == (0, 3, 27, 30)
    assert mask_bbox(torch.zeros(20, 30, dtype=torch.bool)) == (0, 20, 0, 30)


def block_pattern_reference(image: np.ndarray, block: int = 4) -> float:
    """The block pattern written with SciPy: grey minus its Gaussian blur (sigma 1.5, radius 5), inside the border,
    averaged per position on the image's block grid."""
    from scipy.ndimage import gaussian_filter

    grey = image.mean(-1)
    detail = (grey - gaussian_filter(grey, 1.5, truncate=5 / 1.5))[5:-5, 5:-5]
    positions = np.zeros((block, block))
    for dy in range(block):
        for dx in range(block):
            rows = [r for r in range(detail.shape[0]) if (r + 5) % block == dy]
            cols = [c for c in range(detail.shape[1]) if (c + 5) % block == dx]
            rows = [r for r in rows if r >= 3 and r < 3 + (detail.shape[0] - 3) // block * block]
            cols = [c for c in cols if c >= 3 and c < 3 + (detail.shape[1] - 3) // block * block]
            positions[dy, dx] = detail[np.ix_(rows, cols)].mean()
    return float(np.sqrt((positions**2).mean()))


def test_block_pattern_is_small_on_real_frames_and_finds_a_stamp_on_them(frames):
    images, _ = frames
    generator = torch.Generator().manual_seed(5)
    for image in images:
        assert block_pattern(image) < 0.002
        stamp = torch.randn(4, 4, 1, generator=generator, dtype=image.dtype) * 0.01
        stamped = image * 0.9 + 0.05 + stamp.repeat(image.shape[0] // 4, image.shape[1] // 4, 1)
        assert block_pattern(stamped) == pytest.approx(block_pattern_reference(stamped.numpy()), rel=1e-6)
        assert block_pattern(stamped) > 5 * block_pattern(image)
    checkerboard = 0.01 * (-1.0) ** (torch.arange(64)[:, None] + torch.arange(64)[None, :])
    flat = torch.full((64, 64, 3), 0.5, dtype=torch.float64) + checkerboard[..., None]
    assert block_pattern(flat) == pytest.approx(0.01, rel=1e-3)  # the blur removes all of it from the detail
    assert block_pattern(torch.full((64, 64, 3), 0.5)) == pytest.approx(0.0, abs=1e-12)
