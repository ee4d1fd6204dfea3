"""The tiny decoder: grid features (+ per-frame latent code, + view direction for colour) -> density and colour."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avatar4d.field.encoding import num_sh_coefficients, spherical_harmonics


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped (Instant-NGP's density activation: fast to grow, stable to train)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


@dataclass(frozen=True)
class DecoderConfig:
    """A small MLP shared by every point."""

    hidden: int = 64
    """Width of the hidden layers."""
    layers: int = 2
    """Hidden layers before the density output."""
    sh_degree: int = 1
    """Spherical-harmonics degree of the view direction fed to the colour output (0 = no view dependence)."""
    density_bias: float = -2.0
    """Initial pre-activation of the density (small: the volume starts almost empty)."""
    feature_channels: int = 0
    """Extra channels beside the colour, composited like it, for a 2D upsampler to read (0: colour only)."""


class Decoder(nn.Module):
    """``h = MLP(features + latent bias)``; ``density = exp(w . h)``; ``rgb = sigmoid(W [h, SH(direction)])``
    (followed by ``config.feature_channels`` more sigmoid channels when the avatar has an upsampler).

    The per-frame latent code enters the first layer as a bias computed once per frame (:meth:`frame_bias`), which is
    the same as concatenating it to every point's input but costs nothing per point.
    """

    def __init__(self, in_features: int, latent_dim: int, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.first = nn.Linear(in_features, config.hidden)
        self.latent = nn.Linear(latent_dim, config.hidden, bias=False) if latent_dim > 0 else None
        self.hidden = nn.ModuleList(nn.Linear(config.hidden, config.hidden) for _ in range(config.layers - 1))
        self.density = nn.Linear(config.hidden, 1)
        self.color = nn.Linear(config.hidden + num_sh_coefficients(config.sh_degree), 3 + config.feature_channels)
        with torch.no_grad():
            self.density.bias.fill_(config.density_bias)

    def frame_bias(self, latents: Tensor | None) -> Tensor | None:
        """(F, D) latent codes -> (F, hidden) first-layer bias per frame (None without latent codes)."""
        if self.latent is None or latents is None:
            return None
        return self.latent(latents)

    def forward(self, features: Tensor, frame_bias: Tensor | None, directions: Tensor) -> tuple[Tensor, Tensor]:
        """Decode points.

        Args:
            features: (N, C_in) grid features.
            frame_bias: (N, hidden) each point's frame bias, (hidden,) one shared by all, or None.
            directions: (N, 3) unit view directions, head frame.

        Returns:
            (N,) density per metre and (N, 3 + feature_channels) colour (and features) in [0, 1].
        """
        h = self._hidden(features, frame_bias)
        harmonics = spherical_harmonics(directions, self.config.sh_degree)
        if torch.is_grad_enabled():
            density = trunc_exp(self.density(h).squeeze(-1))
            return density, torch.sigmoid(self.color(torch.cat([h, harmonics], -1)))
        # rendering: both outputs from one product with h, and the view term added without copying h beside it
        hidden = self.config.hidden
        weight = torch.cat([self.density.weight, self.color.weight[:, :hidden]])
        out = torch.addmm(torch.cat([self.density.bias, self.color.bias]), h, weight.T)
        rgb = torch.sigmoid(torch.addmm(out[:, 1:], harmonics, self.color.weight[:, hidden:].T))
        return torch.exp(out[:, 0]), rgb

    def density_only(self, features: Tensor, frame_bias: Tensor | None) -> Tensor:
        """(N, C_in) features -> (N,) density (no colour branch)."""
        return trunc_exp(self.density(self._hidden(features, frame_bias)).squeeze(-1))

    def _hidden(self, features: Tensor, frame_bias: Tensor | None) -> Tensor:
        if frame_bias is not None and frame_bias.dim() == 1:  # one frame: fold its bias into the layer's
            h = torch.addmm(self.first.bias + frame_bias, features, self.first.weight.T)
        else:
            h = self.first(features)
            if frame_bias is not None:
                h = h + frame_bias
        relu = torch.relu if torch.is_grad_enabled() else torch.relu_  # in place when nothing keeps h for backward
        h = relu(h)
        for layer in self.hidden:
            h = relu(layer(h))
        return h
