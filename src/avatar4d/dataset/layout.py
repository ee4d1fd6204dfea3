"""The names and formats inside a prepared dataset folder, and the one loader that checks them.

```
DATASET/
  manifest.json              source video, parameters, versions, dropped and flagged frames, split, quality, coverage
  frames/000000.jpg ...      square head crops, RGB
  masks/person/000000.png    person probability, 8-bit
  masks/face/000000.png      face region (inside the face outline), 0/255
  background.png             background plate (RGB)
  background_holes.png       255 where the plate was inpainted (never uncovered)
  tracking.safetensors       per-frame landmarks, poses, expression codes, controls, errors
  face_model.safetensors     template, expression basis, control map
  overlay.mp4                tracking drawn on the frames, to check by eye
  tracking.png               head angles, expression codes and errors over time
```

``docs/dataset.md`` describes every field. Arrays are safetensors (no pickle); the manifest is plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file
from safetensors.numpy import save as serialize

from avatar4d.atomic import write_bytes_atomic
from avatar4d.configs import read_versioned_json
from avatar4d.errors import DatasetError
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.tracking.face_model import FaceModel

DATASET_FORMAT = "avatar4d.dataset"
DATASET_VERSION = 1


@dataclass(frozen=True)
class DatasetLayout:
    """Paths inside a dataset folder."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"

    @property
    def person_masks_dir(self) -> Path:
        return self.root / "masks" / "person"

    @property
    def face_masks_dir(self) -> Path:
        return self.root / "masks" / "face"

    @property
    def background(self) -> Path:
        return self.root / "background.png"

    @property
    def background_holes(self) -> Path:
        return self.root / "background_holes.png"

    @property
    def tracking(self) -> Path:
        return self.root / "tracking.safetensors"

    @property
    def face_model(self) -> Path:
        return self.root / "face_model.safetensors"

    @property
    def overlay(self) -> Path:
        return self.root / "overlay.mp4"

    @property
    def plot(self) -> Path:
        return self.root / "tracking.png"

    def frame(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.jpg"

    def person_mask(self, index: int) -> Path:
        return self.person_masks_dir / f"{index:06d}.png"

    def face_mask(self, index: int) -> Path:
        return self.face_masks_dir / f"{index:06d}.png"

    def make_dirs(self) -> None:
        for folder in (self.frames_dir, self.person_masks_dir, self.face_masks_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def required_files(self) -> list[Path]:
        return [self.manifest, self.background, self.background_holes, self.tracking, self.face_model]


@dataclass(frozen=True)
class Tracking:
    """Per-frame tracking of the kept frames (F of them, in video order)."""

    source_frames: np.ndarray
    """(F,) int64 index of each kept frame in the decoded video."""
    times_s: np.ndarray
    """(F,) float64 presentation time."""
    landmarks: np.ndarray
    """(F, L, 3) float32 tracked landmarks in crop pixels (x, y, MediaPipe depth scaled like x)."""
    camera_from_head: np.ndarray
    """(F, 4, 4) float64 smoothed rigid head pose (head frame -> OpenCV camera frame, metres)."""
    raw_camera_from_head: np.ndarray
    """(F, 4, 4) float64 per-frame PnP pose before smoothing."""
    expression: np.ndarray
    """(F, K) float32 expression codes (unit variance per component)."""
    controls: np.ndarray
    """(F, C) float32 normalised semantic controls (see the face model's control map)."""
    reprojection_error_px: np.ndarray
    """(F,) float32 mean distance of the stable landmarks to the posed template, crop pixels."""
    flagged: np.ndarray
    """(F,) bool: tracking jumped (pose or landmarks inconsistent with the neighbours)."""

    @property
    def num_frames(self) -> int:
        return len(self.source_frames)

    def save(self, path: Path) -> None:
        tensors = {name: np.ascontiguousarray(getattr(self, name)) for name in self.__dataclass_fields__}
        tensors["flagged"] = self.flagged.astype(np.uint8)
        # serialised in memory and written by Python, so a full disk raises OSError (-> OutputError)
        write_bytes_atomic(path, serialize(tensors, metadata={"format": "avatar4d.tracking", "version": "1"}))

    @classmethod
    def load(cls, path: Path) -> Tracking:
        try:
            t = load_file(str(path))
            t["flagged"] = t["flagged"].astype(bool)
            return cls(**{name: t[name] for name in cls.__dataclass_fields__})
        except KeyError as error:
            raise DatasetError(f"{path}: tracking lacks {error}; the dataset is from another version") from error
        except (OSError, ValueError, SafetensorError) as error:
            raise DatasetError(f"{path}: cannot read the tracking ({error})") from error


@dataclass(frozen=True)
class PreparedDataset:
    """Everything later stages read from a dataset folder (images load lazily)."""

    layout: DatasetLayout
    manifest: dict
    camera: PinholeCamera
    """Intrinsics of the stored frames."""
    tracking: Tracking
    face_model: FaceModel
    train_indices: np.ndarray
    """(N_train,) dataset frame indices used for training."""
    heldout_indices: np.ndarray
    """(N_heldout,) the contiguous block at the end, never trained on."""

    @property
    def size(self) -> int:
        return self.camera.width

    def load_frame(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return _read_image(self.layout.frame(index), color=True)

    def load_person_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8 person probability x 255."""
        return _read_image(self.layout.person_mask(index), color=False)

    def load_face_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8, 255 inside the face outline."""
        return _read_image(self.layout.face_mask(index), color=False)

    def load_background(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB plate."""
        return _read_image(self.layout.background, color=True)


def _read_image(path: Path, *, color: bool) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"{path} is missing or not an image; the dataset is incomplete, run prepare again")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color else image


def load_dataset(root: Path) -> PreparedDataset:
    """Open a prepared dataset, checking that it is complete and of this version.

    Raises:
        DatasetError: naming what is missing, damaged, or from another version.
    """
    layout = DatasetLayout(Path(root))
    if not layout.root.is_dir():
        raise DatasetError(f"{layout.root} is not a dataset folder (run `avatar4d prepare VIDEO --out {layout.root}`)")
    missing = [p.name for p in layout.required_files() if not p.exists()]
    if missing:
        raise DatasetError(f"{layout.root} is incomplete: missing {', '.join(missing)}; run prepare again")
    manifest = read_versioned_json(layout.manifest, kind="dataset", format=DATASET_FORMAT, version=DATASET_VERSION,
                                   error=DatasetError, remedy="run prepare again")
    tracking = Tracking.load(layout.tracking)
    face_model = FaceModel.load(layout.face_model)
    camera = PinholeCamera(**{k: manifest["camera"][k] for k in ("fx", "fy", "cx", "cy", "width", "height")})
    count = tracking.num_frames
    missing_frames = [i for i in (0, count // 2, count - 1) if not layout.frame(i).exists()]
    if missing_frames or (count and layout.frame(count).exists()):
        raise DatasetError(f"{layout.frames_dir} does not hold the {count} frames the tracking lists")
    split = manifest["split"]
    return PreparedDataset(layout=layout, manifest=manifest, camera=camera, tracking=tracking,
                           face_model=face_model, train_indices=np.arange(*split["train"]),
                           heldout_indices=np.arange(*split["heldout"]))
