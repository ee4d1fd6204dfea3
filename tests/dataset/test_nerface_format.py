"""Export to NeRFace's layout: read back, and consumed the way NeRFace's own code consumes it.

``load_like_nerface`` and ``nerface_ray_bundle`` restate, for this test only, what NeRFace's loader
(``nerf/load_flame.py: load_flame_data``) and ray generator (``nerf/nerf_helpers.py: get_ray_bundle``) do with a
dataset folder (gafniguy/4D-Facial-Avatars, commit e038d089); the trainer's bbox sampling map, background loading and
the evaluator's index-map look-up are restated where they are checked.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avatar4d.dataset.layout import load_dataset
from avatar4d.dataset.nerface_format import (
    BBOX_SCALE,
    NERFACE_EXPRESSION_SIZE,
    SPLITS,
    export_nerface,
    read_nerface,
)
from avatar4d.errors import DatasetError
from avatar4d.geometry.rigid import transform_points
from avatar4d.tracking.landmarks import STABLE_LANDMARKS

NEAR, FAR = 0.2, 0.8
"""The sampling bounds of every NeRFace config (dataset.near, dataset.far)."""


@dataclass(frozen=True)
class NerfaceLoaded:
    """What ``load_flame_data(basedir, half_res=False)`` returns, as numpy."""

    images: np.ndarray
    """(N, H, W, C) float32 in [0, 1]."""
    poses: np.ndarray
    """(N, 4, 4) float32 transform_matrix."""
    expressions: np.ndarray
    """(N, E) float32."""
    bboxes: np.ndarray
    """(N, 4) int pixel rows/columns [top, bottom, left, right]."""
    intrinsics: np.ndarray
    """[fx, fy, cx, cy] of the last split file read (test)."""
    focal: float
    """From camera_angle_x."""
    splits: dict[str, np.ndarray]
    file_paths: list[str]


def load_like_nerface(basedir: Path) -> NerfaceLoaded:
    """NeRFace's loader, the parts that read the folder: transforms_{train,val,test}.json in that order, each frame's
    ``file_path + ".png"`` read as an image / 255, poses and expressions stacked as float32, a missing bbox taken as
    the whole image, bboxes scaled by H (rows) and W (columns) and floored; ``camera_angle_x`` and ``intrinsics`` kept
    from the last file read."""
    images, poses, expressions, bboxes, file_paths, counts = [], [], [], [], [], [0]
    for split in SPLITS:
        meta = json.loads((basedir / f"transforms_{split}.json").read_text())
        for frame in meta["frames"]:
            file_paths.append(frame["file_path"])
            images.append(np.asarray(Image.open(basedir / (frame["file_path"] + ".png"))))
            poses.append(np.array(frame["transform_matrix"]))
            expressions.append(np.array(frame["expression"]))
            bboxes.append(np.array(frame["bbox"]) if "bbox" in frame else np.array([0.0, 1.0, 0.0, 1.0]))
        counts.append(len(images))
    images = (np.array(images) / 255.0).astype(np.float32)
    height, width = images[0].shape[:2]
    focal = 0.5 * width / np.tan(0.5 * float(meta["camera_angle_x"]))
    assert meta["intrinsics"], "without intrinsics their loader falls back to [focal, focal, 0.5, 0.5]"
    boxes = np.array(bboxes).astype(np.float32)
    boxes[:, 0:2] *= height
    boxes[:, 2:4] *= width
    return NerfaceLoaded(images=images, poses=np.array(poses).astype(np.float32),
                         expressions=np.array(expressions).astype(np.float32),
                         bboxes=np.floor(boxes).astype(int), intrinsics=np.array(meta["intrinsics"]), focal=focal,
                         splits={s: np.arange(counts[k], counts[k + 1]) for k, s in enumerate(SPLITS)},
                         file_paths=file_paths)


def nerface_ray_bundle(height: int, width: int, intrinsics: np.ndarray, cam2world: np.ndarray) -> tuple[torch.Tensor,
                                                                                                         torch.Tensor]:
    """NeRFace's get_ray_bundle: pixel (row j, column i) -> direction ((i - W cx) / fx, -(j - H cy) / fy, -1)
    (x right, y up, looking down -z), rotated by the pose; origin at the pose's translation.

    Returns:
        (H, W, 3) origins and (H, W, 3) directions (not normalised: their z component in the camera is -1).
    """
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    pose = torch.as_tensor(cam2world, dtype=torch.float64)
    jj, ii = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    directions = torch.stack([(ii - width * cx) / fx, -(jj - height * cy) / fy, -torch.ones_like(ii)], dim=-1)
    ray_directions = torch.sum(directions[..., None, :] * pose[:3, :3], dim=-1)
    return pose[:3, -1].expand(ray_directions.shape), ray_directions


def head_pixel_by_their_rays(loaded: NerfaceLoaded, row: int, point: np.ndarray) -> np.ndarray:
    """Where a head-frame point (NeRFace units) appears under NeRFace's camera of one frame: the continuous pixel
    index (i, j) whose ray, built like get_ray_bundle's, passes through it."""
    fx, fy, cx, cy = loaded.intrinsics
    height, width = loaded.images.shape[1:3]
    pose = loaded.poses[row].astype(np.float64)
    direction = pose[:3, :3].T @ (point - pose[:3, 3])  # get_ray_bundle's camera-frame direction, up to scale
    direction = direction / -direction[2]  # its z is -1
    return np.array([width * cx + fx * direction[0], height * cy - fy * direction[1]])


