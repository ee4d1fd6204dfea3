"""Where samples go: the slab test against a brute-force march, stratified samples, and the occupancy grid's cells,
updates and dilation against loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar4d.render.marching import OccupancyGrid, intersect_box, stratified_samples

BOX_MIN = torch.tensor([-0.15, -0.2, -0.19], dtype=torch.float64)
BOX_MAX = torch.tensor([0.14, 0.21, 0.08], dtype=torch.float64)


def intersect_by_marching(origins: np.ndarray, directions: np.ndarray, box_min: np.ndarray, box_max: np.ndarray,
                          t_max: float, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk each ray in small steps from its origin; the first and last steps inside the box."""
    t = np.linspace(0.0, t_max, steps)
    near, far, hit = np.zeros(len(origins)), np.zeros(len(origins)), np.zeros(len(origins), bool)
    for r in range(len(origins)):
        points = origins[r] + t[:, None] * directions[r]
        inside = ((points >= box_min) & (points <= box_max)).all(-1)
        if inside.any():
            hit[r] = True
            near[r] = t[inside.argmax()]
            far[r] = t[len(t) - 1 - inside[::-1].argmax()]
    return near, far, hit


def test_intersect_box_agrees_with_a_brute_force_march():
    gen = torch.Generator().manual_seed(0)
    count = 300
    center = (BOX_MIN + BOX_MAX) / 2
    extent = BOX_MAX - BOX_MIN
    origins = center + torch.nn.functional.normalize(torch.randn(count, 3, generator=gen, dtype=torch.float64),
                                                     dim=-1) * 0.6
    origins[:40] = BOX_MIN + torch.rand(40, 3, generator=gen, dtype=torch.float64) * extent  # starting inside
    targets = center + (torch.rand(count, 3, generator=gen, dtype=torch.float64) - 0.5) * extent * 2.5
    directions = targets - origins
    directions[40:80] *= -1  # pointing away (mostly missing)
    directions[80:120] = torch.nn.functional.normalize(directions[80:120], dim=-1)  # unit and not unit
    directions[120:140, 0] = 0.0  # parallel to the x slabs
    directions[140:150, 1:] = 0.0  # along x only
    directions[150:155] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    origins[150:155, :2] = torch.tensor([[0.5, 0.0], [0.0, 0.0], [-0.1, 0.1], [0.0, 0.3], [0.1, -0.19]],
                                        dtype=torch.float64)
    origins[150:155, 2] = -0.5
    near, far, hit = intersect_box(origins, directions, BOX_MIN, BOX_MAX)
    steps = 40001
    t_max = 4.0
    ref_near, ref_far, ref_hit = intersect_by_marching(origins.numpy(), directions.numpy(), BOX_MIN.numpy(),
                                                       BOX_MAX.numpy(), t_max, steps)
    step = t_max / (steps - 1)
    # grazing rays (inside for less than two march steps) may go either way
    clear = ~ref_hit | (ref_far - ref_near > 2 * step)
    assert clear.mean() > 0.95
    assert 60 < ref_hit.sum() < 260
    np.testing.assert_array_equal(hit.numpy()[clear], ref_hit[clear])
    both = clear & ref_hit
    np.testing.assert_allclose(near.numpy()[both], ref_near[both], atol=step * 1.01)
    np.testing.assert_allclose(far.numpy()[both], ref_far[both], atol=step * 1.01)
    assert (near[:40] == 0).all() and hit[:40].all()  # rays starting inside enter at once
    missed = ~hit
    assert torch.equal(far[missed], near[missed])  # a missed ray has an empty interval
    assert (near >= 0).all()
    assert hit[151] and hit[152] and not hit[150] and not hit[153]


def test_stratified_samples_without_jitter_sit_at_interval_centres():
    near = torch.tensor([0.0, 1.0, 2.5])
    far = torch.tensor([1.0, 3.0, 2.5])
    distances, deltas = stratified_samples(near, far, 4)
    torch.testing.assert_close(distances, torch.tensor([[0.125, 0.375, 0.625, 0.875], [1.25, 1.75, 2.25, 2.75],
                                                        [2.5, 2.5, 2.5, 2.5]]))
    torch.testing.assert_close(deltas, torch.tensor([[0.25] * 4, [0.5] * 4, [0.0] * 4]))


@pytest.mark.parametrize("num_samples", [1, 5, 64])
def test_stratified_samples_lie_in_their_intervals_sorted(num_samples):
    gen = torch.Generator().manual_seed(num_samples)
    near = torch.rand(200, generator=gen)
    far = near + torch.rand(200, generator=gen) * 2 + 1e-3
    distances, deltas = stratified_samples(near, far, num_samples, torch.Generator().manual_seed(1))
    assert distances.shape == deltas.shape == (200, num_samples)
    assert (distances >= near[:, None]).all() and (distances <= far[:, None]).all()
    assert (distances[:, 1:] >= distances[:, :-1]).all()
    step = (far - near)[:, None] / num_samples
    index = torch.arange(num_samples)[None]
    assert (distances >= near[:, None] + index * step - 1e-6).all()
    assert (distances <= near[:, None] + (index + 1) * step + 1e-6).all()
    torch.testing.assert_close(deltas.sum(-1), far - near)
    again, _ = stratified_samples(near, far, num_samples, torch.Generator().manual_seed(1))
    assert torch.equal(distances, again)
    if num_samples > 1:  # jittered: not all at the centres
        centres, _ = stratified_samples(near, far, num_samples)
        assert not torch.allclose(distances, centres)


