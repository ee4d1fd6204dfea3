"""Image metrics over a whole image or a region: PSNR, SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, the
settings of pytorch-msssim and scikit-image's ``gaussian_weights=True``), L1. One implementation serves every model
and baseline."""

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
