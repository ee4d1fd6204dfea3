"""Voxel grids: the 8-corner gather against ``F.grid_sample`` (values and gradients), gradcheck of its custom
backward, and the total variation (exact and sampled) against loops over the grid's edges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avatar4d.field.voxel_grid import (
    VoxelGrid,
    corner_indices_and_weights,
    grid_shape_for_box,
    sampled_total_variation,
    total_variation,
    trilinear_gather,
)
from avatar4d.geometry.lattice import grid_cells, vertex_coordinates

SHAPES = [(2, 2, 2), (5, 4, 3), (7, 2, 6), (9, 11, 8)]


def grid_sample_reference(table: torch.Tensor, shape: tuple[int, int, int], coords: torch.Tensor) -> torch.Tensor:
    """The same interpolation by PyTorch's own sampler: the (X, Y, Z, C) table as a (1, C, D=X, H=Y, W=Z) volume,
    whose grid coordinates are ordered (W, H, D) = (z, y, x); border padding = clamping the coordinates."""
    volume = table.reshape(*shape, -1).permute(3, 0, 1, 2)[None]
    grid = coords.flip(-1).view(1, -1, 1, 1, 3)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, :, :, 0, 0].T


def awkward_points(shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """(N, 3) normalised points: random inside, on vertices, on faces and edges of cells, on the box's faces, edges and
    corners, and outside the box (clamped)."""
    vertices = vertex_coordinates(shape).double()
    inside = torch.rand(200, 3, generator=generator, dtype=torch.float64) * 2 - 1
    # on cell faces / edges: snap one or two coordinates of random points to vertex planes
    snapped = torch.rand(120, 3, generator=generator, dtype=torch.float64) * 2 - 1
    size = torch.tensor(shape, dtype=torch.float64)
    on_plane = ((snapped + 1) * 0.5 * (size - 1)).round() / (size - 1) * 2 - 1
    snapped[:60, 0] = on_plane[:60, 0]
    snapped[60:, :2] = on_plane[60:, :2]
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)],
                           dtype=torch.float64)
    box_faces = torch.rand(30, 3, generator=generator, dtype=torch.float64) * 2 - 1
    box_faces[:10, 0], box_faces[10:20, 1], box_faces[20:, 2] = 1.0, -1.0, 1.0
    outside = (torch.rand(60, 3, generator=generator, dtype=torch.float64) * 2 - 1) * 3
    return torch.cat([inside, snapped, vertices, corners, box_faces, outside])


@pytest.mark.parametrize("shape", SHAPES)
def test_trilinear_gather_equals_grid_sample(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    table = torch.randn(grid_cells(shape), 5, generator=gen, dtype=torch.float64)
    coords = awkward_points(shape, gen)
    indices, weights = corner_indices_and_weights(coords, shape)
    torch.testing.assert_close(trilinear_gather(table, indices, weights), grid_sample_reference(table, shape, coords))


@pytest.mark.parametrize("shape", SHAPES)
def test_corner_weights_are_a_partition_of_unity_on_valid_vertices(shape):
    gen = torch.Generator().manual_seed(1)
    coords = awkward_points(shape, gen)
    indices, weights = corner_indices_and_weights(coords, shape)
    torch.testing.assert_close(weights.sum(-1), torch.ones(coords.shape[0], dtype=torch.float64))
    assert (weights >= 0).all()
    assert indices.min() >= 0 and indices.max() < grid_cells(shape)


def test_a_vertex_reads_exactly_its_own_row():
    shape = (4, 5, 3)
    table = torch.arange(grid_cells(shape) * 2, dtype=torch.float64).view(-1, 2)
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float64) for n in shape]
    vertices = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    indices, weights = corner_indices_and_weights(vertices, shape)
    torch.testing.assert_close(trilinear_gather(table, indices, weights), table, rtol=0, atol=1e-12)


def test_stacked_grids_are_read_through_offsets():
    """``offsets = frame * cells`` reads frame ``frame``'s grid from a (F * cells, C) stack."""
    shape = (3, 4, 5)
    cells = grid_cells(shape)
    gen = torch.Generator().manual_seed(2)
    stack = torch.randn(3, cells, 4, generator=gen, dtype=torch.float64)
    coords = awkward_points(shape, gen)
    frames = torch.randint(3, (coords.shape[0],), generator=gen)
    indices, weights = corner_indices_and_weights(coords, shape)
    out = trilinear_gather(stack.reshape(-1, 4), indices, weights, frames * cells)
    expected = torch.stack([grid_sample_reference(stack[f], shape, coords[i:i + 1])[0]
                            for i, f in enumerate(frames.tolist())])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("use_offsets", [False, True])
