"""Expression motion grids: the per-frame mix against an explicit sum over components, features against
``F.grid_sample``, the spatial prior (exactly zero features away from the face, for any code), and the region
weights against a brute-force distance to the template."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avatar4d.field.expression_grids import (
    ExpressionGrids,
    ExpressionGridsConfig,
    RegionGeometry,
    code_weights,
    face_region_weights,
)
from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.geometry.lattice import grid_cells
from avatar4d.tracking import landmarks as lm

# small tensor operations on 2 shared cores run several times faster on one thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")

GEOMETRY = RegionGeometry(box_min=(-0.1, -0.05, 0.0), box_max=(0.1, 0.07, 0.04), shape=(6, 5, 4))


def random_grids(num_components: int = 4, channels: int = 3, seed: int = 0,
                 region_weights: torch.Tensor | None = None) -> ExpressionGrids:
    gen = torch.Generator().manual_seed(seed)
    cells = grid_cells(GEOMETRY.shape)
    if region_weights is None:
        region_weights = torch.rand(cells, generator=gen)
    grids = ExpressionGrids(ExpressionGridsConfig(channels=channels), num_components, GEOMETRY, region_weights)
    with torch.no_grad():
        grids.tables.copy_(torch.randn(grids.tables.shape, generator=gen))
    return grids


def test_motion_grids_start_at_zero():
    grids = ExpressionGrids(ExpressionGridsConfig(channels=5), 7, GEOMETRY, torch.ones(grid_cells(GEOMETRY.shape)))
    assert grids.tables.shape == (7, grid_cells(GEOMETRY.shape), 5)
    assert (grids.tables == 0).all()


def test_region_weights_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="region_weights"):
        ExpressionGrids(ExpressionGridsConfig(), 3, GEOMETRY, torch.ones(5))


def test_mix_equals_the_explicit_sum_over_components():
    grids = random_grids(num_components=5)
    codes = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    mixed = grids.mix(codes)
    for f in range(3):
        expected = torch.zeros_like(grids.tables[0])
        for k in range(5):
            expected = expected + codes[f, k] * grids.tables[k]
        expected = expected * grids.region_weights[:, None]
        torch.testing.assert_close(mixed[f], expected)


def features_reference(mixed: torch.Tensor, points: torch.Tensor, frame_ids: torch.Tensor) -> torch.Tensor:
    """Point by point: zero outside the region box, else ``grid_sample`` of the point's frame grid."""
    box_min, box_max = torch.tensor(GEOMETRY.box_min), torch.tensor(GEOMETRY.box_max)
    out = torch.zeros(points.shape[0], mixed.shape[-1])
    for i in range(points.shape[0]):
        if ((points[i] < box_min) | (points[i] > box_max)).any():
            continue
        coords = (points[i] - box_min) / (box_max - box_min) * 2 - 1
        volume = mixed[frame_ids[i]].reshape(*GEOMETRY.shape, -1).permute(3, 0, 1, 2)[None]
        out[i] = F.grid_sample(volume, coords.flip(-1).view(1, 1, 1, 1, 3), align_corners=True)[0, :, 0, 0, 0]
    return out


def test_features_equal_grid_sample_inside_and_zero_outside_the_region_box():
    grids = random_grids()
    gen = torch.Generator().manual_seed(2)
    mixed = grids.mix(torch.randn(2, 4, generator=gen)).detach()
    box_min, box_max = torch.tensor(GEOMETRY.box_min), torch.tensor(GEOMETRY.box_max)
    extent = box_max - box_min
    points = box_min - 0.3 * extent + torch.rand(400, 3, generator=gen) * 1.6 * extent  # about half outside
    points[:3] = torch.stack([box_min, box_max, (box_min + box_max) / 2])  # on the box's corners: inside
    frame_ids = torch.randint(2, (400,), generator=gen)
    out = grids.features(mixed, points, frame_ids)
    torch.testing.assert_close(out, features_reference(mixed, points, frame_ids))
    outside = ((points < box_min) | (points > box_max)).any(-1)
    assert 100 < int(outside.sum()) < 300
    assert (out[outside] == 0).all()
    assert (out[:3] != 0).any(-1).all()


