"""Training losses: PSNR against its formula, and the total as the weighted sum of the terms."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from avatar4d.evaluation.lpips import load_lpips
from avatar4d.render.compositing import composite
from avatar4d.training.losses import (
    LossConfig,
    face_depth_loss,
    head_prior_loss,
    landmark_depth_loss,
    patch_loss,
    psnr_from_mse,
    shifted_window,
    training_loss,
)


@pytest.mark.parametrize("mse", [1.0, 0.1, 0.01, 2.5e-4, 1e-9])
def test_psnr_from_mse_is_minus_ten_log10(mse):
    assert psnr_from_mse(mse) == pytest.approx(-10 * math.log10(mse), rel=1e-6)
    assert psnr_from_mse(torch.tensor(mse, requires_grad=True)) == pytest.approx(-10 * math.log10(mse), rel=1e-6)


def test_psnr_of_a_perfect_match_is_infinite():
    assert psnr_from_mse(0.0) == float("inf")
    assert psnr_from_mse(torch.tensor(0.0)) == float("inf")


def test_psnr_from_the_mean_squared_error_of_real_images():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(16, 16, 3, generator=gen)
    image = (target + 0.05 * torch.randn(16, 16, 3, generator=gen)).clamp(0, 1)
    mse = float(((image - target) ** 2).mean())
    assert psnr_from_mse(((image - target) ** 2).mean()) == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)


def test_training_loss_is_the_weighted_sum_of_its_terms():
    gen = torch.Generator().manual_seed(1)
    rgb, target = torch.rand(50, 3, generator=gen), torch.rand(50, 3, generator=gen)
    opacity, target_opacity = torch.rand(50, generator=gen), torch.rand(50, generator=gen)
    tv = (torch.tensor(0.7), torch.tensor(0.2))
    latents = torch.randn(4, 8, generator=gen)
    config = LossConfig(mask=0.3, tv_canonical=0.01, tv_motion=0.05, latent=0.002, landmark_depth=0.004,
                        face_depth=0.02, distortion=0.5, head_prior=0.03)
    spread = torch.rand(50, generator=gen) * 0.01
    terms = training_loss(rgb, target, opacity, target_opacity, tv, latents, config, torch.tensor(2.5),
                          torch.tensor(0.125), torch.tensor(1.5), spread, torch.tensor(0.4))
    rgb_mse = float(((rgb - target) ** 2).mean())
    mask = float(((opacity - target_opacity) ** 2).mean())
    latent = float((latents ** 2).sum(1).mean())
    assert float(terms.rgb) == pytest.approx(rgb_mse)
    assert float(terms.mask) == pytest.approx(mask)
    assert float(terms.tv) == pytest.approx(0.01 * 0.7 + 0.05 * 0.2)
    assert float(terms.latent) == pytest.approx(latent)
    assert float(terms.patch) == pytest.approx(0.125)  # the upsampler's patch loss comes weighted already
    assert float(terms.face_depth) == pytest.approx(1.5)
    assert float(terms.distortion) == pytest.approx(float(spread.mean()))
    assert float(terms.total) == pytest.approx(rgb_mse + 0.3 * mask + 0.01 * 0.7 + 0.05 * 0.2 + 0.002 * latent
                                               + 0.004 * 2.5 + 0.125 + 0.02 * 1.5 + 0.5 * float(spread.mean())
                                               + 0.03 * 0.4)
    assert float(terms.head_prior) == pytest.approx(0.4)
    assert set(terms.as_floats()) == {"total", "rgb", "mask", "tv", "latent", "depth", "face_depth", "patch",
                                      "distortion", "head_prior"}


def test_the_patch_loss_is_weighted_l1_and_mask_error_and_perceptual_distance():
    gen = torch.Generator().manual_seed(2)
    rgb, target = torch.rand(1, 3, 40, 40, generator=gen), torch.rand(1, 3, 40, 40, generator=gen)
    alpha, mask = torch.rand(1, 1, 40, 40, generator=gen), torch.rand(1, 1, 40, 40, generator=gen)
    config = LossConfig(mask=0.3, patch_l1=0.2, patch_perceptual=0.5, patch_perceptual_shift=0, patch_pattern=0.0)
    pixels = 0.2 * float((rgb - target).abs().mean()) + 0.3 * float((alpha - mask).square().mean())
    assert float(patch_loss(rgb, target, alpha, mask, config, None)) == pytest.approx(pixels)
    model, reason = load_lpips(allow_download=False)
    if model is None:
        pytest.skip(f"LPIPS weights not cached here: {reason}")
    distance = float(model(rgb, target)[0])
    assert float(patch_loss(rgb, target, alpha, mask, config, model)) == pytest.approx(pixels + 0.5 * distance)
    # shifted: LPIPS of the window the generator draws, the pixel terms still over the whole patch
    shifted = dataclasses.replace(config, patch_perceptual_shift=4)
    top, left = (int(v) for v in torch.randint(4, (2,), generator=torch.Generator().manual_seed(9)))
    window = (..., slice(top, top + 37), slice(left, left + 37))
    distance = float(model(rgb[window], target[window])[0])
    loss = patch_loss(rgb, target, alpha, mask, shifted, model, torch.Generator().manual_seed(9))
    assert float(loss) == pytest.approx(pixels + 0.5 * distance)


def test_the_patch_pattern_term_is_the_rms_of_a_stamp_on_the_error_and_pulls_it_out():
    """A checkerboard of +-0.02 over a real-valued prediction that is otherwise right: the blur removes none of it
    from the target, so the term is 0.02 (per colour channel's mean); its gradient removes the stamp."""
    target = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    checkerboard = 0.02 * (-1.0) ** (torch.arange(48)[:, None] + torch.arange(48)[None, :])
    stamp = checkerboard.clone().requires_grad_(True)
    alpha = torch.ones(1, 1, 48, 48)
    config = LossConfig(mask=0.0, patch_l1=0.0, patch_perceptual=0.0, patch_pattern=2.0)
    loss = patch_loss(target + stamp, target, alpha, alpha, config, None)
    assert float(loss) == pytest.approx(2.0 * 0.02, rel=1e-3)
    loss.backward()
    assert float((stamp.grad * checkerboard).sum()) > 0  # descending the gradient shrinks the stamp
    assert float(patch_loss(target, target, alpha, alpha, config, None)) == pytest.approx(0.0, abs=1e-5)


def test_shifted_windows_take_every_offset_below_the_shift_and_stay_inside():
    image = torch.arange(20 * 30.0).reshape(1, 20, 30)
    generator = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(200):
        window = image[shifted_window(20, 30, 4, generator)]
        assert window.shape == (1, 17, 27)
        corners.add((int(window[0, 0, 0]) // 30, int(window[0, 0, 0]) % 30))
    assert corners == {(top, left) for top in range(4) for left in range(4)}
    assert image[shifted_window(20, 30, 1, generator)].shape == image.shape


def test_landmark_depth_loss_is_the_weighted_squared_distance_from_the_landmark():
    """Against the per-sample sum written out: sum_s w_s (t_s - t*)^2 / sigma^2, plus (1 - opacity)^2."""
    gen = torch.Generator().manual_seed(3)
    density = torch.rand(6, 20, generator=gen, dtype=torch.float64) * 30
    distances = torch.sort(torch.rand(6, 20, generator=gen, dtype=torch.float64) * 0.5 + 0.2, dim=1).values
    deltas = torch.full((6, 20), 0.5 / 20, dtype=torch.float64)
    result = composite(density, torch.zeros(6, 20, 3, dtype=torch.float64), deltas, distances)
    target = torch.rand(6, generator=gen, dtype=torch.float64) * 0.5 + 0.2
    expected = sum(
        sum(float(result.weights[r, s]) * (float(distances[r, s]) - float(target[r])) ** 2 for s in range(20)) / 0.01**2
        + (1 - float(result.opacity[r])) ** 2 for r in range(6)) / 6
    value = landmark_depth_loss(result.depth, result.depth_second_moment, result.opacity, target, 0.01)
    assert float(value) == pytest.approx(expected, rel=1e-9)


def test_landmark_depth_loss_is_zero_for_an_opaque_surface_at_the_landmark():
    one = torch.ones(3, dtype=torch.float64)
    t = torch.tensor([0.3, 0.4, 0.5], dtype=torch.float64)
    assert float(landmark_depth_loss(t, t**2, one, t, 0.01)) == pytest.approx(0.0, abs=1e-9)


def test_training_loss_without_latent_codes_has_a_zero_latent_term():
    rgb = torch.rand(5, 3)
    terms = training_loss(rgb, rgb, torch.ones(5), torch.ones(5), (torch.tensor(0.0), torch.tensor(0.0)), None,
                          LossConfig())
    assert float(terms.latent) == 0.0 and float(terms.total) == 0.0
    empty = training_loss(rgb, rgb, torch.ones(5), torch.ones(5), (torch.tensor(0.0), torch.tensor(0.0)),
                          torch.zeros(2, 0), LossConfig())
    assert float(empty.latent) == 0.0


def test_face_depth_loss_is_the_huber_penalty_of_where_the_ray_ends_written_out():
    """Against the per-sample sum: x = sum_s w_s (t_s - t*) / sigma, then x^2 / 2 below 1 and |x| - 1/2 above."""
    gen = torch.Generator().manual_seed(4)
    density = torch.rand(8, 20, generator=gen, dtype=torch.float64) * 30
    distances = torch.sort(torch.rand(8, 20, generator=gen, dtype=torch.float64) * 0.5 + 0.2, dim=1).values
    deltas = torch.full((8, 20), 0.5 / 20, dtype=torch.float64)
    result = composite(density, torch.zeros(8, 20, 3, dtype=torch.float64), deltas, distances)
    target = result.depth / result.opacity + torch.linspace(-0.02, 0.02, 8, dtype=torch.float64)  # both regimes
    sigma = 0.005

    def huber(x):
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    expected = sum(huber(sum(float(result.weights[r, s]) * (float(distances[r, s]) - float(target[r]))
                             for s in range(20)) / sigma) for r in range(8)) / 8
    value = face_depth_loss(result.depth, result.opacity, target, sigma)
    assert float(value) == pytest.approx(expected, rel=1e-9)
    spread = sum(sum(float(result.weights[r, s]) * (float(distances[r, s]) - float(target[r])) ** 2
                     for s in range(20)) / sigma**2 for r in range(8)) / 8
    with_spread = face_depth_loss(result.depth, result.opacity, target, sigma, result.depth_second_moment, 0.3)
    assert float(with_spread) == pytest.approx(expected + 0.3 * spread, rel=1e-7)


def test_face_depth_spread_sees_haze_in_front_that_the_offset_does_not():
    """Half the light ending 2 cm in front of the surface and half 2 cm behind: no offset, a large spread."""
    t = torch.tensor([0.40], dtype=torch.float64)
    def moment(power: int) -> torch.Tensor:
        return torch.tensor([0.5 * 0.38**power + 0.5 * 0.42**power], dtype=torch.float64)

    depth, second, opacity = moment(1), moment(2), moment(0)
    assert float(face_depth_loss(depth, opacity, t, 0.005)) == pytest.approx(0.0, abs=1e-9)
    value = face_depth_loss(depth, opacity, t, 0.005, second, 1.0)
    assert float(value) == pytest.approx((0.02 / 0.005) ** 2, rel=1e-6)


def test_face_depth_loss_is_zero_on_the_surface_and_pulls_the_ray_towards_it():
    t = torch.tensor([0.3, 0.4], dtype=torch.float64)
    assert float(face_depth_loss(t, torch.ones(2, dtype=torch.float64), t, 0.005)) == 0.0
    depth = (t + torch.tensor([0.01, -0.002], dtype=torch.float64)).requires_grad_()  # ends behind / in front
    face_depth_loss(depth, torch.ones(2, dtype=torch.float64), t, 0.005).backward()
    assert depth.grad[0] > 0 and depth.grad[1] < 0
    assert float(depth.grad[0]) == pytest.approx(1 / 0.005 / 2)  # linear regime: the gradient is bounded


def test_face_depth_is_off_by_default():
    assert LossConfig().face_depth == 0.0


def test_head_prior_is_the_mean_transmittance_through_five_millimetres():
    density = torch.tensor([0.0, 200.0, 1e4], requires_grad=True)
    loss = head_prior_loss(density)
    expected = (1.0 + math.exp(-1.0) + math.exp(-50.0)) / 3.0
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert (density.grad[:2] < 0).all()  # more density where it is thin lowers the loss
    assert abs(float(density.grad[2])) < 1e-20  # already solid: nothing to gain


def test_minimising_the_head_prior_makes_the_heads_core_solid(face_template):
    """The loss reaches the field: Adam on the prior alone turns the core from empty to solid."""
    from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
    from avatar4d.field.head_shape import head_core

    config = HeadFieldConfig()
    field = HeadField(config, field_geometry(face_template, config), 32, 1, face_template,
                      torch.Generator().manual_seed(0))
    core, gen = head_core(face_template), torch.Generator().manual_seed(1)
    optimiser = torch.optim.Adam(field.parameters(), lr=0.02)

    def loss() -> torch.Tensor:
        frames = field.prepare(torch.zeros(1, 32), field.latents)
        return head_prior_loss(field.density(core.sample(512, gen), torch.zeros(512, dtype=torch.long), frames))

    first = float(loss().detach())
    for _ in range(40):
        optimiser.zero_grad()
        loss().backward()
        optimiser.step()
    assert first > 0.9 and float(loss().detach()) < 0.1
