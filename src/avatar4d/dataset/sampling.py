"""Training images at each resolution of the schedule, and the sampler that draws ray batches from them: a few
frames per batch (so expression grids are mixed once per frame), more rays on the face and mouth."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from avatar4d.dataset.background import BackgroundAccumulator
from avatar4d.dataset.layout import PreparedDataset
from avatar4d.dataset.masks import eyes_region_mask, mouth_region_mask, neck_cut_mask
from avatar4d.dataset.rays import LandmarkRays, PatchRays, RayBatch
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.geometry.rays import block_centres, camera_rays_in_head, pixel_centers, pixel_directions
from avatar4d.geometry.rigid import invert_rigid, transform_points
from avatar4d.progress import Progress
from avatar4d.tracking import landmarks as lm


@dataclass(frozen=True)
class ImportanceConfig:
    """Relative sampling weight of pixels (1 elsewhere)."""

    face: float = 2.0
    mouth: float = 6.0
    eyes: float = 3.0
    below_chin_m: float = 0.045
    """Where the head mask is cut across the neck."""


@dataclass
class FrameImages:
    """The training frames at one resolution (row-major pixels)."""

    camera: PinholeCamera
    rgb: Tensor
    """(F, H * W, 3) uint8."""
    opacity: Tensor
    """(F, H * W) uint8 head mask x 255."""
    importance: Tensor
    """(F, H * W) float32 sampling weights."""
    background: Tensor
    """(H * W, 3) float32 scene plate (background and torso) in [0, 1]."""
    directions: Tensor
    """(H * W, 3) unit ray directions in the camera frame."""

    @property
    def size(self) -> int:
        return self.camera.width


def head_mask(dataset: PreparedDataset, index: int, person: np.ndarray, below_chin_m: float) -> np.ndarray:
    """(H, W) uint8 person probability above the neck cut (what the head field must cover)."""
    chin = dataset.face_model.template[lm.CHIN]
    above = neck_cut_mask(dataset.camera.matrix, dataset.tracking.camera_from_head[index], chin, *person.shape,
                          below_chin_m=below_chin_m)
    return np.where(above, person, 0).astype(np.uint8)


def load_frame_images(dataset: PreparedDataset, indices: np.ndarray, sizes: list[int],
                      importance: ImportanceConfig, *, plate_samples: int = 60) -> dict[int, FrameImages]:
    """Load frames, masks and importance weights once, at every size of the schedule.

    Also builds the scene plate: per pixel, the median over a sample of these frames where the pixel is not head
    (background or torso), so the torso is part of the static backdrop.
    """
    full = dataset.size
    plate_at = set(np.linspace(0, len(indices) - 1, min(plate_samples, len(indices))).round().astype(int).tolist())
    plate = BackgroundAccumulator(full, full, len(plate_at), person_threshold=0.5, margin_px=max(1, full // 128))
    rgb = {s: np.zeros((len(indices), s * s, 3), np.uint8) for s in sizes}
    opacity = {s: np.zeros((len(indices), s * s), np.uint8) for s in sizes}
    weights = {s: np.zeros((len(indices), s * s), np.float32) for s in sizes}

    def load(position: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        index = int(indices[position])
        image = dataset.load_frame(index)
        head = head_mask(dataset, index, dataset.load_person_mask(index), importance.below_chin_m)
        landmarks = dataset.tracking.landmarks[index]
        weight = (1.0 + importance.face * (dataset.load_face_mask(index) > 127)
                  + importance.mouth * (mouth_region_mask(landmarks, full, full) > 0)
                  + importance.eyes * (eyes_region_mask(landmarks, full, full) > 0)).astype(np.float32)
        return position, image, head, weight

    with ThreadPoolExecutor(2) as pool, Progress("load frames", len(indices), "frames") as progress:
        for position, image, head, weight in pool.map(load, range(len(indices))):
            if position in plate_at:
                plate.add(image, head)
            for s in sizes:
                rgb[s][position] = _resize(image, s).reshape(-1, 3)
                opacity[s][position] = _resize(head, s).reshape(-1)
                weights[s][position] = _resize(weight, s).reshape(-1)
            progress.update()
    scene, _ = plate.finish()
    out = {}
    for s in sizes:
        camera = dataset.camera.resized(s, s)
        out[s] = FrameImages(camera=camera, rgb=torch.from_numpy(rgb[s]), opacity=torch.from_numpy(opacity[s]),
                             importance=torch.from_numpy(weights[s]),
                             background=torch.from_numpy(_resize(scene, s).reshape(-1, 3).astype(np.float32) / 255.0),
                             directions=pixel_directions(camera, pixel_centers(s, s)))
    return out


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class LandmarkTargets:
    """Where the face model puts each tracked landmark: its image position and its distance from the camera."""

    pixels: Tensor
    """(F, L', 2) image positions as fractions of the width and height (any resolution)."""
    distance: Tensor
    """(F, L') distance from the camera centre, metres."""


def landmark_targets(dataset: PreparedDataset, indices: np.ndarray) -> LandmarkTargets:
    """The face model's landmarks (template + expression code, posed) of each frame, inside the face outline (the
    outline itself is a silhouette, where a ray grazes the face and its depth is ill-defined)."""

    keep = np.setdiff1d(np.arange(lm.NUM_LANDMARKS), np.asarray(lm.FACE_OVAL))
    model = dataset.face_model
    points = model.landmarks(dataset.tracking.expression[indices].astype(np.float64))[:, keep]
    camera = dataset.camera
    pixels, distance = [], []
    for frame_points, pose in zip(points, dataset.tracking.camera_from_head[indices]):
        in_camera = transform_points(pose, frame_points)
        projected = camera.project(in_camera) / np.array([camera.width, camera.height])
        pixels.append(projected)
        distance.append(np.linalg.norm(in_camera, axis=1))
    return LandmarkTargets(pixels=torch.from_numpy(np.stack(pixels)).float(),
                           distance=torch.from_numpy(np.stack(distance)).float())


class RaySampler:
    """Draws training ray batches: ``frames_per_batch`` random frames, ``rays_per_frame`` pixels each, drawn in
    proportion to the importance weights.

    Args:
        camera_from_head: (F, 4, 4) the training frames' poses.
    """

    def __init__(self, camera_from_head: Tensor, frames_per_batch: int, rays_per_frame: int) -> None:
        self.head_from_camera = invert_rigid(camera_from_head.float())
        self.frames_per_batch = min(frames_per_batch, camera_from_head.shape[0])
        self.rays_per_frame = rays_per_frame

    def sample(self, images: FrameImages, generator: torch.Generator) -> RayBatch:
        count = self.head_from_camera.shape[0]
        rows = torch.randperm(count, generator=generator)[: self.frames_per_batch]
        pixels = torch.multinomial(images.importance[rows], self.rays_per_frame, replacement=True,
                                   generator=generator)  # (F, R_f)
        frame_ids = torch.arange(len(rows)).repeat_interleave(self.rays_per_frame)
        flat = pixels.reshape(-1)
        transform = self.head_from_camera[rows][frame_ids]  # (R, 4, 4)
        origins, directions = camera_rays_in_head(images.directions[flat], transform)
        rgb = images.rgb[rows[:, None], pixels].reshape(-1, 3).float() / 255.0
        opacity = images.opacity[rows[:, None], pixels].reshape(-1).float() / 255.0
        return RayBatch(origins=origins, directions=directions, frame_ids=frame_ids, frame_rows=rows,
                        rgb=rgb, opacity=opacity, background=images.background[flat])

    def sample_landmarks(self, targets: LandmarkTargets, camera: PinholeCamera, rows: Tensor, per_frame: int,
                         generator: torch.Generator) -> LandmarkRays:
        """``per_frame`` rays through random landmarks of each of the batch's frames (exact positions, not pixel
        centres)."""
        count = targets.distance.shape[1]
        chosen = torch.randint(count, (len(rows), per_frame), generator=generator)
        frame_ids = torch.arange(len(rows)).repeat_interleave(per_frame)
        fractions = targets.pixels[rows[:, None], chosen].reshape(-1, 2)
        pixels = fractions * torch.tensor([camera.width, camera.height], dtype=fractions.dtype)
        transform = self.head_from_camera[rows][frame_ids]
        origins, directions = camera_rays_in_head(pixel_directions(camera, pixels), transform)
        return LandmarkRays(origins=origins, directions=directions, frame_ids=frame_ids,
                            distance=targets.distance[rows[:, None], chosen].reshape(-1))

    def sample_patch(self, images: FrameImages, rows: Tensor, blocks: int, factor: int,
                     generator: torch.Generator) -> PatchRays:
        """A ``blocks * factor`` square of the batch's first frame, centred (where the image allows) on a pixel
        drawn by importance, with a ray through the centre of each ``factor x factor`` block.

        Args:
            images: the training frames at full resolution.
            rows: (F,) the batch's frame rows (the patch belongs to ``rows[0]``, batch position 0).
        """
        size = images.size
        blocks = min(blocks, size // factor)
        side = blocks * factor
        row = int(rows[0])
        centre = int(torch.multinomial(images.importance[row], 1, replacement=True, generator=generator))
        top = min(max(centre // size - side // 2, 0), size - side)
        left = min(max(centre % size - side // 2, 0), size - side)
        pixels = block_centres(top, left, blocks, blocks, factor)
        origins, directions = camera_rays_in_head(pixel_directions(images.camera, pixels), self.head_from_camera[row])
        window = (slice(top, top + side), slice(left, left + side))

        def crop(values: Tensor, channels: int) -> Tensor:
            return values.reshape(size, size, channels)[window].permute(2, 0, 1)[None].float()

        return PatchRays(origins=origins, directions=directions,
                         frame_ids=torch.zeros(blocks * blocks, dtype=torch.long),
                         rgb=crop(images.rgb[row], 3) / 255.0, opacity=crop(images.opacity[row], 1) / 255.0,
                         background=crop(images.background, 3))
