"""Dense face geometry from what tracking already gives: the face model's landmarks of a frame (template + expression
code, posed by ``camera_from_head``) triangulated by MediaPipe's face mesh, rasterised into the frame as the distance
from the camera centre along each pixel's ray, the surface normal, and a validity mask.

- **Exact per pixel.** A pixel belongs to the nearest triangle its centre falls in (z-buffer); the distance is where
  the pixel's ray meets that triangle's plane. The rasteriser interpolates ``-1/z``, which is affine in the image for
  a perspective camera, so the nearest triangle and ``z`` are exact; the distance is ``z`` divided by the ray
  direction's ``z`` (unit directions).
- **Normals** are the mesh's area-weighted vertex normals, interpolated with perspective-correct barycentric weights
  and normalised; camera frame (OpenCV axes), pointing out of the face (towards the camera where the face is seen).
- **Valid** pixels are covered by the face mesh, seen from the front at less than ``max_incidence_deg`` from the
  normal (not grazing the outline), and at least ``margin_fraction`` of the image size inside the covered region (the
  outline's pixels straddle face and background). The eye openings and the mouth are holes of the mesh, so they are
  never valid.

For training, :func:`face_depth_targets` keeps the valid pixels of the training frames (sparse,
:class:`FaceDepthTargets`) and :func:`sample_face_depth` draws rays through them for a batch's frames
(:class:`FaceDepthRays`, in the head frame like the batch's own rays).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from avatar4d.dataset.layout import PreparedDataset
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.raster import rasterize
from avatar4d.geometry.rays import camera_rays_in_head, pixel_directions
from avatar4d.geometry.rigid import transform_points
from avatar4d.progress import Progress
from avatar4d.tracking.triangulation import NUM_MESH_LANDMARKS, face_triangles


@dataclass(frozen=True)
class FaceDepthConfig:
    """Which rasterised face pixels count as depth targets."""

    max_incidence_deg: float = 75.0
    """Pixels whose ray meets the surface further than this from its normal are left out (grazing: near the outline
    a small pose error moves the depth a lot)."""
    margin_fraction: float = 0.01
    """The covered region is eroded by this fraction of the image size, rounded to whole pixels (1 px at 128 px, 5 at
    512 px; 0 = none)."""


@dataclass(frozen=True)
class FaceDepth:
    """One frame's face surface, per pixel."""

    distance: np.ndarray
    """(H, W) float32 distance from the camera centre along the pixel centre's ray, metres; NaN where not valid."""
    normals: np.ndarray
    """(H, W, 3) float32 unit normals, camera frame (OpenCV axes), out of the face; 0 where not valid."""
    valid: np.ndarray
    """(H, W) bool."""


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of a triangle mesh (0 for unused vertices)."""
    corners = vertices[triangles]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # length = 2 area
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def rasterize_depth(vertices_camera: np.ndarray, triangles: np.ndarray, camera: PinholeCamera,
                    config: FaceDepthConfig = FaceDepthConfig()) -> FaceDepth:
    """Rasterise a triangle mesh in front of a pinhole camera into distance, normals and validity.

    Args:
        vertices_camera: (V, 3) camera frame (OpenCV: x right, y down, z forward), metres, all with z > 0.
        triangles: (T, 3) vertex indices, counter-clockwise seen from outside (normals point outwards).
        camera: the image's intrinsics (its width and height are the output's).
        config: which covered pixels are valid.
    """
    vertices = np.asarray(vertices_camera, np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(vertices[:, 2] > 0):
        raise ValueError(f"vertices_camera must be (V, 3) in front of the camera (z > 0), got {vertices.shape}")
    height, width = camera.height, camera.width
    xy = camera.project(vertices)
    raster = rasterize(xy, -1.0 / vertices[:, 2], triangles, height, width)
    covered = raster.face >= 0
    corners = triangles[raster.face[covered]]  # (P, 3)
    inverse_z = raster.barycentric[covered] / vertices[corners, 2]  # (P, 3) screen weights / z
    z = 1.0 / inverse_z.sum(1)
    weights = inverse_z * z[:, None]  # perspective-correct barycentric weights
    rows, cols = np.nonzero(covered)
    rays = np.stack([(cols + 0.5 - camera.cx) / camera.fx, (rows + 0.5 - camera.cy) / camera.fy, np.ones(len(z))], 1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    normal = (vertex_normals(vertices, triangles)[corners] * weights[..., None]).sum(1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    facing = -(normal * rays).sum(1) > np.cos(np.radians(config.max_incidence_deg))
    valid = np.zeros((height, width), bool)
    valid[rows, cols] = facing
    margin = round(config.margin_fraction * max(height, width))
    if margin > 0:
        valid &= cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=margin,
                           borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    distance = np.full((height, width), np.nan, np.float32)
    distance[rows, cols] = z / rays[:, 2]
    normals = np.zeros((height, width, 3), np.float32)
    normals[rows, cols] = normal
    distance[~valid] = np.nan
    normals[~valid] = 0.0
    return FaceDepth(distance=distance, normals=normals, valid=valid)


def face_mesh_in_camera(dataset: PreparedDataset, indices: np.ndarray) -> np.ndarray:
    """(F, 468, 3) the face model's mesh landmarks of frames ``indices`` (template + expression code, posed by
    ``camera_from_head``), camera frame, metres."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    heads = dataset.face_model.landmarks(dataset.tracking.expression[indices].astype(np.float64))
    poses = dataset.tracking.camera_from_head[indices]
    return np.stack([transform_points(pose, points[:NUM_MESH_LANDMARKS]) for pose, points in zip(poses, heads)])


