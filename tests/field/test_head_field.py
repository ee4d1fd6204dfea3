"""The head field: its boxes around the subject's template, the documented switches and the parameters they add or
remove, and density/colour composed from the canonical grid, the motion grids and the decoder."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatar4d.field.head_field import FieldGeometry, HeadBoxConfig, HeadField, HeadFieldConfig, field_geometry
from avatar4d.field.voxel_grid import grid_shape_for_box, total_variation
from avatar4d.geometry.lattice import grid_cells

# small tensor operations on 2 shared cores run several times faster on one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(template: np.ndarray, num_frames: int = 3, **switches) -> HeadField:
    config = dataclasses.replace(HeadFieldConfig(), **switches)
    return HeadField(config, field_geometry(template, config), num_components=32, num_frames=num_frames,
                     template=template, generator=torch.Generator().manual_seed(0))


def test_field_geometry_boxes_contain_the_template_with_the_documented_margins(face_template):
    config = HeadFieldConfig(box=HeadBoxConfig(side_m=0.07, top_m=0.15, below_chin_m=0.10, behind_m=0.14,
                                               front_m=0.04))
    geometry = field_geometry(face_template, config)
    low, high = face_template.min(0), face_template.max(0)
    np.testing.assert_allclose(geometry.box_min, low - np.array([0.07, 0.10, 0.14]))
    np.testing.assert_allclose(geometry.box_max, high + np.array([0.07, 0.15, 0.04]))
    box_min, box_max = np.array(geometry.box_min), np.array(geometry.box_max)
    region_min, region_max = np.array(geometry.region.box_min), np.array(geometry.region.box_max)
    assert (face_template > box_min).all() and (face_template < box_max).all()
    assert (face_template > region_min).all() and (face_template < region_max).all()
    assert (region_min >= box_min).all() and (region_max <= box_max).all()
    # the region reaches past the template by the prior's full reach (or to the head box)
    reach = config.expression.region_dilation_m + config.expression.region_falloff_m + config.expression.voxel_size_m
    np.testing.assert_allclose(region_min, np.maximum(low - reach, box_min))
    np.testing.assert_allclose(region_max, np.minimum(high + reach, box_max))
    assert geometry.canonical_shape == grid_shape_for_box(tuple(box_max - box_min), config.canonical.voxel_size_m)
    assert geometry.region.shape == grid_shape_for_box(tuple(region_max - region_min), config.expression.voxel_size_m)


def test_field_geometry_round_trips_through_json(face_template):
    geometry = field_geometry(face_template, HeadFieldConfig())
    assert FieldGeometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


def test_default_field_has_canonical_grid_motion_grids_latent_codes_and_decoder(face_template):
    field = build(face_template, num_frames=5)
    config = field.config
    names = {name for name, _ in field.named_parameters()}
    assert {"canonical.table", "expression.tables", "latents", "decoder.first.weight",
            "decoder.latent.weight"} <= names
    assert field.canonical.table.shape == (grid_cells(field.geometry.canonical_shape), config.canonical.channels)
    assert field.expression.tables.shape == (32, grid_cells(field.geometry.region.shape), config.expression.channels)
    assert field.latents.shape == (5, config.latent_dim)
    assert field.decoder.first.in_features == config.canonical.channels + config.expression.channels
    assert field.decoder.latent.in_features == config.latent_dim
    assert 0 < float(field.expression.region_weights.mean()) < 1


def test_without_expression_there_are_no_motion_grids_and_codes_do_not_matter(face_template):
    field = build(face_template, use_expression=False)
    names = {name for name, _ in field.named_parameters()}
    assert field.expression is None and not any(name.startswith("expression") for name in names)
    assert field.decoder.first.in_features == field.config.canonical.channels
    points = field.box_min + torch.rand(100, 3) * (field.box_max - field.box_min)
    frames = field.prepare(torch.randn(2, 32), field.latents[:1].expand(2, -1))
    assert frames.mixed is None
    with torch.no_grad():
        a = field.density(points, torch.zeros(100, dtype=torch.long), frames)
        b = field.density(points, torch.ones(100, dtype=torch.long), frames)
    assert torch.equal(a, b)
    assert float(field.total_variation()[1]) == 0.0


def test_without_the_spatial_prior_the_motion_grids_cover_the_whole_box_with_weight_one(face_template):
    field = build(face_template, use_spatial_prior=False)
    geometry = field.geometry
    assert geometry.region.box_min == geometry.box_min and geometry.region.box_max == geometry.box_max
    assert (field.expression.region_weights == 1).all()
    with_prior = build(face_template)
    assert grid_cells(with_prior.geometry.region.shape) < grid_cells(geometry.region.shape)


def test_without_latent_codes_there_is_no_latent_layer_and_latents_do_not_matter(face_template):
    field = build(face_template, num_frames=4, use_latent_code=False)
    assert field.latents.shape == (4, 0) and field.latents.numel() == 0
    assert field.decoder.latent is None
    assert not any(name.startswith("decoder.latent") for name, _ in field.named_parameters())
    frames = field.prepare(torch.randn(2, 32), torch.randn(2, 32))
    assert frames.frame_bias is None


def test_latent_codes_change_the_field_when_switched_on(face_template):
    field = build(face_template)
    points = field.box_min + torch.rand(50, 3) * (field.box_max - field.box_min)
    frames = field.prepare(torch.zeros(2, 32), torch.randn(2, 32, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        a = field.density(points, torch.zeros(50, dtype=torch.long), frames)
        b = field.density(points, torch.ones(50, dtype=torch.long), frames)
    assert (a != b).all()


def test_field_equals_its_parts_composed_by_hand(face_template):
    """Canonical features by ``grid_sample`` over the head box, motion features by ``grid_sample`` of the explicitly
    mixed grid over the region box, latent code concatenated: the decoder sees exactly that."""
    field = build(face_template, num_frames=2).double()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        field.expression.tables.normal_(generator=gen)
        field.latents.normal_(generator=gen)
    geometry = field.geometry
    region_min = torch.tensor(geometry.region.box_min, dtype=torch.float64)
    region_max = torch.tensor(geometry.region.box_max, dtype=torch.float64)
    points = region_min + torch.rand(64, 3, generator=gen, dtype=torch.float64) * (region_max - region_min)
    directions = F.normalize(torch.randn(64, 3, generator=gen, dtype=torch.float64), dim=-1)
    codes = torch.randn(2, 32, generator=gen, dtype=torch.float64)
    frame_ids = torch.randint(2, (64,), generator=gen)
    density, rgb = field(points, directions, frame_ids, field.prepare(codes, field.latents))

    def sample(table, shape, lo, hi, where):
        volume = table.reshape(*shape, -1).permute(3, 0, 1, 2)[None]
        coords = ((where - lo) / (hi - lo) * 2 - 1).flip(-1).view(1, -1, 1, 1, 3)
        return F.grid_sample(volume, coords, align_corners=True)[0, :, :, 0, 0].T

    canonical = sample(field.canonical.table, geometry.canonical_shape, field.box_min, field.box_max, points)
    mixed = [sum(codes[f, k] * field.expression.tables[k] for k in range(32)) * field.expression.region_weights[:, None]
             for f in range(2)]
    motion_of_frame = [sample(m, geometry.region.shape, region_min, region_max, points) for m in mixed]
    motion = torch.where(frame_ids[:, None] == 0, motion_of_frame[0], motion_of_frame[1])
    decoder = field.decoder
    h = torch.relu(decoder.first(torch.cat([canonical, motion], 1)) + decoder.latent(field.latents[frame_ids]))
    for layer in decoder.hidden:
        h = torch.relu(layer(h))
    torch.testing.assert_close(density, torch.exp(decoder.density(h)[:, 0]))
    torch.testing.assert_close(field.density(points, frame_ids, field.prepare(codes, field.latents)), density)
    assert rgb.shape == (64, 3) and ((rgb >= 0) & (rgb <= 1)).all()


def test_normalise_maps_the_box_to_minus_one_one(face_template):
    field = build(face_template)
    corners = torch.stack([field.box_min, field.box_max, (field.box_min + field.box_max) / 2])
    torch.testing.assert_close(field.normalise(corners),
                               torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))


def test_mean_latent_is_the_mean_of_the_training_codes(face_template):
    field = build(face_template, num_frames=4)
    with torch.no_grad():
        field.latents.copy_(torch.arange(4 * 32, dtype=torch.float32).view(4, 32))
    torch.testing.assert_close(field.mean_latent(), field.latents.mean(0))


def test_total_variation_exact_is_the_grids_total_variation(face_template):
    field = build(face_template)
    with torch.no_grad():
        field.expression.tables.normal_()
    canonical, motion = field.total_variation()
    torch.testing.assert_close(canonical, total_variation(field.canonical.table, field.canonical.shape))
    torch.testing.assert_close(motion, total_variation(field.expression.tables, field.expression.shape))
    sampled = field.total_variation(4096, torch.Generator().manual_seed(0))
    assert sampled[0].requires_grad and sampled[1].requires_grad
    assert float(sampled[0].detach()) == pytest.approx(float(canonical.detach()), rel=0.1)


def test_the_same_generator_seed_gives_the_same_field_in_every_process(face_template):
    """Every initial weight, the decoder's included, comes from the generator (a killed run resumed in another process
    must start from the same field), and building a field leaves torch's global generator alone."""
    before = torch.get_rng_state()
    torch.manual_seed(123)  # unrelated global state must not matter
    a = build(face_template)
    torch.manual_seed(456)
    b = build(face_template)
    for (name, value), other in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(value, other), name
    config = a.config
    c = HeadField(config, a.geometry, 32, 3, face_template, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(c.decoder.first.weight, a.decoder.first.weight)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    build(face_template)
    assert torch.equal(torch.get_rng_state(), state)
    torch.set_rng_state(before)
