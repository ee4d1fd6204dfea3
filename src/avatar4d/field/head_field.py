"""The head field: density and colour at points of the canonical head frame, conditioned on a frame's expression
code and latent code. It knows nothing of cameras or rays (the renderer does)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from avatar4d.field.expression_grids import (
    ExpressionGrids,
    ExpressionGridsConfig,
    RegionGeometry,
    code_weights,
    face_region_weights,
)
from avatar4d.field.face_detail import FaceDetailConfig, FaceDetailGrid
from avatar4d.field.face_warp import FaceWarp, FaceWarpConfig
from avatar4d.field.heads import Decoder, DecoderConfig
from avatar4d.field.voxel_grid import VoxelGrid, VoxelGridConfig, grid_shape_for_box
from avatar4d.geometry.lattice import grid_cells


@dataclass(frozen=True)
class HeadBoxConfig:
    """The box the field lives in, as margins around the subject's landmark template (metres, head frame)."""

    side_m: float = 0.07
    """Beyond the face's left and right edges (ears, hair)."""
    top_m: float = 0.15
    """Above the highest landmark (forehead, skull, hair)."""
    below_chin_m: float = 0.10
    """Below the chin (neck)."""
    behind_m: float = 0.14
    """Behind the deepest landmark (the back of the head)."""
    front_m: float = 0.04
    """In front of the nose tip."""