def face_depth(dataset: PreparedDataset, index: int, size: int,
               config: FaceDepthConfig = FaceDepthConfig()) -> FaceDepth:
    """The face surface of frame ``index`` rasterised at ``size`` x ``size`` pixels (the dataset's square crop)."""
    triangles = face_triangles(dataset.face_model.template)
    vertices = face_mesh_in_camera(dataset, np.array([index]))[0]
    return rasterize_depth(vertices, triangles, dataset.camera.resized(size, size), config)


@dataclass
class FaceDepthTargets:
    """The valid face pixels of many frames at one resolution, stored sparsely (frame by frame, row-major)."""

    camera: PinholeCamera
    """Intrinsics of the resolution the targets were rasterised at."""
    offsets: Tensor
    """(F + 1,) int64: frame ``f``'s pixels are entries ``offsets[f]:offsets[f + 1]``."""
    pixels: Tensor
    """(N,) int64 row-major pixel index in its frame."""
    distance: Tensor
    """(N,) float32 distance from the camera centre along the pixel centre's ray, metres."""
    normals: Tensor
    """(N, 3) float32 unit normals, camera frame, out of the face."""

    @property
    def counts(self) -> Tensor:
        """(F,) valid pixels per frame."""
        return self.offsets[1:] - self.offsets[:-1]


def face_depth_targets(dataset: PreparedDataset, indices: np.ndarray, size: int,
                       config: FaceDepthConfig = FaceDepthConfig()) -> FaceDepthTargets:
    """Rasterise the face surface of frames ``indices`` at ``size`` px and keep the valid pixels.

    Memory: 28 bytes per valid pixel (the face covers about a quarter of a head crop: ~1.8 MB per frame at 512 px).
    """
    indices = np.asarray(indices, np.int64).reshape(-1)
    triangles = face_triangles(dataset.face_model.template)
    camera = dataset.camera.resized(size, size)
    pixels, distance, normals, counts = [], [], [], [0]
    with Progress("face depth", len(indices), "frames") as progress:
        for start in range(0, len(indices), 64):
            for vertices in face_mesh_in_camera(dataset, indices[start:start + 64]):
                depth = rasterize_depth(vertices, triangles, camera, config)
                flat = np.flatnonzero(depth.valid)
                pixels.append(flat)
                distance.append(depth.distance.reshape(-1)[flat])
                normals.append(depth.normals.reshape(-1, 3)[flat])
                counts.append(len(flat))
                progress.update()
    return FaceDepthTargets(camera=camera, offsets=torch.from_numpy(np.cumsum(counts)).long(),
                            pixels=torch.from_numpy(np.concatenate(pixels)).long(),
                            distance=torch.from_numpy(np.concatenate(distance)).float(),
                            normals=torch.from_numpy(np.concatenate(normals)).float())


@dataclass
class FaceDepthRays:
    """Rays through valid face pixels, with where the face model's surface is along them."""

    origins: Tensor
    """(R, 3) head frame, metres (the camera centre)."""
    directions: Tensor
    """(R, 3) unit, head frame."""
    frame_ids: Tensor
    """(R,) int64 position of the ray's frame in the batch's ``frame_rows``."""
    distance: Tensor
    """(R,) distance from the camera centre to the face surface along the ray, metres."""
    normals: Tensor
    """(R, 3) unit surface normals, head frame, out of the face."""


def sample_face_depth(targets: FaceDepthTargets, head_from_camera: Tensor, rows: Tensor, per_frame: int,
                      generator: torch.Generator) -> FaceDepthRays:
    """``per_frame`` rays through valid face pixels of each of a batch's frames, drawn uniformly (with replacement),
    through pixel centres at the targets' resolution. Frames without a valid pixel get none.

    Args:
        targets: built for the same frames, in the same order, as ``head_from_camera`` (the training frames).
        head_from_camera: (F, 4, 4) the frames' poses, e.g. ``RaySampler.head_from_camera``.
        rows: (F_b,) int64 the batch's frame rows (``RayBatch.frame_rows``).
        per_frame: rays per frame.
    """
    if head_from_camera.shape[0] != targets.counts.shape[0]:
        raise ValueError(f"the targets have {targets.counts.shape[0]} frames, the poses {head_from_camera.shape[0]}")
    counts = targets.counts[rows]
    positions = torch.nonzero(counts > 0).squeeze(1)
    draws = torch.rand(len(positions), per_frame, generator=generator)
    chosen = targets.offsets[rows[positions], None] + (draws * counts[positions, None]).long().clamp_max(
        counts[positions, None] - 1)
    chosen = chosen.reshape(-1)
    frame_ids = positions.repeat_interleave(per_frame)
    flat = targets.pixels[chosen]
    width = targets.camera.width
    pixels = torch.stack([flat % width, flat // width], 1).float() + 0.5
    transform = head_from_camera[rows[frame_ids]]
    origins, directions = camera_rays_in_head(pixel_directions(targets.camera, pixels), transform)
    normals = (transform[:, :3, :3] @ targets.normals[chosen].unsqueeze(-1)).squeeze(-1)
    return FaceDepthRays(origins=origins, directions=directions, frame_ids=frame_ids,
                         distance=targets.distance[chosen], normals=normals)
