"""Export a prepared dataset in NeRFace's layout (Gafni et al. 2021, gafniguy/4D-Facial-Avatars), and read one back.

```
OUT/
  transforms_train.json      camera_angle_x, intrinsics [fx, fy, cx, cy], and per frame file_path,
  transforms_val.json          transform_matrix, expression (76 values), bbox [top, bottom, left, right]
  transforms_test.json
  train/000000.png ...       RGB frames, named by their index in the dataset (our train block)
  val/000065.png ...         the held-out block
  test/000065.png ...        the held-out block again (NeRFace evaluates on "test" and validates on "val")
  bg/00050.png               the background plate, RGB, the size of the frames
  index_map.npy              (F, 2) int64: dataset frame, its row in transforms_train.json (latent code) or -1
  avatar4d_export.json       the source dataset, the translation scale and the expression layout (to read it back)
```

The rules are those of NeRFace's own loader (``nerf/load_flame.py``), ray generator (``get_ray_bundle``), trainer and
evaluator; the section "Export to NeRFace's layout" (in ``docs/dataset.md``) gives
every convention and why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from avatar4d.atomic import atomic_directory, disk_errors, write_json_atomic
from avatar4d.dataset.layout import PreparedDataset, load_dataset
from avatar4d.errors import DatasetError, OutputError
from avatar4d.geometry.camera import OPENGL_FROM_OPENCV, PinholeCamera
from avatar4d.geometry.rigid import invert_rigid
from avatar4d.progress import Progress, note
from avatar4d.validation import check_image_size

EXPORT_FORMAT = "avatar4d.nerface_export"
EXPORT_VERSION = 1

SPLITS = ("train", "val", "test")

NERFACE_EXPRESSION_SIZE = 76
"""NeRFace's model hard-codes 76 expression inputs (Face2Face's blendshape count)."""
NERFACE_MEAN_CAMERA_DISTANCE = 0.5
"""Their sampler only looks between near 0.2 and far 0.8: the head goes in the middle."""
NERFACE_MIN_TRAIN_FRAMES = 11
"""Their evaluation takes the latent code of training frame 10 (``idx_map[10, 1]``)."""
NERFACE_MIN_VAL_FRAMES = 1

BBOX_SCALE = 1.3
"""Side of the square importance box as a multiple of the landmarks' larger extent (room for hair and jaw)."""
EXTREME_CODE = 6.0
"""An expression code beyond this many standard deviations is reported (usually a tracking glitch)."""

_OPENGL_FROM_OPENCV_4 = np.diag([*np.diag(OPENGL_FROM_OPENCV), 1.0])
"""(4, 4) diag(1, -1, -1, 1): OpenCV camera axes (y down, z forward) -> OpenGL's (y up, looking down -z)."""


@dataclass(frozen=True)
class NerfaceLayout:
    """Paths inside a NeRFace-layout folder."""

    root: Path

    def transforms(self, split: str) -> Path:
        return self.root / f"transforms_{split}.json"

    def file_path(self, split: str, index: int) -> str:
        """The ``file_path`` entry of a frame: relative to the root, without ``.png``."""
        return f"./{split}/{index:06d}"

    def frame(self, split: str, index: int) -> Path:
        return self.root / split / f"{index:06d}.png"

    @property
    def background(self) -> Path:
        return self.root / "bg" / "00050.png"

    @property
    def index_map(self) -> Path:
        return self.root / "index_map.npy"

    @property
    def record(self) -> Path:
        return self.root / "avatar4d_export.json"


@dataclass(frozen=True)
class NerfaceExport:
    """What :func:`export_nerface` wrote."""

    layout: NerfaceLayout
    """Paths of the written folder."""
    source_dataset: Path
    translation_scale: float
    """NeRFace units per metre: translations were multiplied by this."""
    image_size: int
    """Side of the square PNG frames and of the background, pixels."""
    num_train: int
    num_val: int
    num_test: int
    num_components: int
    """K: expression entries 0..K-1 hold our codes, the other 76 - K are zero."""
    max_abs_code: float
    """Largest |code| written (codes are unit-variance; the model sees them divided by 3)."""


