"""The tiny decoder: truncated-exp density activation, and the latent code as a per-frame first-layer bias compared
with concatenating the code to every point's input (the textbook NeRFace layer)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from avatar4d.field.encoding import spherical_harmonics
from avatar4d.field.heads import Decoder, DecoderConfig, trunc_exp


def test_trunc_exp_is_exp_forward():
    x = torch.linspace(-20, 40, 200, dtype=torch.float64)
    assert torch.equal(trunc_exp(x), torch.exp(x))


def test_trunc_exp_gradient_is_exp_below_15_and_clamped_above():
    x = torch.tensor([-10.0, 0.0, 3.0, 14.9, 15.0, 15.1, 30.0, 80.0], dtype=torch.float64, requires_grad=True)
    trunc_exp(x).backward(torch.full_like(x, 2.0))
    expected = 2.0 * torch.exp(x.detach().clamp(max=15.0))
    torch.testing.assert_close(x.grad, expected, rtol=1e-15, atol=0)
    assert torch.isfinite(x.grad).all()  # exp(80) overflows float32 but its gradient stays bounded


def test_trunc_exp_gradcheck_below_the_clamp():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(trunc_exp, (x,))


def decoder_by_concatenation(decoder: Decoder, features: torch.Tensor, latents: torch.Tensor | None,
                             directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same decoder written as NeRFace does: the latent code concatenated to every point's input of one wider
    first layer."""
    first = decoder.first
    layer = nn.Linear(first.in_features + (latents.shape[1] if latents is not None else 0), first.out_features,
                      dtype=features.dtype)
    with torch.no_grad():
        weight = first.weight if latents is None else torch.cat([first.weight, decoder.latent.weight], 1)
        layer.weight.copy_(weight)
        layer.bias.copy_(first.bias)
    inputs = features if latents is None else torch.cat([features, latents], 1)
    h = torch.relu(layer(inputs))
    for hidden in decoder.hidden:
        h = torch.relu(hidden(h))
    density = torch.exp(decoder.density(h)[:, 0])
    sh = spherical_harmonics(directions, decoder.config.sh_degree)
    rgb = torch.sigmoid(decoder.color(torch.cat([h, sh], 1)))
    return density, rgb


@pytest.mark.parametrize("layers, sh_degree", [(1, 0), (2, 1), (3, 2)])
def test_latent_code_as_first_layer_bias_equals_concatenation(layers, sh_degree):
    torch.manual_seed(layers)
    decoder = Decoder(in_features=20, latent_dim=8, config=DecoderConfig(hidden=16, layers=layers,
                                                                        sh_degree=sh_degree)).double()
    gen = torch.Generator().manual_seed(0)
    frame_latents = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    frame_ids = torch.randint(3, (50,), generator=gen)
    features = torch.randn(50, 20, generator=gen, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen, dtype=torch.float64), dim=-1)
    bias = decoder.frame_bias(frame_latents)
    assert bias.shape == (3, 16)
    density, rgb = decoder(features, bias[frame_ids], directions)
    expected_density, expected_rgb = decoder_by_concatenation(decoder, features, frame_latents[frame_ids], directions)
    torch.testing.assert_close(density, expected_density)
    torch.testing.assert_close(rgb, expected_rgb)
    torch.testing.assert_close(decoder.density_only(features, bias[frame_ids]), expected_density)
    # and the gradients with respect to the latent codes agree
    latents = frame_latents.clone().requires_grad_()
    (grad,) = torch.autograd.grad((decoder(features, decoder.frame_bias(latents)[frame_ids], directions)[1]).sum(),
                                  latents)
    latents_ref = frame_latents.clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(decoder_by_concatenation(decoder, features, latents_ref[frame_ids],
                                                               directions)[1].sum(), latents_ref)
    torch.testing.assert_close(grad, grad_ref)


def test_decoder_without_latent_codes():
    decoder = Decoder(in_features=6, latent_dim=0, config=DecoderConfig(hidden=8, layers=2)).double()
    assert decoder.latent is None
    assert decoder.frame_bias(torch.zeros(2, 0)) is None
    features = torch.randn(10, 6, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.randn(10, 3, dtype=torch.float64), dim=-1)
    density, rgb = decoder(features, None, directions)
    expected_density, expected_rgb = decoder_by_concatenation(decoder, features, None, directions)
    torch.testing.assert_close(density, expected_density)
    torch.testing.assert_close(rgb, expected_rgb)


def test_decoder_starts_almost_empty_with_colours_in_range():
    config = DecoderConfig(density_bias=-2.0)
    decoder = Decoder(in_features=12, latent_dim=4, config=config)
    assert float(decoder.density.bias.detach()) == -2.0
    assert sum(1 for _ in decoder.hidden) == config.layers - 1
    density, rgb = decoder(torch.zeros(5, 12), None, torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3))
    # zero features: the hidden layer is relu(bias); the density is exp(w . h - 2), the same for every point
    assert (density > 0).all() and torch.allclose(density, density[:1].expand(5))
    assert ((rgb > 0) & (rgb < 1)).all()


@pytest.mark.parametrize("layers", [1, 2])
def test_rendering_path_equals_the_training_path_with_a_shared_frame_bias(layers):
    """Without gradients the decoder folds one frame's bias into the first layer and computes density and colour in one
    product: the same values as the per-point path that training differentiates."""
    torch.manual_seed(3)
    decoder = Decoder(20, 8, DecoderConfig(hidden=32, layers=layers, sh_degree=1, feature_channels=5))
    features = torch.randn(300, 20)
    directions = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    bias = decoder.frame_bias(torch.randn(1, 8))
    density, colour = decoder(features, bias.expand(300, -1), directions)
    with torch.no_grad():
        fast_density, fast_colour = decoder(features, bias[0], directions)
    torch.testing.assert_close(fast_density, density.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_colour, colour.detach(), rtol=1e-5, atol=1e-6)
    assert fast_colour.shape == (300, 8)
