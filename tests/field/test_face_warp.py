"""The face warp: its displacement basis against a brute-force blend over every landmark, the grid read at its
vertices against the per-frame mix, and the inverse warp on the sample subject's real tracked frames (their
landmarks go back to the template); away from the face and for the neutral code nothing moves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar4d.field.face_warp import FaceWarp, FaceWarpConfig, displacement_basis
from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.geometry.lattice import vertex_coordinates

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tracked(prepared_dataset: Path):
    """The sample subject's face model and its tracked expression codes (F, K)."""
    from avatar4d.dataset.layout import load_dataset

    dataset = load_dataset(prepared_dataset)
    return dataset.face_model, dataset.tracking.expression.astype(np.float64)


def reference_basis(template: np.ndarray, displacements: np.ndarray, vertex: np.ndarray,
                    config: FaceWarpConfig) -> np.ndarray:
    """(K, 3) the displacement basis at one vertex, from the definition: sort every landmark by distance."""
    distance = np.linalg.norm(template - vertex, axis=1)
    nearest = np.argsort(distance)[: config.neighbours]
    weights = np.exp(-(distance[nearest] ** 2 - distance[nearest[0]] ** 2) / (2 * config.kernel_m**2))
    weights /= weights.sum()  # the Gaussians relative to the nearest one's: the same ratios, no 0 / 0 far away
    fade = np.clip((config.reach_m + config.falloff_m - distance[nearest[0]]) / config.falloff_m, 0, 1)
    return fade * np.einsum("j,kjc->kc", weights, displacements[:, nearest])


def test_basis_matches_the_definition(tracked) -> None:
    model, _ = tracked
    config = FaceWarpConfig()
    rng = np.random.default_rng(0)
    near = model.template[rng.integers(len(model.template), size=40)] + rng.normal(0, 0.01, (40, 3))
    far = model.template.mean(0) + np.array([[0.0, 0.0, -0.2], [0.3, 0.0, 0.0]])
    vertices = np.concatenate([near, far])
    basis = displacement_basis(model.template, model.basis.scaled, vertices, config)
    expected = np.stack([reference_basis(model.template, model.basis.scaled, v, config) for v in vertices], 1)
    np.testing.assert_allclose(basis, expected, atol=1e-7)
    assert np.abs(basis[:, -2:]).max() == 0.0  # 20 and 30 cm from the face
    assert np.abs(basis[:, :40]).max() > 1e-4


def make_warp(model, config: FaceWarpConfig | None = None) -> FaceWarp:
    geometry = field_geometry(model.template, HeadFieldConfig())
    return FaceWarp(config or FaceWarpConfig(), geometry.region.box_min, geometry.region.box_max, model.template,
                    model.basis.scaled)


def test_displacement_at_vertices_is_the_mix(tracked) -> None:
    model, codes = tracked
    warp = make_warp(model)
    mixed = warp.mix(torch.from_numpy(codes[:3]))
    explicit = torch.einsum("fk,kvc->fvc", torch.from_numpy(codes[:3]).float(), warp.basis)
    torch.testing.assert_close(mixed, explicit)
    low, high = warp.box_min, warp.box_max
    vertices = low + (vertex_coordinates(warp.shape) + 1) * 0.5 * (high - low)
    chosen = torch.randperm(len(vertices), generator=torch.Generator().manual_seed(0))[:500]
    for frame in range(3):
        read = warp.displacement(mixed, vertices[chosen], torch.full((500,), frame))
        torch.testing.assert_close(read, mixed[frame, chosen], atol=1e-6, rtol=1e-4)


def test_inverse_warp_takes_tracked_landmarks_back_to_the_template(tracked) -> None:
    model, codes = tracked
    frames = np.argsort(-np.linalg.norm(codes, axis=1))[:4]  # the most expressive frames
    posed = model.landmarks(codes[frames])
    before = np.linalg.norm(posed - model.template, axis=2).mean()
    errors = {}
    for steps in (1, 2):
        warp = make_warp(model, FaceWarpConfig(iterations=steps))
        mixed = warp.mix(torch.from_numpy(codes[frames]))
        canonical = [warp.to_canonical(mixed, torch.from_numpy(points).float(), torch.full((len(points),), row))
                     for row, points in enumerate(posed)]
        errors[steps] = np.linalg.norm(torch.stack(canonical).numpy() - model.template, axis=2).mean()
    assert errors[1] < 0.35 * before  # the displacement read at the frame's point
    assert errors[2] < 0.8 * errors[1]  # a second fixed-point step solves the inverse better
    assert errors[2] < 0.0005  # metres


def test_neutral_code_and_far_points_do_not_move(tracked) -> None:
    model, codes = tracked
    warp = make_warp(model)
    points = torch.from_numpy(model.template).float()
    neutral = warp.mix(torch.zeros(1, codes.shape[1]))
    assert torch.equal(warp.to_canonical(neutral, points, torch.zeros(len(points), dtype=torch.long)), points)
    far = torch.tensor([[0.0, 0.0, -0.3], [0.5, 0.2, 0.0], [0.0, -0.4, 0.1]])
    mixed = warp.mix(torch.from_numpy(codes[:1]) * 3.0)
    assert torch.equal(warp.to_canonical(mixed, far, torch.zeros(3, dtype=torch.long)), far)


def test_head_field_reads_its_grids_at_the_warped_points(tracked) -> None:
    model, codes = tracked
    config = dataclasses.replace(HeadFieldConfig(), warp=FaceWarpConfig(enabled=True))
    geometry = field_geometry(model.template, config)
    field = HeadField(config, geometry, model.num_components, 2, model.template, torch.Generator().manual_seed(0),
                      model.basis.stddev, model.basis.scaled)
    plain = HeadField(dataclasses.replace(config, warp=FaceWarpConfig()), geometry, model.num_components, 2,
                      model.template)
    plain.load_state_dict(field.state_dict())
    code = torch.from_numpy(codes[np.argmax(np.abs(codes[:, 0]))][None]).float()
    frames = field.prepare(code, field.latents[:1])
    points = torch.from_numpy(model.landmarks(code.double().numpy())[0]).float()
    ids = torch.zeros(len(points), dtype=torch.long)
    warped = field.warp.to_canonical(frames.displacement, points, ids)
    torch.testing.assert_close(field.density(points, ids, frames), plain.density(warped, ids, frames))
    assert not torch.allclose(field.density(points, ids, frames), plain.density(points, ids, frames))
    with pytest.raises(ValueError, match="component_displacements"):
        HeadField(config, geometry, model.num_components, 2, model.template)
