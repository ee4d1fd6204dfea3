"""Tests for src/avatar4d/mesh/: the surface extraction on analytic densities, and ``export_mesh`` on a briefly
trained avatar (files, scale, orientation, colours, preview, bad input)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from safetensors.torch import load_file, save_file

from avatar4d.avatar import load_avatar
from avatar4d.errors import AvatarError, ControlError, OutputError
from avatar4d.geometry.raster import rasterize
from avatar4d.mesh.export import MESH_SUFFIXES, MeshResult, export_mesh, summary_line
from avatar4d.mesh.preview import BACKGROUND, preview_views
from avatar4d.mesh.quality import mesh_quality
from avatar4d.mesh.surface import (
    EmptySurfaceError,
    blended_levels,
    choose_level,
    extract_surface,
    face_level,
    front_depth_offset,
    grid_shape,
    in_front_extended,
    iso_level,
    largest_component,
    near_points_weight,
    smoothed_density,
)

# ------------------------------------------------------------------------------------ surface on analytic fields


def test_iso_level_gives_half_opacity_over_one_voxel():
    voxel = 0.005
    assert 1.0 - math.exp(-iso_level(voxel) * voxel) == pytest.approx(0.5)


def test_grid_shape_puts_resolution_on_the_longest_side_and_keeps_cells_near_cubic():
    extent = np.array([0.3, 0.45, 0.27])
    shape = grid_shape(extent, 160)
    assert shape[1] == 160
    spacing = extent / (np.array(shape) - 1)
    assert spacing.max() / spacing.min() < 1.02


def _ball_density(box_min, box_max, shape, center, radius, sharpness=200.0):
    axes = [np.linspace(a, b, n) for a, b, n in zip(box_min, box_max, shape)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    distance = np.linalg.norm(grid - np.asarray(center), axis=-1)
    return (1000.0 / (1.0 + np.exp(sharpness * (distance - radius)))).astype(np.float32)


def test_extract_surface_of_a_ball_is_closed_outward_and_the_right_size():
    box_min, box_max = np.array([-0.1, -0.1, -0.1]), np.array([0.1, 0.1, 0.1])
    shape = grid_shape(box_max - box_min, 64)
    density = _ball_density(box_min, box_max, shape, (0.01, -0.02, 0.0), 0.06)
    vertices, faces = extract_surface(density, 500.0, box_min, box_max)  # 500 = half the peak: radius 0.06
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * 0.06 ** 3, rel=0.03)  # positive: normals point out
    radii = np.linalg.norm(vertices - np.array([0.01, -0.02, 0.0]), axis=1)
    assert np.abs(radii - 0.06).max() < 0.002


def test_extract_surface_caps_density_cut_by_the_box_and_keeps_vertices_inside():
    box_min, box_max = np.array([-0.1, -0.1, -0.1]), np.array([0.1, 0.1, 0.1])
    shape = grid_shape(box_max - box_min, 48)
    density = _ball_density(box_min, box_max, shape, (0.0, -0.08, 0.0), 0.06)  # sticks out of the bottom face
    vertices, faces = extract_surface(density, 500.0, box_min, box_max)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert np.all(vertices >= box_min) and np.all(vertices <= box_max)
    assert np.isclose(vertices[:, 1], -0.1).sum() > 20  # the flat cap on the box face


def test_largest_component_drops_a_floater():
    box_min, box_max = np.array([-0.1, -0.1, -0.1]), np.array([0.1, 0.1, 0.1])
    shape = grid_shape(box_max - box_min, 64)
    density = np.maximum(_ball_density(box_min, box_max, shape, (0.0, 0.0, 0.0), 0.05),
                         _ball_density(box_min, box_max, shape, (0.08, 0.08, 0.08), 0.01))
    vertices, faces = extract_surface(density, 500.0, box_min, box_max)
    kept_vertices, kept_faces, dropped = largest_component(vertices, faces)
    assert dropped == 1
    assert np.linalg.norm(kept_vertices, axis=1).max() < 0.052
    assert kept_faces.max() == kept_vertices.shape[0] - 1
    assert trimesh.Trimesh(kept_vertices, kept_faces, process=False).is_watertight


def test_choose_level_keeps_the_voxel_level_for_a_crisp_surface():
    box_min, box_max = np.array([-0.1, -0.1, -0.1]), np.array([0.1, 0.1, 0.1])
    shape = grid_shape(box_max - box_min, 64)
    density = _ball_density(box_min, box_max, shape, (0.0, 0.0, 0.0), 0.06, sharpness=2000.0)
    choice = choose_level(density, 0.2 / 63, iso_level(0.005))
    assert choice.level == choice.voxel_level == iso_level(0.005)
    assert choice.agreement > 0.9


def test_choose_level_lowers_the_level_for_a_soft_field_until_it_covers_what_renders_opaque():
    box_min, box_max = np.array([-0.1, -0.1, -0.1]), np.array([0.1, 0.1, 0.1])
    shape = grid_shape(box_max - box_min, 64)
    density = _ball_density(box_min, box_max, shape, (0.0, 0.0, 0.0), 0.06) * 0.03  # 30 per metre: a fog ball
    choice = choose_level(density, 0.2 / 63, iso_level(0.005))
    assert choice.level < 30.0 < choice.voxel_level
    assert choice.agreement > 0.8


def _ramp_columns(gradient: float, spacing: float, depth_vertices: int = 400) -> np.ndarray:
    """(4, 4, Z) density rising linearly into the head from the front face (+z, the last index): ``gradient * t``
    at depth t metres behind the front."""
    depth = (np.arange(depth_vertices)[::-1] * spacing)  # index Z - 1 is the front, depth 0
    return np.broadcast_to(gradient * depth, (4, 4, depth_vertices)).astype(np.float32).copy()


def test_front_depth_offset_of_a_ramp_is_the_distance_from_its_crossing_to_where_half_the_light_is_absorbed():
    gradient, spacing = 20000.0, 0.0005  # per metre per metre; half the light is absorbed sqrt(2 ln 2 / g) in
    density = _ramp_columns(gradient, spacing)
    median = math.sqrt(2 * math.log(2) / gradient)
    for level in (50.0, 100.0, 400.0):
        expected = abs(level / gradient - median)
        assert front_depth_offset(density, level, spacing, np.ones((4, 4), bool)) == pytest.approx(expected, abs=4e-4)


def test_choose_level_puts_the_surface_where_the_rendered_light_ends():
    gradient, spacing = 20000.0, 0.0005
    density = _ramp_columns(gradient, spacing)
    choice = choose_level(density, spacing, iso_level(0.005))
    ideal = gradient * math.sqrt(2 * math.log(2) / gradient)  # the density at the median depth: 166.5 per metre
    assert ideal / math.sqrt(2) < choice.level < ideal * math.sqrt(2)
    assert choice.depth_offset_m < 0.002


def test_face_level_of_a_ramp_is_the_density_where_the_light_ends_and_needs_the_face_to_be_crossed():
    gradient, spacing = 20000.0, 0.0005
    density = _ramp_columns(gradient, spacing)
    ideal = gradient * math.sqrt(2 * math.log(2) / gradient)
    level = face_level(density, spacing, iso_level(0.005), np.ones((4, 4), bool))
    assert ideal / math.sqrt(2) < level < ideal * math.sqrt(2)
    assert face_level(density, spacing, iso_level(0.005), np.zeros((4, 4), bool)) is None
    fog = np.full((4, 4, 50), 1.0, dtype=np.float32)  # below every candidate: the face keeps no level of its own
    assert face_level(fog, 0.01, iso_level(0.005), np.ones((4, 4), bool)) is None


def test_near_points_weight_is_one_near_the_points_and_fades_to_zero():
    box_min, box_max = np.zeros(3), np.full(3, 0.1)
    shape = (101, 101, 101)  # 1 mm spacing
    weight = near_points_weight(shape, box_min, box_max, np.array([[0.05, 0.05, 0.05]]), 0.01, 0.01)
    assert weight[50, 50, 50] == 1.0 and weight[50, 50, 60] == 1.0
    assert weight[50, 50, 65] == pytest.approx(0.5)
    assert weight[50, 50, 71] == 0.0 and weight[0, 0, 0] == 0.0


def test_in_front_extended_gives_everything_in_front_the_weight_behind_it():
    weight = np.random.default_rng(0).random((3, 4, 9)).astype(np.float32) ** 4
    extended = in_front_extended(weight)
    for i, j, k in np.ndindex(weight.shape):
        assert extended[i, j, k] == weight[i, j, : k + 1].max()


def test_haze_in_front_of_the_face_takes_the_face_level_and_leaves_no_surface():
    """A dense face slab (z < 0.04 m) and a thin sheet of haze 3 cm in front of it: at one low level both are
    surfaces; with the face's level extended in front of the face, only the face is."""
    spacing = 0.002
    z = np.arange(50) * spacing
    density = np.where(z < 0.04, 400.0, 0.01) + np.where(np.abs(z - 0.07) < 0.003, 30.0, 0.0)
    density = np.broadcast_to(density, (20, 20, 50)).astype(np.float32).copy()
    box_min, box_max = np.zeros(3), np.array([19, 19, 49]) * spacing
    face_points = np.array([[x, y, 0.04] for x in (0.01, 0.02, 0.03) for y in (0.01, 0.02, 0.03)])
    weight = near_points_weight(density.shape, box_min, box_max, face_points, 0.01, 0.01)
    cover, face = 10.0, 139.0
    plain, _ = extract_surface(density / blended_levels(cover, face, weight), 1.0, box_min, box_max)
    extended, _ = extract_surface(density / blended_levels(cover, face, in_front_extended(weight)), 1.0, box_min,
                                  box_max)
    def front_z(vertices):  # the frontmost surface over the face's middle columns
        middle = (np.abs(vertices[:, 0] - 0.02) < 0.004) & (np.abs(vertices[:, 1] - 0.02) < 0.004)
        return vertices[middle, 2].max()
    assert front_z(plain) == pytest.approx(0.07, abs=0.005)  # the haze sheet
    assert front_z(extended) == pytest.approx(0.04, abs=0.002)  # the face