# --- occupancy grid ---------------------------------------------------------------------------------------------

SHAPE = (5, 7, 4)


def make_grid() -> OccupancyGrid:
    return OccupancyGrid(BOX_MIN.float(), BOX_MAX.float(), SHAPE)


def cell_index_by_search(points: np.ndarray) -> np.ndarray:
    """Per point and axis, the cell whose [lower, upper) edges hold the coordinate (outside: the border cell)."""
    out = np.zeros(len(points), np.int64)
    for i, point in enumerate(points):
        cell = []
        for axis in range(3):
            edges = np.linspace(float(BOX_MIN[axis]), float(BOX_MAX[axis]), SHAPE[axis] + 1)
            c = 0
            for k in range(SHAPE[axis]):
                if point[axis] >= edges[k]:
                    c = k
            cell.append(c)
        out[i] = (cell[0] * SHAPE[1] + cell[1]) * SHAPE[2] + cell[2]
    return out


def test_cell_index_and_query_agree_with_a_search_over_cell_edges():
    grid = make_grid()
    gen = torch.Generator().manual_seed(2)
    extent = (BOX_MAX - BOX_MIN).float()
    points = BOX_MIN.float() - 0.2 * extent + torch.rand(2000, 3, generator=gen) * 1.4 * extent
    np.testing.assert_array_equal(grid.cell_index(points).numpy(), cell_index_by_search(points.numpy()))
    grid.occupied.copy_(torch.rand(grid.occupied.shape, generator=gen) < 0.4)
    expected = grid.occupied.numpy()[cell_index_by_search(points.numpy())]
    np.testing.assert_array_equal(grid.query(points).numpy(), expected)


def test_cell_centres_lie_in_their_own_cells():
    grid = make_grid()
    centres = grid.cell_centers()
    assert torch.equal(grid.cell_index(centres), torch.arange(grid.occupied.numel()))
    jittered = grid.cell_centers(torch.Generator().manual_seed(3))
    cell_size = (grid.box_max - grid.box_min) / torch.tensor(SHAPE)
    assert ((jittered - centres).abs() <= cell_size / 2 + 1e-6).all()
    assert not torch.allclose(jittered, centres)


def test_a_new_grid_is_fully_occupied():
    grid = make_grid()
    assert grid.occupied.all() and grid.occupied_fraction == 1.0


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """Density 100 falling linearly to 0 at 0.12 m from the box centre."""
    centre = (BOX_MIN + BOX_MAX).float() / 2
    return (100.0 * (1 - (points - centre).norm(dim=-1) / 0.12)).clamp(min=0)


def test_update_marks_cells_whose_centre_density_exceeds_the_threshold_and_decays():
    grid = make_grid()
    grid.update(sphere_density, threshold=20.0, generator=None)
    fresh = sphere_density(grid.cell_centers())
    assert torch.equal(grid.occupied, fresh > 20.0)
    assert 0 < grid.occupied_fraction < 0.5
    # no density any more: the kept maximum fades by the decay per update
    grid.update(lambda p: torch.zeros(p.shape[0]), threshold=20.0, decay=0.5)
    assert torch.equal(grid.density, fresh * 0.5)
    assert torch.equal(grid.occupied, fresh * 0.5 > 20.0)
    for _ in range(10):
        grid.update(lambda p: torch.zeros(p.shape[0]), threshold=20.0, decay=0.5)
    assert not grid.occupied.any()


def test_update_in_chunks_equals_one_pass():
    a, b = make_grid(), make_grid()
    a.update(sphere_density, threshold=20.0, generator=torch.Generator().manual_seed(4))
    b.update(sphere_density, threshold=20.0, generator=torch.Generator().manual_seed(4), chunk=7)
    assert torch.equal(a.density, b.density) and torch.equal(a.occupied, b.occupied)


def dilate_by_loop(occupied: np.ndarray, cells: int) -> np.ndarray:
    out = np.zeros_like(occupied)
    sx, sy, sz = occupied.shape
    for x in range(sx):
        for y in range(sy):
            for z in range(sz):
                out[x, y, z] = occupied[max(0, x - cells):x + cells + 1, max(0, y - cells):y + cells + 1,
                                        max(0, z - cells):z + cells + 1].any()
    return out


@pytest.mark.parametrize("cells", [1, 2])
def test_dilate_equals_a_loop_over_neighbourhoods(cells):
    grid = make_grid()
    gen = torch.Generator().manual_seed(5)
    grid.occupied.copy_(torch.rand(grid.occupied.shape, generator=gen) < 0.05)
    grid.occupied[0] = True  # a border cell
    before = grid.occupied.view(SHAPE).numpy().copy()
    grid.dilate(cells)
    np.testing.assert_array_equal(grid.occupied.view(SHAPE).numpy(), dilate_by_loop(before, cells))
