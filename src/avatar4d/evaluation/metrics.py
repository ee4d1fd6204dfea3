"""Image metrics over a whole image or a region: PSNR, SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, the
settings of pytorch-msssim and scikit-image's ``gaussian_weights=True``), L1, and the block pattern (what an upsampler
repeats on its output's blocks). One implementation serves every model and baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check(name: str, image: Tensor) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be (H, W, 3), got {tuple(image.shape)}")


def psnr(image: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of (H, W, 3) images in [0, 1], over all pixels or those where the (H, W) bool ``mask`` holds."""
    _check("image", image)
    _check("target", target)
    error = (image - target).square().mean(-1)
    mse = error[mask].mean() if mask is not None else error.mean()
    return float("inf") if float(mse) <= 0 else float(-10.0 * torch.log10(mse))


def l1(image: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Mean absolute error of (H, W, 3) images, over all pixels or the (H, W) bool ``mask``."""
    error = (image - target).abs().mean(-1)
    return float(error[mask].mean() if mask is not None else error.mean())


def _gaussian_window(dtype: torch.dtype) -> Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=dtype) - SSIM_WINDOW // 2
    kernel = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    return kernel / kernel.sum()


def ssim_map(image: Tensor, target: Tensor) -> Tensor:
    """Local SSIM of (H, W, 3) images in [0, 1], averaged over channels.

    Returns:
        (H - 10, W - 10): one value per fully covered window position ("valid" filtering, as pytorch-msssim does).
    """
    _check("image", image)
    _check("target", target)
    x = image.permute(2, 0, 1)[None].double()
    y = target.permute(2, 0, 1)[None].double()
    g = _gaussian_window(torch.float64)
    channels = x.shape[1]
    gx = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, gx, groups=channels), gy, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    sigma_xx = blur(x * x) - mu_x**2
    sigma_yy = blur(y * y) - mu_y**2
    sigma_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    value = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_xx + sigma_yy + c2))
    return value[0].mean(0).to(image.dtype)


def ssim(image: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """Mean SSIM of (H, W, 3) images, over the whole image or over window centres inside the (H, W) bool ``mask``."""
    local = ssim_map(image, target)
    if mask is None:
        return float(local.mean())
    half = SSIM_WINDOW // 2
    inner = mask[half:mask.shape[0] - half, half:mask.shape[1] - half]
    return float(local[inner].mean()) if inner.any() else float("nan")


def block_means(grey: Tensor, block: int = 4) -> Tensor:
    """The mean detail (grey level minus its Gaussian blur, SSIM's window) at each pixel position of the images'
    ``block x block`` grid, counted from their top-left pixel: a fixed pattern repeated on the grid (differentiable).

    Args:
        grey: (N, 1, H, W).

    Returns:
        (N, block, block).
    """
    g = _gaussian_window(grey.dtype).to(grey.device)
    blurred = F.conv2d(F.conv2d(grey, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    half = SSIM_WINDOW // 2
    detail = (grey[..., half:-half, half:-half] - blurred)[:, 0]
    skip = -half % block  # so that the tiles start on the image's block grid
    rows, cols = ((n - skip) // block * block for n in detail.shape[-2:])
    tiles = detail[:, skip:skip + rows, skip:skip + cols].reshape(len(grey), rows // block, block, cols // block, block)
    return tiles.mean((1, 3))


def block_pattern(image: Tensor, block: int = 4) -> float:
    """How much one fixed pattern repeats on the image's ``block x block`` pixel grid: the rms of
    :func:`block_means`. Next to nothing in a photograph (the shared videos' frames: 0.00004-0.0006); what an upsampler
    stamps on the blocks it fills from one low-resolution pixel.

    Args:
        image: (H, W, 3) in [0, 1], blocks counted from its top-left pixel.
    """
    _check("image", image)
    return float(block_means(image.mean(-1)[None, None].double(), block).square().mean().sqrt())


def mask_bbox(mask: Tensor, margin: int = 4) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a (H, W) bool mask's bounding box, grown by ``margin`` and clipped."""
    rows = mask.any(1).nonzero()
    cols = mask.any(0).nonzero()
    height, width = mask.shape
    if rows.numel() == 0:
        return 0, height, 0, width
    top = max(0, int(rows[0]) - margin)
    bottom = min(height, int(rows[-1]) + 1 + margin)
    left = max(0, int(cols[0]) - margin)
    right = min(width, int(cols[-1]) + 1 + margin)
    return top, bottom, left, right


def score(image: torch.Tensor, target: torch.Tensor, face: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and L1 of one (H, W, 3) image, whole and inside the (H, W) bool face region."""
    out = {}
    for name, metric in (("psnr", psnr), ("ssim", ssim), ("l1", l1)):
        out[name] = metric(image, target)
        out[f"face_{name}"] = metric(image, target, face)
    return out
