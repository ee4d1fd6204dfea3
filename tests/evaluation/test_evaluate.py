"""``evaluate`` on a short-trained avatar: metrics.json with per-frame and mean scores (whole image and face), the
do-nothing baselines, and one ground truth | render | error strip per held-out frame."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from avatar4d.avatar import load_avatar
from avatar4d.dataset.layout import load_dataset
from avatar4d.errors import AvatarError
from avatar4d.evaluation.evaluate import evaluate
from avatar4d.evaluation.holdout import heldout_frames
from avatar4d.evaluation.metrics import block_pattern, l1, psnr, ssim

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

KEYS = {"psnr", "ssim", "l1", "face_psnr", "face_ssim", "face_l1"}
PATTERN_KEYS = {"block_pattern", "frame_block_pattern"}


@pytest.fixture(scope="module")
def evaluated(short_trained_avatar, prepared_dataset):
    metrics = evaluate(short_trained_avatar, prepared_dataset, size=64, lpips=False)
    return short_trained_avatar, metrics


def test_evaluate_writes_metrics_json_with_per_frame_and_mean_scores(evaluated, prepared_dataset):
    root, returned = evaluated
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    dataset = load_dataset(prepared_dataset)
    held = [int(i) for i in dataset.heldout_indices]
    assert metrics["frames"] == held and metrics["resolution"] == 64
    assert [row["frame"] for row in metrics["per_frame"]] == held
    for row in metrics["per_frame"]:
        assert set(row) == KEYS | PATTERN_KEYS | {"frame"}
        assert all(np.isfinite(row[key]) for key in KEYS | PATTERN_KEYS)
    assert set(metrics["mean"]) == KEYS | PATTERN_KEYS
    for key in KEYS | PATTERN_KEYS:
        assert metrics["mean"][key] == pytest.approx(np.mean([row[key] for row in metrics["per_frame"]]))
    assert metrics["lpips"] == "not computed: not requested"
    assert metrics["latent_code"] == "mean of the training frames'"
    assert metrics["render_seconds_per_frame"] > 0


def test_evaluate_reports_baselines_that_the_avatar_beats(evaluated):
    _, metrics = evaluated
    baselines = metrics["baselines"]
    assert set(baselines) == {"background_plate", "scene_plate"}
    for baseline in baselines.values():
        assert set(baseline) == KEYS | {"what"}
        assert metrics["mean"]["psnr"] > baseline["psnr"] + 3.0
        assert metrics["mean"]["l1"] < baseline["l1"]
        assert metrics["mean"]["ssim"] > baseline["ssim"]


def test_per_frame_scores_are_the_metrics_of_the_avatars_render(evaluated, prepared_dataset):
    root, metrics = evaluated
    avatar = load_avatar(root)
    frame = heldout_frames(load_dataset(prepared_dataset), 64)[0]
    render = avatar.render(frame.camera_from_head, frame.code, size=64).rgb.reshape(64, 64, 3).clamp(0, 1)
    row = metrics["per_frame"][0]
    assert row["psnr"] == pytest.approx(psnr(render, frame.rgb), abs=1e-6)
    assert row["face_psnr"] == pytest.approx(psnr(render, frame.rgb, frame.face), abs=1e-6)
    assert row["ssim"] == pytest.approx(ssim(render, frame.rgb), abs=1e-6)
    assert row["face_l1"] == pytest.approx(l1(render, frame.rgb, frame.face), abs=1e-6)
    assert row["block_pattern"] == pytest.approx(block_pattern(render), abs=1e-6)
    assert row["frame_block_pattern"] == pytest.approx(block_pattern(frame.rgb), abs=1e-9)


def test_evaluate_writes_one_strip_per_held_out_frame(evaluated):
    root, metrics = evaluated
    strips = sorted((root / "evaluation").glob("*.png"))
    assert [p.name for p in strips] == [f"heldout_{i:06d}.png" for i in metrics["frames"]]
    for path in strips:
        image = cv2.imread(str(path))
        assert image.shape == (64, 3 * 64, 3)
    # the left third is the ground truth
    frame = heldout_frames(load_dataset(metrics["dataset"]), 64)[-1]
    left = cv2.cvtColor(cv2.imread(str(strips[-1])), cv2.COLOR_BGR2RGB)[:, :64]
    truth = (frame.rgb.numpy() * 255).round().astype(np.uint8)
    assert np.abs(left[20:].astype(int) - truth[20:]).max() <= 1  # below the label


def test_evaluate_defaults_to_the_datasets_resolution_through_the_upsampler(tmp_path, short_trained_avatar,
                                                                             prepared_dataset):
    import shutil

    copy = tmp_path / "avatar"
    shutil.copytree(short_trained_avatar, copy)
    metrics = evaluate(copy, prepared_dataset, lpips=False, train_frames=3)
    size = load_dataset(prepared_dataset).size
    assert metrics["resolution"] == size and "upsampler" in metrics["path"]
    assert cv2.imread(str(next((copy / "evaluation").glob("*.png")))).shape == (size, 3 * size, 3)
    seen = metrics["training_frames"]
    assert len(seen["frames"]) == 3 and not set(seen["frames"]) & set(metrics["frames"])
    assert seen["psnr_gap_db"] == pytest.approx(seen["psnr"] - metrics["mean"]["psnr"])


def test_evaluate_at_another_size_one_ray_per_pixel(tmp_path, short_trained_avatar, prepared_dataset):
    import shutil

    copy = tmp_path / "avatar"
    shutil.copytree(short_trained_avatar, copy)
    metrics = evaluate(copy, prepared_dataset, size=48, lpips=False, direct=True, train_frames=0)
    assert metrics["resolution"] == 48 and metrics["path"] == "one ray per pixel"
    assert "training_frames" not in metrics
    assert cv2.imread(str(next((copy / "evaluation").glob("*.png")))).shape == (48, 144, 3)
    avatar = load_avatar(copy)
    frame = heldout_frames(load_dataset(prepared_dataset), 48)[0]
    direct = avatar.render(frame.camera_from_head, frame.code, size=48, direct=True).rgb.reshape(48, 48, 3)
    assert metrics["per_frame"][0]["psnr"] == pytest.approx(psnr(direct.clamp(0, 1), frame.rgb), abs=1e-6)


def test_evaluate_without_its_dataset_is_refused(tmp_path, short_trained_avatar):
    with pytest.raises(AvatarError, match="is not at"):
        evaluate(short_trained_avatar, tmp_path / "missing", lpips=False)
