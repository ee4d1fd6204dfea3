"""``export_mesh``: the avatar's head surface at one expression, written as a mesh with vertex colours, a preview
picture and a report of its quality (``<stem>_report.json``) beside it."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from avatar4d.atomic import atomic_file, disk_errors, write_json_atomic
from avatar4d.avatar import Avatar, load_avatar
from avatar4d.errors import ControlError
from avatar4d.images import write_png
from avatar4d.mesh.preview import render_preview
from avatar4d.mesh.quality import MeshQuality, mesh_quality
from avatar4d.mesh.surface import (
    LevelChoice,
    blended_levels,
    choose_level,
    edge_counts,
    extract_surface,
    face_level,
    front_depth_offset,
    front_silhouette_agreement,
    grid_shape,
    in_front_extended,
    iso_level,
    largest_component,
    near_points_weight,
    opaque_from_front,
    sample_density,
    smooth_surface,
    smoothed_density,
    vertex_colors,
)
from avatar4d.progress import note
from avatar4d.render.renderer import Conditioning
from avatar4d.validation import check_output_file

MESH_SUFFIXES = (".ply", ".obj", ".glb")
MIN_RESOLUTION = 16
SMOOTH_ITERATIONS = 10
"""Taubin iterations by default: on the avatars of docs/benchmarks.md they lower the face's roughness by about a
third while its distance to the tracked template changes by less than 0.1 mm."""
DENSITY_BLUR_M = 0.0025
"""Gaussian blur of the sampled (log) density by default, metres: half the preview's 5 mm canonical voxel. The
level set of a decoder applied to trilinearly read features dimples at the grid's pitch where the density rises
slowly (greenscreen_man_3s's forehead: a regular pattern of 5 mm pits); on the five shared videos' avatars of
2026-12-05 this halves the face's roughness (2.9-4.0 to 1.7-2.4 deg, with the in-front rule) and moves its distance
to the tracked face by -0.2 to +0.3 mm (-2.2 on talking_woman_15s, whose hair haze over the cheeks it thins)."""


@dataclass(frozen=True)
class MeshResult:
    """What :func:`export_mesh` wrote."""

    mesh: Path
    preview: Path
    num_vertices: int
    num_faces: int
    bounds_min: tuple[float, float, float]
    """Lowest corner of the mesh's axis-aligned bounding box, head frame, metres."""
    bounds_max: tuple[float, float, float]
    level: float
    """The iso level used, density per metre."""
    voxel_level: float
    """Where the automatic level starts (:func:`iso_level` of the field's voxel); ``level`` is lower for a soft
    field."""
    silhouette_agreement: float
    """IoU of the mesh's front silhouette (voxel estimate) with what the avatar renders as opaque from the front."""
    depth_offset_mm: float
    """Median distance, seen from the front, between the surface at ``level`` and where the avatar's rendered light
    ends (:func:`~avatar4d.mesh.surface.front_depth_offset`), millimetres."""
    face_level: float | None
    """The level near the tracked face, where it differs from ``level`` (None: ``level`` everywhere)."""
    face_depth_offset_mm: float
    """The same offset over the columns that look at the face, at the level used there, millimetres."""
    watertight: bool
    """Every edge is shared by exactly two faces (a closed surface)."""
    boundary_edges: int
    """Edges used by one face only (0 when watertight)."""
    nonmanifold_edges: int
    """Edges used by more than two faces (0 when watertight)."""
    dropped_components: int
    """Connected components removed besides the largest (floaters, inner shells)."""
    dropped_faces: int
    report: Path
    """``<stem>_report.json``: the level, counts and quality below, as JSON."""
    smooth_iterations: int
    """Taubin iterations applied (0 = none)."""
    density_blur_mm: float
    """Gaussian blur of the sampled log density before the level choice, millimetres (0 = none)."""
    smoothing_shift_mm: float
    """Mean distance the smoothing moved a vertex, millimetres."""
    quality: MeshQuality
    """Roughness, coverage and template distance of the written mesh's face region."""
    quality_unsmoothed: MeshQuality
    """The same before smoothing."""

    @property
    def size_m(self) -> tuple[float, float, float]:
        """Bounding-box side lengths, metres."""
        return tuple(float(b - a) for a, b in zip(self.bounds_min, self.bounds_max))


def preview_path_for(out: Path) -> Path:
    """``head.ply`` -> ``head_preview.png`` beside it."""
    return out.with_name(out.stem + "_preview.png")


def report_path_for(out: Path) -> Path:
    """``head.ply`` -> ``head_report.json`` beside it."""
    return out.with_name(out.stem + "_report.json")


def _check_code(avatar: Avatar, code: np.ndarray | None) -> np.ndarray:
    expected = avatar.field.num_components
    if code is None:
        return np.zeros(expected, dtype=np.float32)
    value = np.asarray(code, dtype=np.float64)
    if value.ndim != 1 or value.shape[0] != expected:
        raise ControlError(f"the expression code must have {expected} values (one per component of this avatar), "
                           f"got shape {tuple(value.shape)}")
    if not np.all(np.isfinite(value)):
        raise ControlError("the expression code contains values that are not finite numbers")
    return value.astype(np.float32)


@dataclass(frozen=True)
class _Surface:
    vertices: np.ndarray
    faces: np.ndarray
    choice: LevelChoice
    dropped: int
    total_faces: int


FACE_LEVEL_INNER_M = 0.01
"""The face's level holds within this distance of the tracked face's landmarks..."""
FACE_LEVEL_FADE_M = 0.01
"""...and gives way to the level that covers the rest over this much farther out."""


def _extract(avatar: Avatar, frames: Conditioning, resolution: int, level: float | None,
             face_landmarks: np.ndarray, blur_m: float) -> _Surface:
    """The largest piece of the surface of the avatar's (blurred) density at one prepared expression."""
    field = avatar.field
    box_min = field.box_min.cpu().numpy().astype(np.float64)
    box_max = field.box_max.cpu().numpy().astype(np.float64)
    shape = grid_shape(box_max - box_min, resolution)
    spacing = (box_max - box_min) / (np.array(shape) - 1)
    density = smoothed_density(sample_density(field, frames, box_min, box_max, shape, occupancy=avatar.occupancy),
                               blur_m, spacing)
    voxel_level = iso_level(avatar.config.field.canonical.voxel_size_m)
    spacing_z = float(spacing[2])
    target = opaque_from_front(density, spacing_z)
    weight = in_front_extended(near_points_weight(shape, box_min, box_max, face_landmarks, FACE_LEVEL_INNER_M,
                                                  FACE_LEVEL_FADE_M))
    face_columns = target & (weight.max(2) >= 1.0)
    if level is None:
        choice = choose_level(density, spacing_z, voxel_level)
        near_face = face_level(density, spacing_z, voxel_level, face_columns)
        if near_face is not None and near_face != choice.level:
            choice = dataclasses.replace(choice, face_level=near_face, face_depth_offset_m=front_depth_offset(
                density, near_face, spacing_z, face_columns))
        if choice.level < voxel_level:
            note(f"mesh: the field is soft (briefly trained?): surface level {choice.level:.4g} per metre (a crisp "
                 f"field's would be {voxel_level:.4g}) so that the mesh covers what renders opaque (front silhouette "
                 f"agreement {choice.agreement:.2f})"
                 + (f", {choice.face_level:.4g} at the face" if choice.face_level is not None else "")
                 + "; set it with --level")
    else:
        choice = LevelChoice(float(level), voxel_level, front_silhouette_agreement(density, float(level), target),
                             front_depth_offset(density, float(level), spacing_z, target))
    if choice.face_level is None:
        choice = dataclasses.replace(choice, face_depth_offset_m=front_depth_offset(density, choice.level, spacing_z,
                                                                                    face_columns))
        vertices, faces = extract_surface(density, choice.level, box_min, box_max)
    else:
        levels = blended_levels(choice.level, choice.face_level, weight)
        vertices, faces = extract_surface(density / levels, 1.0, box_min, box_max)
    total_faces = faces.shape[0]
    vertices, faces, dropped = largest_component(vertices, faces)
    if dropped:
        note(f"mesh: kept the largest connected piece ({faces.shape[0]} faces); dropped {dropped} smaller ones "
             f"({total_faces - faces.shape[0]} faces: floaters or inner shells)")
    return _Surface(vertices, faces, choice, dropped, total_faces)


def export_mesh(avatar_dir: Path, out: Path, *, code: np.ndarray | None = None, resolution: int = 160,
                level: float | None = None, smooth_iterations: int = SMOOTH_ITERATIONS,
                density_blur_m: float = DENSITY_BLUR_M) -> MeshResult:
    """Extract the head surface of an avatar at one expression and write it with vertex colours, a preview and a
    quality report.

    Args:
        avatar_dir: a trained avatar folder.
        out: the mesh file, ``.ply``, ``.obj`` or ``.glb``; the preview goes to ``<stem>_preview.png`` and the report
            to ``<stem>_report.json`` beside it.
        code: (K,) expression code (default: zeros, the neutral / mean face).
        resolution: grid vertices along the head box's longest side.
        level: iso level, density per metre (default: :func:`choose_level`).
        smooth_iterations: Taubin smoothing iterations (0 = the raw marching-cubes surface).
        density_blur_m: Gaussian blur of the sampled log density, metres (0 = the field's density as it is).

    Raises:
        AvatarError: the avatar folder is missing, incomplete or damaged.
        OutputError: an unknown extension, a missing folder, a full disk.
        ControlError: a code of the wrong length or not finite, a resolution below 16, a level that is not a positive
            number, a negative number of smoothing iterations or a negative blur.
        EmptySurfaceError: the density never crosses the level (untrained or empty field).
    """
    out = check_output_file(out, MESH_SUFFIXES)
    _check_options(resolution, level, smooth_iterations, density_blur_m)
    avatar = load_avatar(avatar_dir)
    field = avatar.field
    code = _check_code(avatar, code)
    latent = field.mean_latent()[None] if avatar.config.field.use_latent_code else None
    frames = field.prepare(torch.from_numpy(code).to(avatar.device)[None], latent)
    face_landmarks = avatar.face_model.landmarks(code[None].astype(np.float64))[0]
    surface = _extract(avatar, frames, resolution, level, face_landmarks, density_blur_m)
    faces, choice = surface.faces, surface.choice
    box_min, box_max = (t.cpu().numpy().astype(np.float64) for t in (field.box_min, field.box_max))
    unsmoothed = mesh_quality(surface.vertices, faces, face_landmarks)
    vertices = smooth_surface(surface.vertices, faces, smooth_iterations, box_min, box_max)
    shift_mm = float(1000.0 * np.linalg.norm(vertices - surface.vertices, axis=1).mean()) if len(vertices) else 0.0
    quality = mesh_quality(vertices, faces, face_landmarks) if smooth_iterations else unsmoothed
    preview = _write_mesh(out, vertices, faces, vertex_colors(field, frames, vertices))
    boundary, nonmanifold = edge_counts(faces)
    result = MeshResult(
        mesh=out, preview=preview, num_vertices=int(vertices.shape[0]), num_faces=int(faces.shape[0]),
        bounds_min=tuple(float(v) for v in vertices.min(0)), bounds_max=tuple(float(v) for v in vertices.max(0)),
        level=choice.level, voxel_level=choice.voxel_level, silhouette_agreement=choice.agreement,
        depth_offset_mm=1000.0 * choice.depth_offset_m, face_level=choice.face_level,
        face_depth_offset_mm=1000.0 * choice.face_depth_offset_m,
        watertight=boundary == 0 and nonmanifold == 0, boundary_edges=boundary, nonmanifold_edges=nonmanifold,
        dropped_components=surface.dropped, dropped_faces=surface.total_faces - int(faces.shape[0]),
        report=report_path_for(out), smooth_iterations=smooth_iterations, smoothing_shift_mm=shift_mm,
        density_blur_mm=1000.0 * density_blur_m,
        quality=quality, quality_unsmoothed=unsmoothed)
    write_json_atomic(result.report, _report(result))
    note(summary_line(result))
    return result


def _check_options(resolution: int, level: float | None, smooth_iterations: int, density_blur_m: float) -> None:
    """Raise ControlError for an option :func:`export_mesh` cannot use."""
    if resolution < MIN_RESOLUTION:
        raise ControlError(f"the resolution must be at least {MIN_RESOLUTION} vertices along the longest side, "
                           f"got {resolution}")
    if level is not None and not (np.isfinite(level) and level > 0):
        raise ControlError(f"the iso level must be a positive density per metre, got {level}")
    if smooth_iterations < 0:
        raise ControlError(f"the smoothing iterations must be 0 or more, got {smooth_iterations}")
    if not (np.isfinite(density_blur_m) and density_blur_m >= 0):
        raise ControlError(f"the density blur must be 0 mm or more, got {1000.0 * density_blur_m:g} mm")


def _write_mesh(out: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> Path:
    """Write the mesh file (atomically) and its preview; returns the preview's path."""
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    with atomic_file(out) as tmp:
        mesh.export(str(tmp), file_type=out.suffix.lower()[1:])
    preview = preview_path_for(out)
    with disk_errors(preview):
        write_png(preview, render_preview(vertices, faces, colors))
    return preview


def summary_line(result: MeshResult) -> str:
    """What ``avatar4d mesh`` says when done: the files, the level, and the face region's quality."""
    quality, before = result.quality, result.quality_unsmoothed
    return (f"mesh: {result.mesh} ({result.num_vertices} vertices, {result.num_faces} faces, level "
            f"{result.level:.4g}/m{', watertight' if result.watertight else ''}); face region: roughness "
            f"{quality.roughness_deg:.1f} deg ({before.roughness_deg:.1f} before smoothing), distance to the tracked "
            f"face {quality.template_distance_mean_mm:.1f} mm mean, {quality.template_distance_p95_mm:.1f} mm p95, "
            f"covers {100 * quality.face_coverage:.0f}% of it; preview {result.preview}; report {result.report}")


def _report(result: MeshResult) -> dict:
    """The report's JSON: every field of the result, paths as strings."""
    values = asdict(result)
    for key in ("mesh", "preview", "report"):
        values[key] = str(values[key])
    values["size_m"] = list(result.size_m)
    for key in ("quality", "quality_unsmoothed"):  # NaN (no face region) is not JSON
        values[key] = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values[key].items()}
    return values