@dataclass(frozen=True)
class HeadFieldConfig:
    """The radiance field of the head and its switches (each part can be turned off to measure its effect)."""

    box: HeadBoxConfig = field(default_factory=HeadBoxConfig)
    canonical: VoxelGridConfig = field(default_factory=VoxelGridConfig)
    expression: ExpressionGridsConfig = field(default_factory=ExpressionGridsConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    warp: FaceWarpConfig = field(default_factory=FaceWarpConfig)
    detail: FaceDetailConfig = field(default_factory=FaceDetailConfig)
    use_expression: bool = True
    """Condition on the expression code through motion grids."""
    use_spatial_prior: bool = True
    """Expression conditioning only inside the face region (else everywhere in the box)."""
    use_latent_code: bool = True
    """A learned per-frame latent code (NeRFace); the mean code is used at test time."""
    latent_dim: int = 32


@dataclass(frozen=True)
class FieldGeometry:
    """Where the field lives (head frame, metres): derived once from the subject's template, saved with the avatar."""

    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    canonical_shape: tuple[int, int, int]
    region: RegionGeometry

    def to_dict(self) -> dict:
        return {"box_min": list(self.box_min), "box_max": list(self.box_max),
                "canonical_shape": list(self.canonical_shape),
                "region": {"box_min": list(self.region.box_min), "box_max": list(self.region.box_max),
                           "shape": list(self.region.shape)}}

    @classmethod
    def from_dict(cls, value: dict) -> FieldGeometry:
        region = value["region"]
        return cls(box_min=tuple(value["box_min"]), box_max=tuple(value["box_max"]),
                   canonical_shape=tuple(value["canonical_shape"]),
                   region=RegionGeometry(tuple(region["box_min"]), tuple(region["box_max"]), tuple(region["shape"])))


def field_geometry(template: np.ndarray, config: HeadFieldConfig) -> FieldGeometry:
    """The head box and the face-region box around a (L, 3) landmark template."""
    low, high = template.min(0), template.max(0)
    b = config.box
    box_min = np.array([low[0] - b.side_m, low[1] - b.below_chin_m, low[2] - b.behind_m])
    box_max = np.array([high[0] + b.side_m, high[1] + b.top_m, high[2] + b.front_m])
    canonical_shape = grid_shape_for_box(tuple(box_max - box_min), config.canonical.voxel_size_m)
    if config.use_spatial_prior:
        reach = config.expression.region_dilation_m + config.expression.region_falloff_m + config.expression.voxel_size_m
        region_min = np.maximum(low - reach, box_min)
        region_max = np.minimum(high + reach, box_max)
    else:
        region_min, region_max = box_min, box_max
    region_shape = grid_shape_for_box(tuple(region_max - region_min), config.expression.voxel_size_m)
    return FieldGeometry(box_min=tuple(map(float, box_min)), box_max=tuple(map(float, box_max)),
                         canonical_shape=canonical_shape,
                         region=RegionGeometry(tuple(map(float, region_min)), tuple(map(float, region_max)),
                                               region_shape))


@dataclass
class PreparedFrames:
    """What the field computes once per frame before querying points of that frame."""

    mixed: Tensor | None
    """(F, cells, C) expression-mixed motion grids, or None without expression conditioning."""
    frame_bias: Tensor | None
    """(F, hidden) the latent code's contribution to the decoder's first layer, or None."""
    displacement: Tensor | None = None
    """(F, V, 3) the face warp's displacement grids, or None without the warp."""

    def detached(self) -> PreparedFrames:
        """The same frames cut from the autograd graph (for no-gradient passes during training)."""
        def cut(value: Tensor | None) -> Tensor | None:
            return value.detach() if value is not None else None

        return PreparedFrames(mixed=cut(self.mixed), frame_bias=cut(self.frame_bias),
                              displacement=cut(self.displacement))


class HeadField(nn.Module):
    """Canonical feature grid (+ the face's detail grid) + expression motion grids + per-frame latent codes + tiny
    decoder.

    Args:
        config: the field's configuration.
        geometry: its boxes and grid shapes.
        num_components: K, the expression code length.
        num_frames: training frames (one latent code each).
        template: (L, 3) the landmark template, for the spatial prior (ignored when the prior is off).
        generator: seeds the initial weights (grid features and decoder); None draws the decoder's from torch's
            global generator.
        component_stddev: (K,) the expression basis's standard deviation per component, for the code weights
            (``config.expression.code_weight_power``); None weighs every component alike.
        component_displacements: (K, L, 3) each template landmark's displacement per unit code, for the face warp
            (required when ``config.warp.enabled``).
    """

    def __init__(self, config: HeadFieldConfig, geometry: FieldGeometry, num_components: int, num_frames: int,
                 template: np.ndarray, generator: torch.Generator | None = None,
                 component_stddev: np.ndarray | None = None,
                 component_displacements: np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry
        self.num_components = num_components
        self.register_buffer("box_min", torch.tensor(geometry.box_min, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(geometry.box_max, dtype=torch.float32))
        self.canonical = VoxelGrid(geometry.canonical_shape, config.canonical.channels, config.canonical.init_std,
                                   generator)
        in_features = config.canonical.channels
        self.detail = (FaceDetailGrid(config.detail, template, config.canonical.channels, generator)
                       if config.detail.enabled else None)
        self.expression: ExpressionGrids | None = None
        if config.use_expression:
            cells = grid_cells(geometry.region.shape)
            weights = (torch.from_numpy(face_region_weights(template, geometry.region, config.expression))
                       if config.use_spatial_prior else torch.ones(cells))
            power = config.expression.code_weight_power
            component_weights = (torch.from_numpy(code_weights(component_stddev, power))
                                 if component_stddev is not None and power != 0 else None)
            self.expression = ExpressionGrids(config.expression, num_components, geometry.region, weights,
                                              component_weights)
            in_features += config.expression.channels
        self.warp: FaceWarp | None = None
        if config.warp.enabled:
            if component_displacements is None:
                raise ValueError("the face warp needs the expression basis's component_displacements")
            self.warp = FaceWarp(config.warp, geometry.region.box_min, geometry.region.box_max, template,
                                 component_displacements)
        latent_dim = config.latent_dim if config.use_latent_code else 0
        self.latents = nn.Parameter(torch.zeros(num_frames, latent_dim))
        # the decoder's layers draw their initial weights from torch's global generator: seed it from ``generator``
        # (without disturbing the caller's global state), so that the whole field, not just its grids, is
        # reproducible from the run's seed in any process (a killed run resumed elsewhere must match an unbroken one)
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            self.decoder = Decoder(in_features, latent_dim, config.decoder)

    @property
    def channels(self) -> int:
        """Channels of what :meth:`forward` gives per point: colour, then ``config.decoder.feature_channels``."""
        return 3 + self.config.decoder.feature_channels

    def canonical_tables(self) -> list[nn.Parameter]:
        """The canonical grid's feature table, and the face's detail grid's when there is one (one learning rate)."""
        return [self.canonical.table] + ([self.detail.grid.table] if self.detail is not None else [])

    def normalise(self, points: Tensor) -> Tensor:
        """(N, 3) head-frame metres -> (N, 3) box coordinates in [-1, 1]."""
        return (points - self.box_min) / (self.box_max - self.box_min) * 2.0 - 1.0

    def mean_latent(self) -> Tensor:
        """(D,) the mean of the training frames' latent codes (what novel frames use)."""
        return self.latents.mean(0)

    def prepare(self, codes: Tensor, latents: Tensor | None) -> PreparedFrames:
        """Per-frame work, once per frame: mix the motion grids, fold the latent code into a bias.

        Args:
            codes: (F, K) expression codes.
            latents: (F, D) latent codes (ignored without latent codes).
        """
        mixed = self.expression.mix(codes) if self.expression is not None else None
        bias = self.decoder.frame_bias(latents) if self.config.use_latent_code else None
        displacement = self.warp.mix(codes) if self.warp is not None else None
        return PreparedFrames(mixed=mixed, frame_bias=bias, displacement=displacement)

    def _features(self, points: Tensor, frame_ids: Tensor, frames: PreparedFrames) -> tuple[Tensor, Tensor | None]:
        if self.warp is not None and frames.displacement is not None:
            points = self.warp.to_canonical(frames.displacement, points, frame_ids)
        features = self.canonical(self.normalise(points))
        if self.detail is not None:
            features = features + self.detail(points)
        if self.expression is not None and frames.mixed is not None:
            features = torch.cat([features, self.expression.features(frames.mixed, points, frame_ids)], -1)
        bias = None
        if frames.frame_bias is not None:  # one frame's bias is shared by every point (no per-point copy)
            bias = frames.frame_bias[0] if frames.frame_bias.shape[0] == 1 else frames.frame_bias[frame_ids]
        return features, bias

    def forward(self, points: Tensor, directions: Tensor, frame_ids: Tensor,
                frames: PreparedFrames) -> tuple[Tensor, Tensor]:
        """Density and colour of points.

        Args:
            points: (N, 3) head frame, metres (inside the box).
            directions: (N, 3) unit view directions, head frame.
            frame_ids: (N,) which prepared frame each point belongs to.
            frames: from :meth:`prepare`.

        Returns:
            (N,) density per metre and (N, 3 + feature_channels) colour (then features) in [0, 1].
        """
        features, bias = self._features(points, frame_ids, frames)
        return self.decoder(features, bias, directions)

    def density(self, points: Tensor, frame_ids: Tensor, frames: PreparedFrames) -> Tensor:
        """(N,) density per metre at (N, 3) head-frame points."""
        features, bias = self._features(points, frame_ids, frames)
        return self.decoder.density_only(features, bias)

    def total_variation(self, samples: int | None = None,
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Total variation of the canonical grid (plus the face's detail grid) and of the motion grids (0 when
        absent): exact, or estimated from ``samples`` random vertices of each (what training uses: a pass over every
        vertex costs more than a step)."""
        canonical = self.canonical.total_variation(samples, generator)
        if self.detail is not None:
            canonical = canonical + self.detail.grid.total_variation(samples, generator)
        motion = (self.expression.total_variation(samples, generator) if self.expression is not None
                  else canonical.new_zeros(()))
        return canonical, motion