def test_one_frames_features_without_gradients_equal_the_reference():
    """Rendering (one frame, no gradients) reads the mixed grid through ``grid_sample``: the same features."""
    grids = random_grids()
    gen = torch.Generator().manual_seed(3)
    mixed = grids.mix(torch.randn(1, 4, generator=gen))
    box_min, box_max = torch.tensor(GEOMETRY.box_min), torch.tensor(GEOMETRY.box_max)
    points = box_min - 0.3 * (box_max - box_min) + torch.rand(300, 3, generator=gen) * 1.6 * (box_max - box_min)
    frame_ids = torch.zeros(300, dtype=torch.long)
    with torch.no_grad():
        out = grids.features(mixed, points, frame_ids)
    torch.testing.assert_close(out, features_reference(mixed.detach(), points, frame_ids))
    torch.testing.assert_close(out, grids.features(mixed, points, frame_ids).detach())


def test_features_are_exactly_zero_where_the_eight_surrounding_region_weights_are_zero():
    """Large tables and codes, but zero prior weight on one side of the region: hair, neck and background cannot
    change with expression."""
    sx, sy, sz = GEOMETRY.shape
    weights = torch.ones(sx, sy, sz)
    weights[:3] = 0.0  # vertices with ix in 0..2: cells with ix in 0..1 have 8 zero corners
    grids = random_grids(region_weights=weights.reshape(-1))
    with torch.no_grad():
        grids.tables.mul_(1e3)
    gen = torch.Generator().manual_seed(3)
    mixed = grids.mix(torch.randn(3, 4, generator=gen) * 10)
    box_min, box_max = torch.tensor(GEOMETRY.box_min), torch.tensor(GEOMETRY.box_max)
    unit = torch.rand(300, 3, generator=gen)
    unit[:, 0] *= 2 / (sx - 1)  # within the first two cells along x
    points = box_min + unit * (box_max - box_min)
    out = grids.features(mixed, points, torch.randint(3, (300,), generator=gen))
    assert torch.equal(out, torch.zeros_like(out))
    # and beyond them the features are not zero: the test is not vacuous
    unit[:, 0] = 4 / (sx - 1) + unit[:, 0] * 0.5
    beyond = grids.features(mixed, box_min + unit * (box_max - box_min), torch.zeros(300, dtype=torch.long))
    assert (beyond != 0).any(-1).all()


def test_features_gradient_reaches_the_tables_and_not_through_zero_prior_vertices():
    weights = torch.ones(grid_cells(GEOMETRY.shape))
    weights[:20] = 0.0
    grids = random_grids(region_weights=weights)
    mixed = grids.mix(torch.randn(2, 4, generator=torch.Generator().manual_seed(4)))
    points = torch.tensor(GEOMETRY.box_min) + torch.rand(200, 3) * (torch.tensor(GEOMETRY.box_max)
                                                                     - torch.tensor(GEOMETRY.box_min))
    grids.features(mixed, points, torch.randint(2, (200,))).square().sum().backward()
    assert (grids.tables.grad[:, 20:] != 0).any()
    assert (grids.tables.grad[:, :20] == 0).all()


def test_motion_total_variation_exact_and_sampled():
    from avatar4d.field.voxel_grid import sampled_total_variation, total_variation

    grids = random_grids()
    torch.testing.assert_close(grids.total_variation(), total_variation(grids.tables, GEOMETRY.shape))
    torch.testing.assert_close(grids.total_variation(100, torch.Generator().manual_seed(5)),
                               sampled_total_variation(grids.tables, GEOMETRY.shape, 100,
                                                       torch.Generator().manual_seed(5)))


# --- the spatial prior on the real subject ----------------------------------------------------------------------