@pytest.fixture(scope="module")
def exported(prepared_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nerface") / "export"
    export_nerface(prepared_dataset, out)
    return out


@pytest.fixture(scope="module")
def loaded(exported: Path) -> NerfaceLoaded:
    return load_like_nerface(exported)


def test_poses_and_codes_round_trip(prepared_dataset, exported):
    dataset = load_dataset(prepared_dataset)
    data = read_nerface(exported)
    frames = np.concatenate([dataset.train_indices, dataset.heldout_indices, dataset.heldout_indices])
    np.testing.assert_array_equal(data.source_frames, frames)
    np.testing.assert_allclose(data.camera_from_head, dataset.tracking.camera_from_head[frames], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(data.codes, dataset.tracking.expression[frames])
    assert data.expression.shape == (len(frames), NERFACE_EXPRESSION_SIZE)
    assert not data.expression[:, data.num_components:].any()
    assert [len(data.train_indices), len(data.val_indices), len(data.test_indices)] == \
        [len(dataset.train_indices), len(dataset.heldout_indices), len(dataset.heldout_indices)]


def test_intrinsics_are_the_same_in_every_file_and_read_back_in_pixels(prepared_dataset, exported):
    camera = load_dataset(prepared_dataset).camera
    metas = [json.loads((exported / f"transforms_{s}.json").read_text()) for s in SPLITS]
    assert all(m["intrinsics"] == metas[0]["intrinsics"] for m in metas)
    assert all(m["camera_angle_x"] == metas[0]["camera_angle_x"] for m in metas)
    fx, fy, cx, cy = metas[0]["intrinsics"]
    assert fx > 0 and fy > 0 and 0 < cx < 1 and 0 < cy < 1
    assert cx == pytest.approx((camera.cx - 0.5) / camera.width)  # fractions, for rays through pixel centres
    read = read_nerface(exported).camera
    for name in ("fx", "fy", "cx", "cy", "width", "height"):
        assert getattr(read, name) == pytest.approx(getattr(camera, name), abs=1e-9), name


def test_every_frame_is_an_rgb_png_of_the_frame_size_holding_the_dataset_frame(prepared_dataset, exported, loaded):
    dataset = load_dataset(prepared_dataset)
    data = read_nerface(exported)
    for file_path, path, frame in zip(loaded.file_paths, data.file_paths, data.source_frames):
        assert not file_path.endswith(".png") and not Path(file_path).is_absolute()
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (dataset.size, dataset.size))
            np.testing.assert_array_equal(np.asarray(image), dataset.load_frame(int(frame)))
    assert loaded.images.shape == (len(data.file_paths), dataset.size, dataset.size, 3)


def test_background_is_rgb_and_passes_their_trainers_check(exported, loaded):
    path = exported / "bg" / "00050.png"
    with Image.open(path) as background:
        assert background.mode == "RGB"
        height, width = loaded.images.shape[1:3]
        assert background.size[0] >= width and background.size[1] >= height
        background.thumbnail((height, width))  # their trainer, then: assert background.shape == image.shape
        assert np.asarray(background).shape == loaded.images[0].shape


def test_mean_camera_distance_is_half_and_the_head_lies_between_near_and_far(prepared_dataset, exported, loaded):
    dataset = load_dataset(prepared_dataset)
    assert np.linalg.norm(loaded.poses[:, :3, 3], axis=1).mean() == pytest.approx(0.5, abs=0.01)
    scale = read_nerface(exported).translation_scale
    template = dataset.face_model.template * scale
    for pose in loaded.poses.astype(np.float64):
        depth = -transform_points(np.linalg.inv(pose), template)[:, 2]  # along their camera's -z, as z_vals are
        assert NEAR < depth.min() and depth.max() < FAR


def test_transform_matrix_is_camera_to_head_in_opengl_axes_by_their_rays(prepared_dataset, exported, loaded):
    """The head origin, seen through each exported camera with get_ray_bundle's convention, lands where our tracking
    puts it, and near the tracked landmarks whose centroid it is."""
    dataset = load_dataset(prepared_dataset)
    data = read_nerface(exported)
    stable = np.asarray(STABLE_LANDMARKS)
    for row, frame in enumerate(data.source_frames):
        ours = dataset.camera.project(dataset.tracking.camera_from_head[frame][None, :3, 3])[0]  # pixel centres +0.5
        theirs = head_pixel_by_their_rays(loaded, row, np.zeros(3))
        np.testing.assert_allclose(theirs + 0.5, ours, atol=1e-3)
        tracked = dataset.tracking.landmarks[frame, stable, :2].mean(0)
        assert np.linalg.norm(theirs + 0.5 - tracked) < 3.0
    height, width = loaded.images.shape[1:3]
    for row in (0, len(loaded.poses) - 1):  # the whole bundle: the ray nearest the head origin
        origins, directions = nerface_ray_bundle(height, width, loaded.intrinsics, loaded.poses[row])
        unit = directions / directions.norm(dim=-1, keepdim=True)
        to_head = -origins
        distance = (to_head - (to_head * unit).sum(-1, keepdim=True) * unit).norm(dim=-1)
        j, i = np.unravel_index(int(distance.argmin()), distance.shape)
        expected = head_pixel_by_their_rays(loaded, row, np.zeros(3))
        assert abs(i - expected[0]) <= 0.5 + 1e-6 and abs(j - expected[1]) <= 0.5 + 1e-6
        assert float((to_head * unit).sum(-1).flatten()[distance.argmin()]) > 0  # in front of the camera


def test_bbox_is_a_square_on_the_face_that_their_sampling_map_still_covers(prepared_dataset, exported, loaded):
    dataset = load_dataset(prepared_dataset)
    data = read_nerface(exported)
    top, bottom, left, right = data.bbox.T
    assert np.all((0 <= top) & (top < bottom) & (bottom <= 1) & (0 <= left) & (left < right) & (right <= 1))
    landmarks = dataset.tracking.landmarks[data.source_frames, :, :2].astype(np.float64) / dataset.size
    extent = (landmarks.max(1) - landmarks.min(1)).max(1)
    assert np.all(bottom - top <= BBOX_SCALE * extent + 1e-6) and np.all(right - left <= BBOX_SCALE * extent + 1e-6)
    assert np.all((bottom - top) / (right - left) == pytest.approx(1.0, abs=0.25))
    assert np.all((landmarks.min(1) >= np.stack([left, top], 1)) & (landmarks.max(1) <= np.stack([right, bottom], 1)))

    height, width = loaded.images.shape[1:3]
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([rows.T, cols.T], dim=-1).reshape(-1, 2).numpy()  # meshgrid_xy(arange(H), arange(W))
    for row in loaded.splits["train"]:
        b = loaded.bboxes[row]
        probs = np.full((height, width), 0.1)
        probs[b[0]:b[1], b[2]:b[3]] = 0.9  # their map; a sample k lands on pixel coords[k]
        favoured = np.zeros((height, width), bool)
        chosen = coords[probs.reshape(-1) == 0.9]
        favoured[chosen[:, 0], chosen[:, 1]] = True
        face = np.round(dataset.tracking.landmarks[data.source_frames[row], :, :2]).astype(int).clip(0, width - 1)
        assert favoured[face[:, 1], face[:, 0]].mean() > 0.9


def test_index_map_gives_their_evaluation_valid_latent_codes(prepared_dataset, exported, loaded):
    dataset = load_dataset(prepared_dataset)
    idx_map = np.load(exported / "index_map.npy").astype(int)  # as their evaluation loads it
    count = dataset.tracking.num_frames
    assert idx_map.shape == (count, 2)
    np.testing.assert_array_equal(idx_map[:, 0], np.arange(count))
    num_train = len(loaded.splits["train"])  # latent codes: one per row of transforms_train.json
    for frame in dataset.train_indices:
        code = idx_map[frame, 1]
        assert loaded.file_paths[loaded.splits["train"][code]] == f"./train/{frame:06d}"
    assert np.all(idx_map[dataset.heldout_indices, 1] == -1)
    assert 0 <= idx_map[10, 1] < num_train  # their evaluation's fixed latent code
    assert all(0 <= idx_map[i, 1] < num_train for i in range(len(loaded.splits["test"])))


def test_loader_sees_76_expressions_and_the_splits(exported, loaded):
    assert loaded.expressions.shape == (len(loaded.images), NERFACE_EXPRESSION_SIZE)
    assert np.abs(loaded.expressions / 3).max() < 3  # the model's 1/3 scaling keeps them of order 1
    assert len(loaded.splits["train"]) >= 11 and len(loaded.splits["val"]) >= 1
    assert loaded.focal == pytest.approx(loaded.intrinsics[0])


def test_size_resizes_frames_background_and_intrinsics(prepared_dataset, exported, tmp_path):
    dataset = load_dataset(prepared_dataset)
    result = export_nerface(prepared_dataset, tmp_path / "small", size=128)
    assert result.image_size == 128
    loaded = load_like_nerface(tmp_path / "small")
    assert loaded.images.shape[1:] == (128, 128, 3)
    with Image.open(tmp_path / "small" / "bg" / "00050.png") as background:
        assert background.size == (128, 128)
    small, full = read_nerface(tmp_path / "small"), read_nerface(exported)
    expected = dataset.camera.resized(128, 128)
    for name in ("fx", "fy", "cx", "cy", "width", "height"):
        assert getattr(small.camera, name) == pytest.approx(getattr(expected, name), abs=1e-9), name
    np.testing.assert_array_equal(small.camera_from_head, full.camera_from_head)
    for row, frame in enumerate(small.source_frames):
        ours = expected.project(dataset.tracking.camera_from_head[frame][None, :3, 3])[0]
        np.testing.assert_allclose(head_pixel_by_their_rays(loaded, row, np.zeros(3)) + 0.5, ours, atol=1e-3)


@pytest.mark.parametrize("num_heldout", [None, 0], ids=["10-train-frames", "no-heldout-frames"])
def test_too_few_frames_are_refused(prepared_dataset, tmp_path, num_heldout):
    short = tmp_path / "dataset"
    shutil.copytree(prepared_dataset, short)
    manifest = json.loads((short / "manifest.json").read_text())
    count = manifest["frames"]["kept"]
    num_train = 10 if num_heldout is None else count - num_heldout
    manifest["split"] = {"train": [0, num_train], "heldout": [num_train, count]}
    (short / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="NeRFace needs at least 11 training frames"):
        export_nerface(short, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_read_names_a_missing_transforms_file(exported, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(exported, partial)
    (partial / "transforms_test.json").unlink()
    with pytest.raises(DatasetError, match="transforms_test.json is missing"):
        read_nerface(partial)
