"""The avatar folder, and the one front end behind every later stage (evaluate, render, reenact, view, mesh).

```
AVATAR/
  config.json            training configuration, field geometry, cameras, versions (plain JSON)
  model.safetensors      the head field's weights and its occupancy grid
  face_model.safetensors the subject's face model (template, expression basis, controls), copied from the dataset
  frames.safetensors     every dataset frame's pose, expression code and controls, and the split
  scene.png              the static scene plate (background and torso) behind the head
  training_log.json      loss, PSNR, held-out PSNR, learning rate, resolution over the run
  training_curve.png     the same as a plot
  previews/              renders during training (ground truth | render)
```

:func:`load_avatar` opens the folder on a device; :meth:`Avatar.render` is the one render call (pose, expression
code, size, cancellation), and every tensor it makes is on the avatar's device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from scipy.spatial.transform import Rotation

from avatar4d.atomic import atomic_file, write_json_atomic
from avatar4d.configs import ConfigKeyError, from_dict, read_versioned_json, to_dict
from avatar4d.environment import package_versions, pick_device
from avatar4d.errors import AvatarError, DatasetError
from avatar4d.field.head_field import FieldGeometry, HeadField, HeadFieldConfig
from avatar4d.geometry.angles import yaw_pitch_roll_deg
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.images import read_rgb, resize_square, write_png
from avatar4d.progress import note
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import RendererConfig, RenderOutput, render_image
from avatar4d.render.upsampler import Upsampler, UpsamplerConfig, render_upsampled
from avatar4d.tracking.controls import ExpressionEdit, parse_assignments, resolve_expression
from avatar4d.tracking.face_model import FaceModel
from avatar4d.validation import check_image_size

AVATAR_FORMAT = "avatar4d.avatar"
AVATAR_VERSION = 1


@dataclass(frozen=True)
class AvatarFrames:
    """The dataset's frames as the avatar knows them (poses and codes from tracking)."""

    camera_from_head: np.ndarray
    """(F, 4, 4)."""
    codes: np.ndarray
    """(F, K) expression codes."""
    controls: np.ndarray
    """(F, C) normalised semantic controls."""
    source_frames: np.ndarray
    """(F,) index in the source video."""
    train: tuple[int, int]
    """[start, end) of the training frames."""
    heldout: tuple[int, int]
    """[start, end) of the held-out frames."""

    @property
    def train_indices(self) -> np.ndarray:
        return np.arange(*self.train)

    @property
    def heldout_indices(self) -> np.ndarray:
        return np.arange(*self.heldout)

    @property
    def mean_camera_from_head(self) -> np.ndarray:
        """(4, 4) the average training pose (rotation averaged, then re-orthonormalised)."""
        poses = self.camera_from_head[self.train_indices]
        out = np.eye(4)
        out[:3, :3] = Rotation.from_matrix(poses[:, :3, :3]).mean().as_matrix()
        out[:3, 3] = poses[:, :3, 3].mean(0)
        return out

    def head_rotations(self, indices: np.ndarray | None = None) -> np.ndarray:
        """(F, 3) yaw, pitch, roll (degrees) of frames' poses relative to the mean training pose (default: the
        training frames)."""
        indices = self.train_indices if indices is None else indices
        mean = self.mean_camera_from_head
        relative = np.einsum("ji,fjk->fik", mean[:3, :3], self.camera_from_head[indices, :3, :3])
        return yaw_pitch_roll_deg(relative)

    def rotation_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(3,) smallest and (3,) largest yaw, pitch, roll seen in training, relative to the mean pose."""
        angles = self.head_rotations()
        return angles.min(0), angles.max(0)


@dataclass(frozen=True)
class AvatarConfig:
    """What rendering needs of the training configuration (``config.json`` keeps all of it)."""

    field: HeadFieldConfig = dataclasses.field(default_factory=HeadFieldConfig)
    renderer: RendererConfig = dataclasses.field(default_factory=RendererConfig)
    upsampler: UpsamplerConfig = dataclasses.field(default_factory=UpsamplerConfig)


@dataclass
class Avatar:
    """A trained avatar on a device, ready to render."""

    root: Path
    config: AvatarConfig
    geometry: FieldGeometry
    field: HeadField
    occupancy: OccupancyGrid
    upsampler: Upsampler | None
    """The 2D network after volume rendering (None: rays at the output's resolution)."""
    face_model: FaceModel
    camera: PinholeCamera
    """Intrinsics of the dataset's frames (the avatar renders at any size by resizing them)."""
    image_size: int
    """The resolution it was trained at."""
    scene: np.ndarray
    """(S, S, 3) uint8 scene plate at the dataset's resolution."""
    frames: AvatarFrames
    dataset_path: Path | None
    device: torch.device
    _scenes: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def dataset_size(self) -> int:
        """The dataset's resolution (its frames' side in pixels)."""
        return int(self.scene.shape[0])

    @property
    def native_size(self) -> int:
        """The side it renders at by default: the video's own with an upsampler (trained on full-resolution
        patches), else the resolution its rays were trained at."""
        return self.dataset_size if self.upsampler is not None else self.image_size

    def camera_at(self, size: int) -> PinholeCamera:
        return self.camera.resized(size, size)

    def scene_at(self, size: int) -> torch.Tensor:
        """(size, size, 3) float scene plate in [0, 1], on the avatar's device."""
        if size not in self._scenes:
            plate = resize_square(self.scene.astype(np.float32) / 255.0, size)
            self._scenes[size] = torch.from_numpy(plate).to(self.device)
        return self._scenes[size]

    def output_size(self, size: int | None) -> int:
        """A requested output side, checked (None: :attr:`native_size`); says so when it upsamples."""
        check_image_size(size)
        size = size or self.native_size
        if size > self.dataset_size:
            note(f"{size} px is above the video's own {self.dataset_size} px: the picture is upsampled, not sharper")
        return size

    def resolve_expression(self, assignments: dict[str, float] | str | None, *,
                           extrapolate: bool = False) -> ExpressionEdit:
        """Resolve ``"jaw_open=0.8,e0=2"`` (or a dict) against the face model; notes any clamping."""
        if isinstance(assignments, str):
            assignments = parse_assignments(assignments)
        model = self.face_model
        edit = resolve_expression(assignments or {}, model.controls, model.code_min, model.code_max,
                                  extrapolate=extrapolate)
        for message in edit.clamped:
            note(f"{message}; pass --extrapolate to go beyond what training saw")
        return edit

    def render(self, camera_from_head: np.ndarray, code: np.ndarray, *, size: int | None = None,
               latent: torch.Tensor | None = None, background: torch.Tensor | None = None,
               cancelled: Callable[[], bool] | None = None, direct: bool = False) -> RenderOutput:
        """Render the head with a pose and an expression code, over the scene plate.

        Args:
            camera_from_head: (4, 4) head pose (metres, OpenCV camera).
            code: (K,) expression code.
            size: output side in pixels (default: :attr:`native_size`).
            latent: (D,) latent code (default: the mean of the training frames').
            background: (size, size, 3) a different backdrop in [0, 1].
            cancelled: asked between chunks of rays; True stops the render (raises ``RenderCancelled``).
            direct: one ray per output pixel even when the avatar has an upsampler (the slow path, for comparison).

        Returns:
            (size * size, ...) rays, row-major, on the avatar's device.
        """
        size = size or self.native_size
        if latent is None and self.config.field.use_latent_code:
            latent = self.field.mean_latent()
        scene = background if background is not None else self.scene_at(size)
        pose = torch.as_tensor(np.asarray(camera_from_head), dtype=torch.float32, device=self.device)
        code_t = torch.as_tensor(np.asarray(code), dtype=torch.float32, device=self.device)
        if self.upsampler is not None and not direct:
            return render_upsampled(self.field, self.upsampler, self.camera_at(size), pose, code_t, latent,
                                    scene.float(), self.config.renderer, self.occupancy, cancelled=cancelled)
        return render_image(self.field, self.camera_at(size), pose, code_t, latent, scene.float(),
                            self.config.renderer, self.occupancy, cancelled=cancelled)

    def render_image(self, camera_from_head: np.ndarray, code: np.ndarray, size: int | None = None, *,
                     cancelled: Callable[[], bool] | None = None, direct: bool = False) -> torch.Tensor:
        """(size, size, 3) float colour in [0, 1] on the CPU: :meth:`render` as a picture."""
        size = size or self.native_size
        rgb = self.render(camera_from_head, code, size=size, cancelled=cancelled, direct=direct).rgb
        return rgb.reshape(size, size, 3).clamp(0, 1).cpu()


def save_avatar(root: Path, *, config, geometry: FieldGeometry, field: HeadField, occupancy: OccupancyGrid,
                upsampler: Upsampler | None, dataset, scene: np.ndarray, image_size: int) -> None:
    """Write the avatar's files into ``root`` (a folder being built; the caller renames it into place)."""
    modules = {"field": field, "occupancy": occupancy, **({"upsampler": upsampler} if upsampler is not None else {})}
    tensors = {f"{name}.{key}": value.detach().contiguous().cpu()
               for name, module in modules.items() for key, value in module.state_dict().items()}
    with atomic_file(root / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": AVATAR_FORMAT, "version": str(AVATAR_VERSION)})
    dataset.face_model.save(root / "face_model.safetensors")
    tracking = dataset.tracking
    frames = {
        "camera_from_head": torch.from_numpy(tracking.camera_from_head.astype(np.float64)),
        "codes": torch.from_numpy(tracking.expression.astype(np.float32)),
        "controls": torch.from_numpy(tracking.controls.astype(np.float32)),
        "source_frames": torch.from_numpy(tracking.source_frames.astype(np.int64)),
    }
    with atomic_file(root / "frames.safetensors") as tmp:
        save_file(frames, str(tmp))
    write_png(root / "scene.png", scene)
    write_json_atomic(root / "config.json", {
        "format": AVATAR_FORMAT,
        "version": AVATAR_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "train": to_dict(config),
        "geometry": geometry.to_dict(),
        "occupancy_shape": list(occupancy.shape),
        "num_components": field.num_components,
        "num_train_frames": int(field.latents.shape[0]),
        "image_size": image_size,
        "camera": dataset.camera.to_dict(),
        "split": {"train": [int(v) for v in dataset.manifest["split"]["train"]],
                  "heldout": [int(v) for v in dataset.manifest["split"]["heldout"]]},
        "dataset": str(dataset.layout.root.resolve()),
    })


REQUIRED_FILES = ("config.json", "model.safetensors", "face_model.safetensors", "frames.safetensors", "scene.png")


def load_avatar(root: Path, device: str | torch.device = "cpu") -> Avatar:
    """Open a trained avatar folder, checking that it is complete and of this version.

    Args:
        device: where to put the field (``"auto"``: a GPU when there is one).

    Raises:
        AvatarError: naming what is missing, damaged, unknown, or from another version.
    """
    root = Path(root)
    if not root.is_dir():
        hint = " (training may still be running or was interrupted: see its .partial folder)" \
            if root.with_name(root.name + ".partial").exists() else ""
        raise AvatarError(f"{root} is not an avatar folder{hint}")
    missing = [name for name in REQUIRED_FILES if not (root / name).exists()]
    if missing:
        raise AvatarError(f"{root} is incomplete: missing {', '.join(missing)}; train it again")
    meta = read_versioned_json(root / "config.json", kind="avatar", format=AVATAR_FORMAT, version=AVATAR_VERSION,
                               error=AvatarError, remedy="train it again")
    try:
        stored = meta["train"]
        config = from_dict(AvatarConfig, {"field": stored["field"], "renderer": stored["renderer"],
                                          "upsampler": stored.get("upsampler", {"factor": 1})})
        geometry = FieldGeometry.from_dict(meta["geometry"])
    except (ConfigKeyError, KeyError, TypeError) as error:
        raise AvatarError(f"{root / 'config.json'} does not match this version of avatar4d: {error}") from error
    try:
        face_model = FaceModel.load(root / "face_model.safetensors")
    except DatasetError as error:
        raise AvatarError(str(error)) from error
    field = HeadField(config.field, geometry, meta["num_components"], meta["num_train_frames"], face_model.template,
                      component_stddev=face_model.basis.stddev, component_displacements=face_model.basis.scaled)
    occupancy = OccupancyGrid(field.box_min, field.box_max, tuple(meta["occupancy_shape"]))
    upsampler = (Upsampler(config.upsampler, config.field.decoder.feature_channels)
                 if config.upsampler.enabled else None)
    modules = {"field": field, "occupancy": occupancy, **({"upsampler": upsampler} if upsampler is not None else {})}
    try:
        tensors = load_file(str(root / "model.safetensors"))
        for name, module in modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                   strict=True)
        frames_t = load_file(str(root / "frames.safetensors"))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise AvatarError(f"{root}: the weights cannot be loaded ({error}); train it again") from error
    device = pick_device(device)
    field.eval().requires_grad_(False).to(device)
    occupancy.to(device)
    if upsampler is not None:
        upsampler.eval().requires_grad_(False).to(device)
    scene = read_rgb(root / "scene.png")
    if scene is None:
        raise AvatarError(f"{root / 'scene.png'} is not an image")
    frames = AvatarFrames(camera_from_head=frames_t["camera_from_head"].numpy(), codes=frames_t["codes"].numpy(),
                          controls=frames_t["controls"].numpy(), source_frames=frames_t["source_frames"].numpy(),
                          train=tuple(meta["split"]["train"]), heldout=tuple(meta["split"]["heldout"]))
    dataset_path = Path(meta["dataset"]) if meta.get("dataset") else None
    return Avatar(root=root, config=config, geometry=geometry, field=field, occupancy=occupancy, upsampler=upsampler,
                  face_model=face_model, camera=PinholeCamera(**meta["camera"]), image_size=int(meta["image_size"]),
                  scene=scene, frames=frames, dataset_path=dataset_path, device=device)
