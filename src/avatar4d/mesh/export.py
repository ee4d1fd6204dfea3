"""``export_mesh``: the avatar's head surface at one expression, written as a mesh with vertex colours and a
preview picture beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from avatar4d.atomic import atomic_file, disk_errors
from avatar4d.avatar import Avatar, load_avatar
from avatar4d.errors import ControlError
from avatar4d.images import write_png
from avatar4d.mesh.preview import render_preview
from avatar4d.mesh.surface import (
    LevelChoice,
    choose_level,
    edge_counts,
    extract_surface,
    front_silhouette_agreement,
    grid_shape,
    iso_level,
    largest_component,
    opaque_from_front,
    sample_density,
    vertex_colors,
)
from avatar4d.progress import note
from avatar4d.render.renderer import Conditioning
from avatar4d.validation import check_output_file

MESH_SUFFIXES = (".ply", ".obj", ".glb")
MIN_RESOLUTION = 16


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
    watertight: bool
    """Every edge is shared by exactly two faces (a closed surface)."""
    boundary_edges: int
    """Edges used by one face only (0 when watertight)."""
    nonmanifold_edges: int
    """Edges used by more than two faces (0 when watertight)."""
    dropped_components: int
    """Connected components removed besides the largest (floaters, inner shells)."""
    dropped_faces: int

    @property
    def size_m(self) -> tuple[float, float, float]:
        """Bounding-box side lengths, metres."""
        return tuple(float(b - a) for a, b in zip(self.bounds_min, self.bounds_max))


def preview_path_for(out: Path) -> Path:
    """``head.ply`` -> ``head_preview.png`` beside it."""
    return out.with_name(out.stem + "_preview.png")


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


def _extract(avatar: Avatar, frames: Conditioning, resolution: int, level: float | None) -> _Surface:
    """The largest piece of the surface of the avatar's density at one prepared expression."""
    field = avatar.field
    box_min = field.box_min.cpu().numpy().astype(np.float64)
    box_max = field.box_max.cpu().numpy().astype(np.float64)
    shape = grid_shape(box_max - box_min, resolution)
    density = sample_density(field, frames, box_min, box_max, shape, occupancy=avatar.occupancy)
    voxel_level = iso_level(avatar.config.field.canonical.voxel_size_m)
    spacing_z = float(box_max[2] - box_min[2]) / (shape[2] - 1)
    if level is None:
        choice = choose_level(density, spacing_z, voxel_level)
        if choice.level < voxel_level:
            note(f"mesh: the field is soft (briefly trained?): surface level lowered from {voxel_level:.4g} to "
                 f"{choice.level:.4g} per metre so the mesh covers what the avatar renders as opaque "
                 f"(front silhouette agreement {choice.agreement:.2f}); set it with --level")
    else:
        target = opaque_from_front(density, spacing_z)
        choice = LevelChoice(float(level), voxel_level, front_silhouette_agreement(density, float(level), target))
    vertices, faces = extract_surface(density, choice.level, box_min, box_max)
    total_faces = faces.shape[0]
    vertices, faces, dropped = largest_component(vertices, faces)
    if dropped:
        note(f"mesh: kept the largest connected piece ({faces.shape[0]} faces); dropped {dropped} smaller ones "
             f"({total_faces - faces.shape[0]} faces: floaters or inner shells)")
    return _Surface(vertices, faces, choice, dropped, total_faces)


def export_mesh(avatar_dir: Path, out: Path, *, code: np.ndarray | None = None, resolution: int = 160,
                level: float | None = None) -> MeshResult:
    """Extract the head surface of an avatar at one expression and write it with vertex colours and a preview.

    Args:
        avatar_dir: a trained avatar folder.
        out: the mesh file, ``.ply``, ``.obj`` or ``.glb``; the preview goes to ``<stem>_preview.png`` beside it.
        code: (K,) expression code (default: zeros, the neutral / mean face).
        resolution: grid vertices along the head box's longest side.
        level: iso level, density per metre (default: :func:`choose_level`).

    Raises:
        AvatarError: the avatar folder is missing, incomplete or damaged.
        OutputError: an unknown extension, a missing folder, a full disk.
        ControlError: a code of the wrong length or not finite, a resolution below 16, a level that is not a positive
            number.
        EmptySurfaceError: the density never crosses the level (untrained or empty field).
    """
    out = check_output_file(out, MESH_SUFFIXES)
    if resolution < MIN_RESOLUTION:
        raise ControlError(f"the resolution must be at least {MIN_RESOLUTION} vertices along the longest side, "
                           f"got {resolution}")
    if level is not None and not (np.isfinite(level) and level > 0):
        raise ControlError(f"the iso level must be a positive density per metre, got {level}")
    avatar = load_avatar(avatar_dir)
    field = avatar.field
    latent = field.mean_latent()[None] if avatar.config.field.use_latent_code else None
    frames = field.prepare(torch.from_numpy(_check_code(avatar, code)).to(avatar.device)[None], latent)
    surface = _extract(avatar, frames, resolution, level)
    vertices, faces, choice = surface.vertices, surface.faces, surface.choice
    level, voxel_level, dropped, total_faces = choice.level, choice.voxel_level, surface.dropped, surface.total_faces
    colors = vertex_colors(field, frames, vertices)
    boundary, nonmanifold = edge_counts(faces)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    file_type = out.suffix.lower()[1:]
    with atomic_file(out) as tmp:
        mesh.export(str(tmp), file_type=file_type)
    preview = preview_path_for(out)
    with disk_errors(preview):
        write_png(preview, render_preview(vertices, faces, colors))
    note(f"mesh: {out} ({vertices.shape[0]} vertices, {faces.shape[0]} faces, level {level:.4g}/m"
         f"{', watertight' if boundary == 0 and nonmanifold == 0 else ''}); preview {preview}")
    return MeshResult(mesh=out, preview=preview, num_vertices=int(vertices.shape[0]),
                      num_faces=int(faces.shape[0]), bounds_min=tuple(float(v) for v in vertices.min(0)),
                      bounds_max=tuple(float(v) for v in vertices.max(0)), level=level,
                      voxel_level=voxel_level, silhouette_agreement=choice.agreement,
                      watertight=boundary == 0 and nonmanifold == 0, boundary_edges=boundary,
                      nonmanifold_edges=nonmanifold, dropped_components=dropped,
                      dropped_faces=total_faces - int(faces.shape[0]))