def region_weights_by_brute_force(template: np.ndarray, geometry: RegionGeometry,
                                  config: ExpressionGridsConfig) -> np.ndarray:
    axes = [np.linspace(lo, hi, n) for lo, hi, n in zip(geometry.box_min, geometry.box_max, geometry.shape)]
    out = np.zeros(geometry.shape)
    for ix, x in enumerate(axes[0]):
        for iy, y in enumerate(axes[1]):
            vertices = np.stack(np.meshgrid([x], [y], axes[2], indexing="ij"), -1).reshape(-1, 3)
            distance = np.sqrt(((vertices[:, None, :] - template[None]) ** 2).sum(-1)).min(1)
            ramp = (config.region_dilation_m + config.region_falloff_m - distance) / config.region_falloff_m
            out[ix, iy] = np.clip(ramp, 0.0, 1.0)
    return out.reshape(-1)


def test_face_region_weights_equal_brute_force_distances(face_template):
    config = ExpressionGridsConfig(voxel_size_m=0.012)
    geometry = field_geometry(face_template, HeadFieldConfig(expression=config)).region
    weights = face_region_weights(face_template, geometry, config)
    assert weights.dtype == np.float32 and weights.shape == (grid_cells(geometry.shape),)
    np.testing.assert_allclose(weights, region_weights_by_brute_force(face_template, geometry, config), atol=1e-6)


def test_face_region_weights_are_one_near_the_landmarks_and_zero_far_away(face_template):
    from scipy.spatial import cKDTree

    config = ExpressionGridsConfig()
    geometry = field_geometry(face_template, HeadFieldConfig(expression=config)).region
    weights = face_region_weights(face_template, geometry, config)
    axes = [np.linspace(lo, hi, n) for lo, hi, n in zip(geometry.box_min, geometry.box_max, geometry.shape)]
    vertices = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    distance, _ = cKDTree(face_template).query(vertices)
    near = distance <= config.region_dilation_m
    far = distance >= config.region_dilation_m + config.region_falloff_m
    assert near.sum() > 100 and far.sum() > 100
    assert (weights[near] == 1).all()
    assert (weights[far] == 0).all()
    assert (weights >= 0).all() and (weights <= 1).all()


def test_code_weights_follow_the_components_stddev():
    stddev = np.array([40.0, 20.0, 10.0, 1.0])
    np.testing.assert_array_equal(code_weights(stddev, 0.0), np.ones(4, np.float32))
    np.testing.assert_allclose(code_weights(stddev, 1.0), [1.0, 0.5, 0.25, 0.025], rtol=1e-6)
    np.testing.assert_allclose(code_weights(stddev, 0.5), np.sqrt([1.0, 0.5, 0.25, 0.025]), rtol=1e-6)


def test_weighted_mix_equals_the_mix_of_weighted_codes():
    plain = random_grids(num_components=4)
    weights = torch.tensor([1.0, 0.5, 0.25, 0.025])
    weighted = ExpressionGrids(plain.config, 4, GEOMETRY, plain.region_weights, weights)
    with torch.no_grad():
        weighted.tables.copy_(plain.tables)
    codes = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(weighted.mix(codes), plain.mix(codes * weights))
    with pytest.raises(ValueError, match="component_weights"):
        ExpressionGrids(plain.config, 4, GEOMETRY, plain.region_weights, torch.ones(3))


def test_code_weights_are_derived_not_saved(face_template):
    """A field with weighted codes saves the same tensors as one without (old avatars load unchanged); the weights
    come from the config and the face model's stddev."""
    config = HeadFieldConfig()
    weighted_config = dataclasses.replace(
        config, expression=dataclasses.replace(config.expression, code_weight_power=1.0))
    geometry = field_geometry(face_template, config)
    stddev = np.linspace(40.0, 1.0, 32)
    plain = HeadField(config, geometry, 32, 2, face_template, component_stddev=stddev)
    weighted = HeadField(weighted_config, geometry, 32, 2, face_template, component_stddev=stddev)
    assert plain.state_dict().keys() == weighted.state_dict().keys()
    assert torch.equal(plain.expression.component_weights, torch.ones(32))
    torch.testing.assert_close(weighted.expression.component_weights, torch.from_numpy(stddev / 40.0).float())