def test_smoothed_density_flattens_ripples_by_the_gaussians_factor_and_keeps_a_ramp():
    """log density = a (z0 - z + A sin(2 pi x / L)): a Gaussian of sigma keeps the ramp and scales the ripple by
    exp(-2 pi^2 sigma^2 / L^2) (interior, away from the grid's reflected borders)."""
    spacing, sigma, wavelength, amplitude, slope = 0.001, 0.0012, 0.005, 0.001, 300.0
    x = np.arange(60) * spacing
    z = np.arange(40) * spacing
    log = slope * (0.02 - z[None, None, :] + amplitude * np.sin(2 * np.pi * x[:, None, None] / wavelength))
    density = np.broadcast_to(np.exp(log), (60, 10, 40)).astype(np.float32)
    blurred = np.log(smoothed_density(density, sigma, np.full(3, spacing)))
    factor = math.exp(-2 * math.pi**2 * sigma**2 / wavelength**2)
    expected = slope * (0.02 - z[None, None, :] + factor * amplitude * np.sin(2 * np.pi * x[:, None, None] / wavelength))
    interior = (slice(20, 40), slice(None), slice(10, 30))
    np.testing.assert_allclose(blurred[interior], np.broadcast_to(expected, density.shape)[interior], atol=2e-3 * slope)
    assert smoothed_density(density, 0.0, np.full(3, spacing)) is density
    flat = np.full((8, 8, 8), 5.0, np.float32)
    np.testing.assert_allclose(smoothed_density(flat, 0.002, np.full(3, 0.001)), flat, rtol=1e-5)