def test_trilinear_gather_gradcheck(use_offsets):
    shape = (3, 4, 3)
    cells = grid_cells(shape)
    gen = torch.Generator().manual_seed(3)
    frames = 2 if use_offsets else 1
    table = torch.randn(frames * cells, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    coords = awkward_points(shape, gen)[::7]
    indices, weights = corner_indices_and_weights(coords, shape)
    offsets = torch.randint(frames, (coords.shape[0],), generator=gen) * cells if use_offsets else None
    assert torch.autograd.gradcheck(lambda t: trilinear_gather(t, indices, weights, offsets), (table,))


@pytest.mark.parametrize("wrt", ["table", "points"])
def test_trilinear_gather_gradient_equals_grid_sample_gradient(wrt):
    """To the table at awkward points; to the points (a pose or code fitted to pixels moves them, through the corner
    weights) inside cells, where trilinear interpolation is differentiable."""
    shape = (6, 5, 4)
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(grid_cells(shape), 3, generator=gen, dtype=torch.float64, requires_grad=wrt == "table")
    coords = (awkward_points(shape, gen) if wrt == "table"
              else (torch.rand(80, 3, generator=gen, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True))
    upstream = torch.randn(coords.shape[0], 3, generator=gen, dtype=torch.float64)
    indices, weights = corner_indices_and_weights(coords, shape)
    variable = table if wrt == "table" else coords
    (grad,) = torch.autograd.grad((trilinear_gather(table, indices, weights) * upstream).sum(), variable)
    (expected,) = torch.autograd.grad((grid_sample_reference(table, shape, coords) * upstream).sum(), variable)
    torch.testing.assert_close(grad, expected)


def test_trilinear_gather_float32_table_with_float64_weights_keeps_the_table_dtype():
    shape = (3, 3, 3)
    table = torch.randn(grid_cells(shape), 2)
    coords = torch.rand(10, 3, dtype=torch.float64) * 2 - 1
    indices, weights = corner_indices_and_weights(coords, shape)
    assert trilinear_gather(table, indices, weights).dtype == torch.float32


def test_voxel_grid_module_equals_grid_sample():
    shape = (5, 6, 4)
    grid = VoxelGrid(shape, channels=3, init_std=0.5, generator=torch.Generator().manual_seed(5))
    coords = awkward_points(shape, torch.Generator().manual_seed(6)).float()
    torch.testing.assert_close(grid(coords), grid_sample_reference(grid.table.detach(), shape, coords))


@pytest.mark.parametrize("shape", SHAPES)
def test_the_gather_without_gradients_equals_grid_sample_and_the_gather_with_them(shape):
    gen = torch.Generator().manual_seed(7 + sum(shape))
    table = torch.randn(grid_cells(shape), 4, generator=gen, dtype=torch.float64, requires_grad=True)
    coords = awkward_points(shape, gen)
    indices, weights = corner_indices_and_weights(coords, shape)
    with torch.no_grad():  # the rendering path (one embedding_bag)
        fast = trilinear_gather(table, indices, weights)
    torch.testing.assert_close(fast, grid_sample_reference(table.detach(), shape, coords))
    torch.testing.assert_close(fast, trilinear_gather(table, indices, weights).detach())


def test_corner_columns_follow_the_documented_order():
    shape = (4, 5, 6)
    coords = torch.tensor([[-1.0, -1.0, -1.0], [0.1, -0.3, 0.55]])
    indices, weights = corner_indices_and_weights(coords, shape)
    assert indices[0].tolist() == [(dx * 5 + dy) * 6 + dz for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    continuous = (coords[1] + 1) * 0.5 * (torch.tensor(shape) - 1)
    frac = continuous - continuous.floor()
    expected = [(frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1]) * (frac[2] if dz else 1 - frac[2])
                for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)]
    torch.testing.assert_close(weights[1], torch.stack(expected))


def test_the_voxel_grid_reads_the_same_with_and_without_gradients_and_follows_its_updates():
    shape = (6, 5, 7)
    grid = VoxelGrid(shape, channels=3, init_std=0.5, generator=torch.Generator().manual_seed(8))
    coords = awkward_points(shape, torch.Generator().manual_seed(9)).float()
    with torch.no_grad():
        before = grid(coords)
    torch.testing.assert_close(before, grid(coords).detach())
    with torch.no_grad():
        grid.table.add_(1.0)  # an optimiser step changes the table in place
        torch.testing.assert_close(grid(coords), before + 1.0)


def test_grid_shape_for_box_gives_near_cubic_voxels_and_at_least_two_vertices():
    assert grid_shape_for_box((0.3, 0.4, 0.25), 0.005) == (61, 81, 51)
    assert grid_shape_for_box((0.001, 0.4, 0.0), 0.1) == (2, 5, 2)


def test_vertex_coordinates_are_in_table_order():
    shape = (3, 4, 2)
    coords = vertex_coordinates(shape)
    for ix in range(3):
        for iy in range(4):
            for iz in range(2):
                expected = torch.tensor([ix / 2 * 2 - 1, iy / 3 * 2 - 1, iz / 1 * 2 - 1])
                torch.testing.assert_close(coords[(ix * 4 + iy) * 2 + iz], expected)


# --- total variation --------------------------------------------------------------------------------------------


def total_variation_by_loop(table: torch.Tensor, shape: tuple[int, int, int], *, interior_only: bool) -> float:
    """Per axis, the mean over edges (and leading dims and channels) of the squared difference between an edge's two
    vertices; the mean of the three axes. ``interior_only``: only edges starting at vertices that have all three
    forward neighbours (what the sampled estimate's expectation is)."""
    grids = table.reshape(-1, grid_cells(shape), table.shape[-1])
    sx, sy, sz = shape

    def row(ix, iy, iz):
        return (ix * sy + iy) * sz + iz

    per_axis = []
    for step in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        total, count = 0.0, 0
        for g in range(grids.shape[0]):
            for ix in range(sx):
                for iy in range(sy):
                    for iz in range(sz):
                        if interior_only:
                            if ix == sx - 1 or iy == sy - 1 or iz == sz - 1:
                                continue
                        nx, ny, nz = ix + step[0], iy + step[1], iz + step[2]
                        if nx >= sx or ny >= sy or nz >= sz:
                            continue
                        difference = grids[g, row(nx, ny, nz)] - grids[g, row(ix, iy, iz)]
                        total += float(difference.square().sum())
                        count += difference.numel()
        per_axis.append(total / count)
    return sum(per_axis) / 3.0


@pytest.mark.parametrize("shape, leading", [((4, 5, 3), ()), ((2, 3, 6), (3,)), ((5, 2, 2), (2,))])
def test_total_variation_equals_loop(shape, leading):
    gen = torch.Generator().manual_seed(7)
    table = torch.randn(*leading, grid_cells(shape), 2, generator=gen, dtype=torch.float64)
    assert float(total_variation(table, shape)) == pytest.approx(
        total_variation_by_loop(table, shape, interior_only=False), rel=1e-12)


def test_total_variation_of_a_constant_grid_is_zero_and_of_a_ramp_is_its_slope_squared():
    shape = (4, 3, 5)
    assert float(total_variation(torch.full((grid_cells(shape), 2), 3.0), shape)) == 0.0
    ramp = torch.arange(4, dtype=torch.float64).view(4, 1, 1, 1).expand(4, 3, 5, 1).reshape(-1, 1) * 2.0
    assert float(total_variation(ramp, shape)) == pytest.approx(4.0 / 3.0)  # (2^2 + 0 + 0) / 3


@pytest.mark.parametrize("shape, leading", [((4, 5, 3), ()), ((3, 4, 6), (2,))])
def test_sampled_total_variation_is_unbiased(shape, leading):
    """The average of many draws approaches the mean over interior-start edges, within a few standard errors."""
    gen = torch.Generator().manual_seed(8)
    # rougher towards the far corner, so that leaving out (or wrongly including) the far faces' edges would show
    roughness = 1.0 + 4.0 * (vertex_coordinates(shape).double() + 1).prod(-1)[:, None]
    table = torch.randn(*leading, grid_cells(shape), 3, generator=gen, dtype=torch.float64) * roughness
    exact = total_variation_by_loop(table, shape, interior_only=True)
    draws = torch.stack([sampled_total_variation(table, shape, 64, gen) for _ in range(3000)])
    mean, stderr = float(draws.mean()), float(draws.std()) / len(draws) ** 0.5
    assert abs(mean - exact) < 4 * stderr
    assert abs(mean - exact) < 0.02 * exact
    # the test can tell the two expectations apart: over all edges the mean is clearly different
    assert abs(total_variation_by_loop(table, shape, interior_only=False) - exact) > 10 * stderr


def test_sampled_total_variation_with_every_start_vertex_at_once_is_close_to_exact():
    """With many samples one draw is already close (the estimate concentrates, it does not drift)."""
    shape = (6, 5, 7)
    gen = torch.Generator().manual_seed(9)
    table = torch.randn(grid_cells(shape), 2, generator=gen, dtype=torch.float64)
    exact = total_variation_by_loop(table, shape, interior_only=True)
    assert float(sampled_total_variation(table, shape, 200_000, gen)) == pytest.approx(exact, rel=0.02)


def test_sampled_total_variation_gradient_reaches_only_sampled_vertices_and_their_neighbours():
    shape = (5, 5, 5)
    gen = torch.Generator().manual_seed(10)
    table = torch.randn(grid_cells(shape), 2, generator=gen, dtype=torch.float64, requires_grad=True)
    sampled_total_variation(table, shape, 1, torch.Generator().manual_seed(11)).backward()
    touched = (table.grad != 0).any(-1).nonzero().squeeze(1)
    assert 2 <= len(touched) <= 4  # the vertex and its +x, +y, +z neighbours
    fresh = table.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sampled_total_variation(t, shape, 16, torch.Generator().manual_seed(12)),
                                    (fresh,))


def test_trilinear_gather_gradcheck_in_the_weights():
    shape = (3, 4, 3)
    gen = torch.Generator().manual_seed(6)
    table = torch.randn(grid_cells(shape), 2, generator=gen, dtype=torch.float64, requires_grad=True)
    indices, weights = corner_indices_and_weights(awkward_points(shape, gen)[::9], shape)
    assert torch.autograd.gradcheck(lambda t, w: trilinear_gather(t, indices, w), (table, weights.requires_grad_()))
