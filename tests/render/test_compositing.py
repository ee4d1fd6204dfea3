"""Volume compositing against the per-ray, per-sample loop of the rendering equation (values and gradients), and
against the closed form for a slab of constant density."""

from __future__ import annotations

import math

import pytest
import torch

from avatar4d.render.compositing import composite, distortion, over_background


def composite_by_loop(density, color, deltas, distances=None):
    """One ray and one sample at a time, as the volume rendering sum is written on paper."""
    rgb = torch.zeros(density.shape[0], 3, dtype=density.dtype)
    opacity = torch.zeros(density.shape[0], dtype=density.dtype)
    depth = torch.zeros(density.shape[0], dtype=density.dtype)
    weights = torch.zeros_like(density)
    for r in range(density.shape[0]):
        transmittance = 1.0
        for s in range(density.shape[1]):
            alpha = 1.0 - torch.exp(-density[r, s] * deltas[r, s])
            weight = transmittance * alpha
            weights[r, s] = weight
            rgb[r] += weight * color[r, s]
            opacity[r] += weight
            if distances is not None:
                depth[r] += weight * distances[r, s]
            transmittance = transmittance * (1.0 - alpha)
    return rgb, opacity, depth, weights


def random_rays(num_rays, num_samples, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    density = torch.rand(num_rays, num_samples, generator=gen, dtype=torch.float64) * 5
    density[:, ::3] *= 20  # some opaque samples
    density[:, 1::4] = 0  # and some empty ones
    color = torch.rand(num_rays, num_samples, 3, generator=gen, dtype=torch.float64)
    deltas = torch.rand(num_rays, num_samples, generator=gen, dtype=torch.float64) * 0.1
    distances = torch.cumsum(deltas, 1) + 0.5
    return [t.requires_grad_(requires_grad) for t in (density, color, deltas, distances)]


@pytest.mark.parametrize("num_rays, num_samples", [(1, 1), (5, 17), (64, 48), (3, 200)])
def test_composite_matches_loop(num_rays, num_samples):
    density, color, deltas, distances = random_rays(num_rays, num_samples)
    result = composite(density, color, deltas, distances)
    rgb, opacity, depth, weights = composite_by_loop(density, color, deltas, distances)
    torch.testing.assert_close(result.rgb, rgb)
    torch.testing.assert_close(result.opacity, opacity)
    torch.testing.assert_close(result.depth, depth)
    torch.testing.assert_close(result.weights, weights)


@pytest.mark.parametrize("num_rays, num_samples", [(5, 17), (64, 48)])
def test_weights_sum_to_opacity_at_most_one(num_rays, num_samples):
    density, color, deltas, distances = random_rays(num_rays, num_samples, seed=1)
    density = density * 1000  # nearly opaque rays too
    result = composite(density, color, deltas, distances)
    torch.testing.assert_close(result.weights.sum(-1), result.opacity)
    assert (result.weights >= 0).all()
    assert (result.opacity <= 1.0).all()
    assert (result.opacity >= 0.0).all()


def test_without_distances_depth_is_zero():
    density, color, deltas, _ = random_rays(4, 9)
    assert torch.equal(composite(density, color, deltas).depth, torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("num_samples", [1, 7, 64, 1000])
def test_constant_density_slab_has_the_analytic_opacity(num_samples):
    """A slab of density sigma and length L in front of a background: opacity 1 - exp(-sigma L) whatever the sampling,
    colour c times that, and the expected depth of an exponential distribution truncated to the slab as the samples
    get dense."""
    sigma, start, length = 7.0, 0.3, 0.4
    deltas = torch.full((1, num_samples), length / num_samples, dtype=torch.float64)
    distances = start + (torch.arange(num_samples, dtype=torch.float64)[None] + 0.5) * deltas
    density = torch.full((1, num_samples), sigma, dtype=torch.float64)
    color = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).expand(1, num_samples, 3)
    result = composite(density, color, deltas, distances)
    opacity = 1 - math.exp(-sigma * length)
    assert float(result.opacity) == pytest.approx(opacity, rel=1e-12)
    torch.testing.assert_close(result.rgb[0], torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64) * opacity)
    background = torch.tensor([[1.0, 0.0, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(over_background(result, background)[0],
                               result.rgb[0] + (1 - opacity) * background[0])
    if num_samples == 1000:
        # integral of t sigma exp(-sigma (t - start)) over the slab
        mean_depth = (start + 1 / sigma) * opacity - length * math.exp(-sigma * length)
        assert float(result.depth) == pytest.approx(mean_depth, rel=1e-4)


def test_empty_rays_show_the_background_exactly():
    density = torch.zeros(3, 8)
    color = torch.rand(3, 8, 3)
    deltas = torch.full((3, 8), 0.1)
    background = torch.rand(3, 3)
    result = composite(density, color, deltas)
    assert torch.equal(over_background(result, background), background)


def test_composite_gradients_equal_the_loop_gradients():
    density, color, deltas, distances = random_rays(4, 11, seed=2, requires_grad=True)
    gen = torch.Generator().manual_seed(3)
    upstream_rgb = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    upstream_opacity = torch.randn(4, generator=gen, dtype=torch.float64)
    upstream_depth = torch.randn(4, generator=gen, dtype=torch.float64)
    inputs = (density, color, deltas, distances)

    def objective(rgb, opacity, depth):
        return (rgb * upstream_rgb).sum() + (opacity * upstream_opacity).sum() + (depth * upstream_depth).sum()

    result = composite(*inputs)
    fast = torch.autograd.grad(objective(result.rgb, result.opacity, result.depth), inputs)
    slow = torch.autograd.grad(objective(*composite_by_loop(*inputs)[:3]), inputs)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_composite_gradcheck():
    inputs = random_rays(3, 6, seed=4, requires_grad=True)

    def outputs(density, color, deltas, distances):
        result = composite(density, color, deltas, distances)
        return result.rgb, result.opacity, result.depth

    assert torch.autograd.gradcheck(outputs, tuple(inputs))


def distortion_by_double_sum(weights, distances, deltas):
    """Mip-NeRF 360's equation as written: every pair of samples, then each sample's own interval."""
    out = torch.zeros(weights.shape[0], dtype=weights.dtype)
    for r in range(weights.shape[0]):
        for i in range(weights.shape[1]):
            for j in range(weights.shape[1]):
                out[r] += weights[r, i] * weights[r, j] * (distances[r, i] - distances[r, j]).abs()
            out[r] += weights[r, i] ** 2 * deltas[r, i] / 3.0
    return out


def test_distortion_matches_the_double_sum_and_its_gradient():
    gen = torch.Generator().manual_seed(3)
    weights = torch.rand(5, 9, generator=gen, dtype=torch.float64) / 9
    deltas = torch.rand(5, 9, generator=gen, dtype=torch.float64) * 0.01 + 0.001
    distances = torch.cumsum(deltas, 1) - deltas / 2
    torch.testing.assert_close(distortion(weights, distances, deltas),
                               distortion_by_double_sum(weights, distances, deltas))
    assert torch.autograd.gradcheck(lambda w: distortion(w, distances, deltas), weights.clone().requires_grad_())


def test_distortion_is_smaller_for_a_thin_surface_than_for_a_haze_of_the_same_opacity():
    distances = torch.linspace(0.005, 0.295, 30, dtype=torch.float64)[None]
    deltas = torch.full_like(distances, 0.01)
    surface = torch.zeros_like(distances)
    surface[0, 14] = 0.9
    haze = torch.full_like(distances, 0.9 / 30)
    assert float(distortion(surface, distances, deltas)) == pytest.approx(0.81 * 0.01 / 3)
    assert float(distortion(haze, distances, deltas)) > 20 * float(distortion(surface, distances, deltas))