@dataclass(frozen=True)
class NerfaceData:
    """A NeRFace-layout folder read back: the frames of train, val and test, in that order (as their loader stacks
    them)."""

    root: Path
    camera: PinholeCamera
    """Intrinsics in pixels of the stored PNGs, avatar4d's convention (pixel centres at integer + 0.5)."""
    file_paths: tuple[Path, ...]
    """(N,) the PNG of each frame."""
    camera_from_head: np.ndarray
    """(N, 4, 4) float64 head frame -> OpenCV camera frame; metres when ``translation_scale`` is known, the folder's
    own units otherwise."""
    expression: np.ndarray
    """(N, E) float32 as stored (E = 76 for NeRFace)."""
    bbox: np.ndarray
    """(N, 4) float64 [top, bottom, left, right] fractions of the image."""
    train_indices: np.ndarray
    """(N_train,) rows of the train split."""
    val_indices: np.ndarray
    test_indices: np.ndarray
    translation_scale: float | None
    """NeRFace units per metre (avatar4d exports); None for a folder made by other tools."""
    num_components: int | None
    """How many leading expression entries are avatar4d codes (avatar4d exports)."""
    source_frames: np.ndarray | None
    """(N,) int64 the dataset frame each row came from (avatar4d exports)."""

    @property
    def codes(self) -> np.ndarray:
        """(N, K) avatar4d's expression codes (the whole stored vector when the folder is not ours)."""
        return self.expression if self.num_components is None else self.expression[:, :self.num_components]


def _check_exportable(dataset: PreparedDataset, dataset_dir: Path) -> None:
    """Refuse a dataset that NeRFace cannot take (too few frames, not square, too many components)."""
    tracking = dataset.tracking
    train, heldout = dataset.train_indices, dataset.heldout_indices
    if len(train) < NERFACE_MIN_TRAIN_FRAMES or len(heldout) < NERFACE_MIN_VAL_FRAMES:
        raise DatasetError(
            f"{dataset_dir} has {len(train)} training and {len(heldout)} held-out frames; NeRFace needs at least "
            f"{NERFACE_MIN_TRAIN_FRAMES} training frames (its evaluation reads the latent code of training frame 10) "
            f"and {NERFACE_MIN_VAL_FRAMES} validation frame: prepare a longer video")
    if dataset.camera.width != dataset.camera.height:
        raise DatasetError(f"{dataset_dir} has {dataset.camera.width}x{dataset.camera.height} frames; NeRFace needs "
                           "square ones: prepare the video again")
    num_components = tracking.expression.shape[1]
    if num_components > NERFACE_EXPRESSION_SIZE:
        raise DatasetError(f"{dataset_dir} has {num_components} expression components; NeRFace takes at most "
                           f"{NERFACE_EXPRESSION_SIZE}: prepare it with fewer")


def _write_frames(dataset: PreparedDataset, layout: NerfaceLayout, split_frames: dict[str, np.ndarray],
                  image_size: int) -> None:
    """Every frame into each split that holds it, and the background plate, at ``image_size``."""
    members = {split: set(frames.tolist()) for split, frames in split_frames.items()}
    with Progress("export", dataset.tracking.num_frames, "frame") as progress:
        for index in range(dataset.tracking.num_frames):
            image = _resized(dataset.load_frame(index), image_size)
            for split in SPLITS:
                if index in members[split]:
                    _write_rgb(layout.frame(split, index), image)
            progress.update()
    _write_rgb(layout.background, _resized(dataset.load_background(), image_size))