def test_choose_level_of_a_field_that_renders_nothing_keeps_the_voxel_level():
    density = np.full((16, 16, 16), 0.135, dtype=np.float32)
    choice = choose_level(density, 0.01, iso_level(0.005))
    assert choice.level == iso_level(0.005) and choice.agreement == 0.0


def test_extract_surface_of_an_empty_field_says_so():
    density = np.full((8, 8, 8), 0.135, dtype=np.float32)  # exp(-2): the untrained decoder's density
    with pytest.raises(EmptySurfaceError, match="never crosses"):
        extract_surface(density, 138.6, np.zeros(3), np.ones(3))


# -------------------------------------------------------------------------------------- export_mesh on an avatar


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module: on 2 cores shared with other jobs, training and density sampling run
    several times faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mesh_avatar(prepared_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample clip's avatar after 200 steps of a cut-down preview preset (1 cm canonical voxels, 512 rays per
    frame, 24 samples per ray): about 45 s on one thread, soft but head-shaped. (The full preview preset at 150 steps
    took 4 to 14 minutes on a shared 2-core machine.)"""
    from avatar4d.training import presets
    from avatar4d.training.trainer import train

    config = presets.get("preview", iterations=200, image_size=64)
    field = dataclasses.replace(
        config.field, canonical=dataclasses.replace(config.field.canonical, voxel_size_m=0.01),
        expression=dataclasses.replace(config.field.expression, voxel_size_m=0.016))
    config = dataclasses.replace(config, field=field, renderer=dataclasses.replace(config.renderer, samples_per_ray=24),
                                 loss=dataclasses.replace(config.loss, tv_samples=2048), rays_per_frame=512,
                                 evaluations=1)
    return train(prepared_dataset, tmp_path_factory.mktemp("mesh") / "avatar", config)


@pytest.fixture(scope="module")
def neutral_mesh(mesh_avatar: Path, tmp_path_factory: pytest.TempPathFactory) -> MeshResult:
    return export_mesh(mesh_avatar, tmp_path_factory.mktemp("mesh_out") / "head.ply", resolution=128)


def test_export_mesh_writes_a_ply_that_trimesh_loads(neutral_mesh: MeshResult):
    assert neutral_mesh.mesh.exists() and neutral_mesh.preview.exists()
    assert neutral_mesh.preview.name == "head_preview.png"
    mesh = trimesh.load(neutral_mesh.mesh, process=False)
    assert len(mesh.vertices) == neutral_mesh.num_vertices > 1000
    assert len(mesh.faces) == neutral_mesh.num_faces > 2000
    np.testing.assert_allclose(mesh.vertices.min(0), neutral_mesh.bounds_min, atol=1e-6)
    np.testing.assert_allclose(mesh.vertices.max(0), neutral_mesh.bounds_max, atol=1e-6)
    assert mesh.is_watertight == neutral_mesh.watertight
    assert not list(neutral_mesh.mesh.parent.glob(".*tmp*"))  # no temporary file left behind


def test_export_mesh_is_inside_the_head_box_at_head_scale(neutral_mesh: MeshResult, mesh_avatar: Path):
    avatar = load_avatar(mesh_avatar)
    box_min, box_max = avatar.field.box_min.numpy(), avatar.field.box_max.numpy()
    vertices = trimesh.load(neutral_mesh.mesh, process=False).vertices
    assert np.all(vertices >= box_min - 1e-6) and np.all(vertices <= box_max + 1e-6)
    size = np.array(neutral_mesh.size_m)
    assert np.all((size > 0.08) & (size < 0.45)), size  # the template's eye distance is 6.3 cm
    template = avatar.face_model.template
    within = np.all((template[:, :2] >= np.array(neutral_mesh.bounds_min)[:2] - 0.005)
                    & (template[:, :2] <= np.array(neutral_mesh.bounds_max)[:2] + 0.005), axis=1)
    assert within.mean() > 0.9


def test_export_mesh_faces_point_outwards(neutral_mesh: MeshResult, mesh_avatar: Path):
    mesh = trimesh.load(neutral_mesh.mesh, process=False)
    assert mesh.volume > 0  # a closed surface whose normals point inwards has a negative signed volume
    # normals point from dense to empty: the density is lower 1 mm out along a vertex's normal than 1 mm in
    avatar = load_avatar(mesh_avatar)
    field = avatar.field
    frames = field.prepare(torch.zeros(1, field.num_components), field.mean_latent()[None])
    box_min, box_max = field.box_min.numpy(), field.box_max.numpy()
    vertices, normals = mesh.vertices, mesh.vertex_normals
    interior = np.all((vertices > box_min + 0.003) & (vertices < box_max - 0.003), axis=1)  # not on the caps

    def density(points):
        points = torch.from_numpy(points.astype(np.float32))
        with torch.no_grad():
            return field.density(points, torch.zeros(len(points), dtype=torch.long), frames).numpy()

    outside = density(vertices[interior] + 0.001 * normals[interior])
    inside = density(vertices[interior] - 0.001 * normals[interior])
    assert (outside < inside).mean() > 0.9
    # seen from the front, the nearest surface along every ray faces the viewer (+z)
    view = preview_views(vertices, 256)[0]
    xy, depth = view.project(vertices)
    visible = rasterize(xy, depth, mesh.faces, 256, 256).face
    assert (mesh.face_normals[visible[visible >= 0], 2] > 0).mean() > 0.95


def test_export_mesh_vertex_colours_vary(neutral_mesh: MeshResult):
    colors = trimesh.load(neutral_mesh.mesh, process=False).visual.vertex_colors[:, :3]
    assert colors.dtype == np.uint8 and len(colors) == neutral_mesh.num_vertices
    assert len(np.unique(colors, axis=0)) > 50 and colors.astype(float).std(0).min() > 3


def test_export_mesh_preview_shows_the_head_where_it_projects(neutral_mesh: MeshResult, mesh_avatar: Path):
    image = cv2.cvtColor(cv2.imread(str(neutral_mesh.preview)), cv2.COLOR_BGR2RGB)
    size = image.shape[0]
    assert image.shape == (size, 3 * size, 3)  # front | three-quarter | profile
    background = np.round(np.array(BACKGROUND) * 255).astype(np.uint8)
    silhouette = np.any(image != background, axis=-1)
    front = silhouette[:, :size]
    for panel in range(3):
        assert 0.05 < silhouette[:, panel * size:(panel + 1) * size].mean() < 0.9
    assert not silhouette[[0, 0, -1, -1], [0, -1, 0, -1]].any()  # corners are backdrop
    assert image[silhouette].std() > 5  # shaded, not flat
    # the subject's face landmarks fall on the front view's silhouette, and the silhouette spans the mesh
    vertices = trimesh.load(neutral_mesh.mesh, process=False).vertices
    front_view = preview_views(vertices, size)[0]
    template = load_avatar(mesh_avatar).face_model.template
    pixels, _ = front_view.project(template)
    cols, rows = np.clip(pixels.astype(int), 0, size - 1).T
    assert front[rows, cols].mean() > 0.9
    mesh_pixels, _ = front_view.project(vertices)
    rows_seen, cols_seen = np.nonzero(front)
    assert abs(cols_seen.min() - mesh_pixels[:, 0].min()) < 3 and abs(cols_seen.max() - mesh_pixels[:, 0].max()) < 3
    assert abs(rows_seen.min() - mesh_pixels[:, 1].min()) < 3 and abs(rows_seen.max() - mesh_pixels[:, 1].max()) < 3


def test_export_mesh_reports_its_quality_in_a_json_beside_it(neutral_mesh: MeshResult, mesh_avatar: Path):
    report = json.loads(neutral_mesh.report.read_text())
    assert neutral_mesh.report.name == "head_report.json"
    assert report["mesh"] == str(neutral_mesh.mesh) and report["level"] == neutral_mesh.level
    assert report["smooth_iterations"] == neutral_mesh.smooth_iterations == 10
    for key in ("quality", "quality_unsmoothed"):
        assert set(report[key]) == {"face_vertices", "roughness_deg", "template_distance_mean_mm",
                                    "template_distance_p95_mm", "face_coverage"}
    quality = neutral_mesh.quality
    assert quality.face_vertices > 100 and 0 < quality.face_coverage <= 1
    assert 0 < quality.template_distance_mean_mm <= quality.template_distance_p95_mm
    # the figures are those of the written file, measured again here
    mesh = trimesh.load(neutral_mesh.mesh, process=False)
    template = load_avatar(mesh_avatar).face_model.template
    again = mesh_quality(np.asarray(mesh.vertices), np.asarray(mesh.faces), template)
    assert again.roughness_deg == pytest.approx(quality.roughness_deg, rel=1e-4)
    assert again.template_distance_mean_mm == pytest.approx(quality.template_distance_mean_mm, rel=1e-4)
    assert "roughness" in summary_line(neutral_mesh) and "mm mean" in summary_line(neutral_mesh)


def test_export_mesh_smoothing_lowers_roughness_and_barely_moves_the_surface(mesh_avatar: Path, tmp_path: Path):
    raw = export_mesh(mesh_avatar, tmp_path / "raw.ply", resolution=64, smooth_iterations=0)
    smoothed = export_mesh(mesh_avatar, tmp_path / "smooth.ply", resolution=64)
    assert raw.quality == raw.quality_unsmoothed and raw.smoothing_shift_mm == 0.0
    assert smoothed.quality_unsmoothed.roughness_deg == pytest.approx(raw.quality.roughness_deg)
    assert smoothed.quality.roughness_deg < raw.quality.roughness_deg - 1.0
    cell_mm = 1000 * max(smoothed.size_m) / 63  # about 5 mm at this resolution
    assert smoothed.smoothing_shift_mm < 0.5 * cell_mm
    assert abs(smoothed.quality.template_distance_mean_mm - raw.quality.template_distance_mean_mm) < 0.25 * cell_mm
    assert (smoothed.num_vertices, smoothed.num_faces) == (raw.num_vertices, raw.num_faces)


def test_export_mesh_density_blur_lowers_roughness_and_keeps_the_face_in_place(mesh_avatar: Path, tmp_path: Path):
    sharp = export_mesh(mesh_avatar, tmp_path / "sharp.ply", resolution=64, density_blur_m=0.0)
    blurred = export_mesh(mesh_avatar, tmp_path / "blurred.ply", resolution=64, density_blur_m=0.005)
    assert sharp.density_blur_mm == 0.0 and blurred.density_blur_mm == pytest.approx(5.0)
    assert blurred.quality.roughness_deg < sharp.quality.roughness_deg
    cell_mm = 1000 * max(blurred.size_m) / 63
    # no farther from the tracked face (on this briefly trained avatar it is nearer: the blur thins a floater)
    assert blurred.quality.template_distance_mean_mm < sharp.quality.template_distance_mean_mm + 0.5 * cell_mm
    with pytest.raises(ControlError, match="density blur"):
        export_mesh(mesh_avatar, tmp_path / "bad.ply", resolution=64, density_blur_m=-0.001)


@pytest.mark.parametrize("suffix", [".obj", ".glb"])
def test_export_mesh_other_formats_keep_vertex_colours(mesh_avatar: Path, tmp_path: Path, suffix: str):
    result = export_mesh(mesh_avatar, tmp_path / f"head{suffix}", resolution=48)
    mesh = trimesh.load(result.mesh, force="mesh", process=False)
    assert len(mesh.vertices) == result.num_vertices and len(mesh.faces) == result.num_faces
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3]
    assert len(np.unique(colors, axis=0)) > 10
    assert (tmp_path / "head_preview.png").exists()


def test_export_mesh_at_an_expression_code(mesh_avatar: Path, tmp_path: Path):
    avatar = load_avatar(mesh_avatar)
    code = avatar.frames.codes[int(np.argmax(np.linalg.norm(avatar.frames.codes, axis=1)))]
    neutral = export_mesh(mesh_avatar, tmp_path / "neutral.ply", resolution=48)
    zeros = export_mesh(mesh_avatar, tmp_path / "zeros.ply", code=np.zeros_like(code), resolution=48)
    expressive = export_mesh(mesh_avatar, tmp_path / "expressive.ply", code=code, resolution=48)
    assert (zeros.num_vertices, zeros.num_faces) == (neutral.num_vertices, neutral.num_faces)
    a = trimesh.load(neutral.mesh, process=False).vertices
    b = trimesh.load(zeros.mesh, process=False).vertices
    np.testing.assert_allclose(a, b)
    assert expressive.num_vertices > 500


# ----------------------------------------------------------------------------------------------------- bad input


def test_export_mesh_of_a_missing_avatar_raises_avatar_error(tmp_path: Path):
    with pytest.raises(AvatarError, match="not an avatar folder"):
        export_mesh(tmp_path / "nowhere", tmp_path / "head.ply")
    assert not (tmp_path / "head.ply").exists()


def test_export_mesh_of_an_incomplete_avatar_names_the_missing_file(mesh_avatar: Path, tmp_path: Path):
    broken = tmp_path / "avatar"
    shutil.copytree(mesh_avatar, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(AvatarError, match="model.safetensors"):
        export_mesh(broken, tmp_path / "head.ply")
    assert not (tmp_path / "head.ply").exists()


@pytest.mark.parametrize("name", ["head.stl", "head", "head.ply.txt"])
def test_export_mesh_to_an_unknown_type_lists_the_supported_ones(mesh_avatar: Path, tmp_path: Path, name: str):
    with pytest.raises(OutputError) as error:
        export_mesh(mesh_avatar, tmp_path / name)
    assert all(suffix in str(error.value) for suffix in MESH_SUFFIXES)
    assert not list(tmp_path.iterdir())


def test_export_mesh_into_a_missing_folder_raises_output_error(mesh_avatar: Path, tmp_path: Path):
    with pytest.raises(OutputError, match="does not exist"):
        export_mesh(mesh_avatar, tmp_path / "no" / "head.ply")


@pytest.mark.parametrize("length_delta", [-1, 1])
def test_export_mesh_with_a_code_of_the_wrong_length_names_the_expected_length(mesh_avatar: Path, tmp_path: Path,
                                                                               length_delta: int):
    expected = load_avatar(mesh_avatar).field.num_components
    with pytest.raises(ControlError, match=f"must have {expected} values"):
        export_mesh(mesh_avatar, tmp_path / "head.ply", code=np.zeros(expected + length_delta))
    assert not (tmp_path / "head.ply").exists()


def test_export_mesh_with_a_non_finite_code_raises_control_error(mesh_avatar: Path, tmp_path: Path):
    expected = load_avatar(mesh_avatar).field.num_components
    code = np.zeros(expected)
    code[0] = np.nan
    with pytest.raises(ControlError, match="not finite"):
        export_mesh(mesh_avatar, tmp_path / "head.ply", code=code)


def test_export_mesh_of_an_empty_field_says_there_is_no_surface(mesh_avatar: Path, tmp_path: Path):
    empty = tmp_path / "avatar"
    shutil.copytree(mesh_avatar, empty)
    tensors = load_file(str(empty / "model.safetensors"))
    tensors["field.decoder.density.weight"] = torch.zeros_like(tensors["field.decoder.density.weight"])
    tensors["field.decoder.density.bias"] = torch.full_like(tensors["field.decoder.density.bias"], -2.0)
    save_file(tensors, str(empty / "model.safetensors"), metadata={"format": "avatar4d.avatar", "version": "1"})
    with pytest.raises(EmptySurfaceError, match="never crosses") as error:
        export_mesh(empty, tmp_path / "head.ply", resolution=32)
    assert "empty" in str(error.value)
    assert not (tmp_path / "head.ply").exists() and not (tmp_path / "head_preview.png").exists()


def test_export_mesh_with_a_level_above_every_density_says_there_is_no_surface(mesh_avatar: Path, tmp_path: Path):
    with pytest.raises(EmptySurfaceError, match="never crosses"):
        export_mesh(mesh_avatar, tmp_path / "head.ply", resolution=32, level=1e30)


def test_export_mesh_with_negative_smoothing_raises_control_error(mesh_avatar: Path, tmp_path: Path):
    with pytest.raises(ControlError, match="smoothing"):
        export_mesh(mesh_avatar, tmp_path / "head.ply", smooth_iterations=-1)


def test_export_mesh_with_a_tiny_resolution_raises_control_error(mesh_avatar: Path, tmp_path: Path):
    with pytest.raises(ControlError, match="resolution"):
        export_mesh(mesh_avatar, tmp_path / "head.ply", resolution=4)


@pytest.mark.parametrize("level", [0.0, -5.0, float("nan")])
def test_export_mesh_with_a_level_that_is_not_a_positive_density_raises_control_error(mesh_avatar: Path,
                                                                                     tmp_path: Path, level: float):
    with pytest.raises(ControlError, match="iso level"):
        export_mesh(mesh_avatar, tmp_path / "head.ply", level=level)


def test_export_mesh_with_an_explicit_level_uses_it(mesh_avatar: Path, tmp_path: Path, neutral_mesh: MeshResult):
    result = export_mesh(mesh_avatar, tmp_path / "head.ply", resolution=48, level=2 * neutral_mesh.level)
    assert result.level == 2 * neutral_mesh.level and result.voxel_level == neutral_mesh.voxel_level