@pytest.fixture(scope="module")
def expressive_field(face_template):
    """A head field on the real template with non-zero motion grids and latent codes."""
    config = HeadFieldConfig()
    geometry = field_geometry(face_template, config)
    field = HeadField(config, geometry, num_components=32, num_frames=4, template=face_template,
                      generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        field.expression.tables.copy_(torch.randn(field.expression.tables.shape, generator=gen))
        field.latents.copy_(torch.randn(field.latents.shape, generator=gen))
    return field


def test_far_from_the_face_density_and_colour_do_not_change_with_expression(expressive_field, face_template):
    from scipy.spatial import cKDTree

    field = expressive_field
    gen = torch.Generator().manual_seed(2)
    points = field.box_min + torch.rand(20000, 3, generator=gen) * (field.box_max - field.box_min)
    distance, _ = cKDTree(face_template).query(points.numpy())
    config = field.config.expression
    # a point's 8 surrounding vertices are within a voxel diagonal of it
    far = distance > config.region_dilation_m + config.region_falloff_m + np.sqrt(3) * config.voxel_size_m
    near = distance < config.region_dilation_m - np.sqrt(3) * config.voxel_size_m
    assert far.sum() > 1000 and near.sum() > 100
    directions = F.normalize(torch.randn(20000, 3, generator=gen), dim=-1)
    latent = field.latents[:1].expand(2, -1)
    codes = torch.randn(2, 32, generator=gen) * 2
    frames = field.prepare(codes, latent)
    with torch.no_grad():
        density_a, rgb_a = field(points, directions, torch.zeros(20000, dtype=torch.long), frames)
        density_b, rgb_b = field(points, directions, torch.ones(20000, dtype=torch.long), frames)
    far_t, near_t = torch.from_numpy(far), torch.from_numpy(near)
    assert torch.equal(density_a[far_t], density_b[far_t])
    assert torch.equal(rgb_a[far_t], rgb_b[far_t])
    # near the face they do change
    assert (density_a[near_t] != density_b[near_t]).float().mean() > 0.99


def test_near_the_mouth_density_changes_with_expression_once_motion_grids_are_trained(face_template):
    config = HeadFieldConfig()
    field = HeadField(config, field_geometry(face_template, config), num_components=32, num_frames=2,
                      template=face_template, generator=torch.Generator().manual_seed(0))
    mouth = torch.from_numpy(face_template[list(lm.MOUTH_CORNERS) + [13, 14, 0, 17]]).float()  # corners, lips
    codes = torch.zeros(2, 32)
    codes[1, :4] = torch.tensor([2.0, -1.5, 1.0, 0.5])
    ids = torch.arange(2).repeat_interleave(len(mouth))
    points = mouth.repeat(2, 1)
    with torch.no_grad():
        untrained = field.density(points, ids, field.prepare(codes, field.latents))
        assert torch.equal(untrained[:len(mouth)], untrained[len(mouth):])  # motion grids start at zero
        field.expression.tables.normal_(generator=torch.Generator().manual_seed(3))
        trained = field.density(points, ids, field.prepare(codes, field.latents))
    assert (trained[:len(mouth)] != trained[len(mouth):]).all()


def test_without_the_spatial_prior_expression_changes_the_field_everywhere(face_template):
    config = dataclasses.replace(HeadFieldConfig(), use_spatial_prior=False)
    field = HeadField(config, field_geometry(face_template, config), num_components=32, num_frames=1,
                      template=face_template, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        field.expression.tables.normal_(generator=torch.Generator().manual_seed(1))
    top_of_head = torch.tensor([[0.0, float(face_template[:, 1].max()) + 0.12, -0.05]])
    codes = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    frames = field.prepare(codes, field.latents.repeat(2, 1))
    with torch.no_grad():
        density = field.density(top_of_head.repeat(2, 1), torch.arange(2), frames)
    assert density[0] != density[1]