def _export_record(dataset: PreparedDataset, dataset_dir: Path, split_frames: dict[str, np.ndarray], scale: float,
                   image_size: int, max_abs_code: float) -> dict:
    """What the export folder's record says of where it came from and how its values relate to avatar4d's."""
    num_components = dataset.tracking.expression.shape[1]
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "source_dataset": str(dataset_dir.resolve()),
        "source_video": dataset.manifest.get("source", {}).get("path"),
        "source_created": dataset.manifest.get("created"),
        "translation_scale": scale,
        "translation_units": "NeRFace units = metres x translation_scale",
        "image_size": image_size,
        "num_components": num_components,
        "expression": f"entries 0..{num_components - 1} are avatar4d's unit-variance codes unchanged, the other "
                      f"{NERFACE_EXPRESSION_SIZE - num_components} are zero",
        "max_abs_code": max_abs_code,
        "intrinsics": "cx, cy are fractions for NeRFace's rays (pixel index i at x = i - W cx); avatar4d's "
                      "pixel-centre cx in pixels = W cx + 0.5",
        "frames": {split: [int(split_frames[split][0]), int(split_frames[split][-1]) + 1] for split in SPLITS},
    }


def export_nerface(dataset_dir: Path, out_dir: Path, *, size: int | None = None) -> NerfaceExport:
    """Write a prepared dataset in NeRFace's layout (``avatar4d export --format nerface``).

    Train is our train block; val and test are both our held-out block. Every frame is exported, flagged ones too
    (as training uses them).

    Args:
        dataset_dir: a folder made by ``avatar4d prepare``.
        out_dir: the folder to write (replaced atomically if it exists).
        size: side of the exported frames in pixels; the dataset's own size when None.

    Raises:
        DatasetError: the dataset is incomplete, or too short for NeRFace (fewer than 11 train or 1 held-out frames),
            or has more than 76 expression components.
        OutputError: the output cannot be written.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    check_image_size(size)
    if out_dir.resolve() == dataset_dir.resolve():
        raise OutputError(f"the export would replace the dataset itself ({dataset_dir}); choose another --out")
    dataset = load_dataset(dataset_dir)
    _check_exportable(dataset, dataset_dir)
    tracking = dataset.tracking
    train, heldout = dataset.train_indices, dataset.heldout_indices
    num_components = tracking.expression.shape[1]
    image_size = size or dataset.size
    camera = dataset.camera.resized(image_size, image_size)
    scale = translation_scale(tracking.camera_from_head)
    transforms = nerface_from_camera_from_head(tracking.camera_from_head, scale)
    expressions = pad_expression(tracking.expression)
    bboxes = face_bboxes(tracking.landmarks, dataset.size)
    intrinsics = nerface_intrinsics(camera)
    camera_angle_x = 2.0 * math.atan(0.5 * camera.width / camera.fx)
    max_abs_code = float(np.abs(tracking.expression).max(initial=0.0))
    extreme = np.nonzero(np.abs(tracking.expression).max(1) > EXTREME_CODE)[0]
    if len(extreme):
        note(f"{len(extreme)} frames have expression codes beyond {EXTREME_CODE:g} standard deviations (largest "
             f"{max_abs_code:.1f}, frames {extreme[:10].tolist()}); they are exported unchanged")

    split_frames = {"train": train, "val": heldout, "test": heldout}
    with atomic_directory(out_dir) as work, disk_errors(out_dir):
        layout = NerfaceLayout(work)
        for split in SPLITS:
            (work / split).mkdir()
        layout.background.parent.mkdir()
        _write_frames(dataset, layout, split_frames, image_size)
        for split in SPLITS:
            frames = [{"file_path": layout.file_path(split, int(i)),
                       "transform_matrix": transforms[i].tolist(),
                       "expression": [float(str(v)) for v in expressions[i]],  # shortest float32 text, exact
                       "bbox": bboxes[i].tolist()}
                      for i in split_frames[split]]
            write_json_atomic(layout.transforms(split),
                              {"camera_angle_x": camera_angle_x, "intrinsics": intrinsics, "frames": frames})
        np.save(layout.index_map, index_map(tracking.num_frames, train))
        write_json_atomic(layout.record, _export_record(dataset, dataset_dir, split_frames, scale, image_size,
                                                        max_abs_code))
    return NerfaceExport(layout=NerfaceLayout(out_dir), source_dataset=dataset_dir, translation_scale=scale,
                         image_size=image_size, num_train=len(train), num_val=len(heldout), num_test=len(heldout),
                         num_components=num_components, max_abs_code=max_abs_code)


def read_nerface(root: Path) -> NerfaceData:
    """Read a NeRFace-layout folder (an avatar4d export or one of NeRFace's own) back into avatar4d's conventions.

    Raises:
        DatasetError: a transforms file is missing or malformed, or the frames are missing.
    """
    layout = NerfaceLayout(Path(root))
    metas = {split: _read_json(layout.transforms(split)) for split in SPLITS}
    rows: list[dict] = []
    split_rows: dict[str, np.ndarray] = {}
    for split in SPLITS:
        frames = metas[split].get("frames")
        if not isinstance(frames, list):
            raise DatasetError(f"{layout.transforms(split)} has no list of frames")
        split_rows[split] = np.arange(len(rows), len(rows) + len(frames))
        rows.extend(frames)
    if not rows:
        raise DatasetError(f"{layout.root} lists no frames")
    try:
        file_paths = tuple(layout.root / (frame["file_path"] + ".png") for frame in rows)
        transforms = np.array([frame["transform_matrix"] for frame in rows], dtype=np.float64)
        expression = np.array([frame["expression"] for frame in rows], dtype=np.float32)
        bbox = np.array([frame.get("bbox", [0.0, 1.0, 0.0, 1.0]) for frame in rows], dtype=np.float64)
        intrinsics = [float(v) for v in metas["test"]["intrinsics"]]  # their loader keeps the last file's (test)
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{layout.root}: a transforms file lacks or garbles {error}") from error
    if transforms.shape[1:] != (4, 4) or expression.ndim != 2 or len(intrinsics) != 4:
        raise DatasetError(f"{layout.root}: transform matrices must be 4x4, expressions of one length, and intrinsics "
                           f"[fx, fy, cx, cy] (got {transforms.shape[1:]}, {expression.shape}, {intrinsics})")
    try:
        with Image.open(file_paths[0]) as first:
            width, height = first.size
    except OSError as error:
        raise DatasetError(f"{file_paths[0]} is missing or not an image ({error})") from error
    fx, fy, cx, cy = intrinsics
    camera = PinholeCamera(fx, fy, cx * width + 0.5, cy * height + 0.5, width, height)

    record = _read_json(layout.record) if layout.record.exists() else None
    scale = num_components = source_frames = None
    if record is not None:
        if record.get("format") != EXPORT_FORMAT:
            raise DatasetError(f"{layout.record} is not an avatar4d export record (format {record.get('format')!r})")
        scale = float(record["translation_scale"])
        num_components = int(record["num_components"])
        source_frames = np.concatenate([np.arange(*record["frames"][split]) for split in SPLITS]).astype(np.int64)
    camera_from_head = camera_from_head_from_nerface(transforms, 1.0 if scale is None else scale)
    return NerfaceData(root=layout.root, camera=camera, file_paths=file_paths, camera_from_head=camera_from_head,
                       expression=expression, bbox=bbox, train_indices=split_rows["train"],
                       val_indices=split_rows["val"], test_indices=split_rows["test"], translation_scale=scale,
                       num_components=num_components, source_frames=source_frames)


def translation_scale(camera_from_head: np.ndarray) -> float:
    """NeRFace units per metre that put the camera at a mean distance of 0.5 from the head origin.

    Args:
        camera_from_head: (F, 4, 4) poses, metres.
    """
    mean_distance = float(np.linalg.norm(camera_from_head[:, :3, 3], axis=1).mean())
    if not mean_distance > 0.0:
        raise DatasetError("the tracked head poses put the camera at the head origin; the tracking is damaged")
    return NERFACE_MEAN_CAMERA_DISTANCE / mean_distance


def nerface_from_camera_from_head(camera_from_head: np.ndarray, scale: float) -> np.ndarray:
    """NeRFace's ``transform_matrix``: camera-to-world in OpenGL axes, the world being the head frame.

    Args:
        camera_from_head: (F, 4, 4) head frame -> OpenCV camera frame, metres.
        scale: NeRFace units per metre (:func:`translation_scale`).

    Returns:
        (F, 4, 4) ``inv(diag(1, -1, -1, 1) @ camera_from_head)`` with translations times ``scale``.
    """
    scaled = np.array(camera_from_head, dtype=np.float64)
    scaled[:, :3, 3] *= scale
    return invert_rigid(_OPENGL_FROM_OPENCV_4 @ scaled)


def camera_from_head_from_nerface(transforms: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of :func:`nerface_from_camera_from_head`: (F, 4, 4) ``transform_matrix`` -> (F, 4, 4) metres."""
    camera_from_head = _OPENGL_FROM_OPENCV_4 @ invert_rigid(np.asarray(transforms, dtype=np.float64))
    camera_from_head[:, :3, 3] /= scale
    return camera_from_head


def nerface_intrinsics(camera: PinholeCamera) -> list[float]:
    """``[fx, fy, cx, cy]``: focal lengths in pixels, principal point as fractions of width and height.

    NeRFace casts the ray of pixel index ``i`` through ``x = i - W cx`` (no half-pixel offset) while avatar4d puts
    pixel centres at ``i + 0.5``; the fraction written is ``(cx - 0.5) / W`` so that each ray passes through the
    centre of its pixel exactly as our projection says.
    """
    return [camera.fx, camera.fy, (camera.cx - 0.5) / camera.width, (camera.cy - 0.5) / camera.height]


def pad_expression(codes: np.ndarray) -> np.ndarray:
    """(F, K) unit-variance codes -> (F, 76) float32: the codes first, unchanged, then zeros.

    Zero inputs add nothing to the first layer of NeRFace's MLP, so the padding is inert; the codes are not rescaled
    (unit variance is already of order 1, and the model divides them by 3).
    """
    codes = np.asarray(codes, dtype=np.float32)
    out = np.zeros((len(codes), NERFACE_EXPRESSION_SIZE), np.float32)
    out[:, :codes.shape[1]] = codes
    return out


def face_bboxes(landmarks_px: np.ndarray, image_size: int) -> np.ndarray:
    """NeRFace's per-frame ``bbox``: a square around the tracked face, [top, bottom, left, right] as fractions.

    The square is centred on the landmarks' bounding box, its side :data:`BBOX_SCALE` times that box's larger side,
    then clipped to the image. (Their trainer applies the box transposed; a square centred on a face near the middle
    of our crop still covers the face.)

    Args:
        landmarks_px: (F, L, 2+) landmarks in pixels of a square image of side ``image_size``.
    """
    xy = np.asarray(landmarks_px, dtype=np.float64)[..., :2]
    low, high = xy.min(axis=1), xy.max(axis=1)
    centre = 0.5 * (low + high)
    half = 0.5 * BBOX_SCALE * (high - low).max(axis=1, keepdims=True)
    box_low = np.clip(centre - half, 0.0, image_size) / image_size
    box_high = np.clip(centre + half, 0.0, image_size) / image_size
    return np.stack([box_low[:, 1], box_high[:, 1], box_low[:, 0], box_high[:, 0]], axis=1)


def index_map(num_frames: int, train_indices: np.ndarray) -> np.ndarray:
    """NeRFace's ``index_map.npy``: (F, 2) int64, per dataset frame its index and its row in transforms_train.json
    (the index of its latent code), -1 for frames not trained on."""
    out = np.full((num_frames, 2), -1, dtype=np.int64)
    out[:, 0] = np.arange(num_frames)
    out[np.asarray(train_indices), 1] = np.arange(len(train_indices))
    return out


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    interpolation = cv2.INTER_AREA if size < image.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _write_rgb(path: Path, image: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB -> an 8-bit RGB PNG."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OutputError(f"cannot write {path}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DatasetError(f"{path} is missing; {path.parent} is not a complete NeRFace-layout folder") from error
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error})") from error
