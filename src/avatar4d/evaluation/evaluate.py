"""``evaluate``: render every held-out frame (tracked pose and expression, mean latent code) and score it against
the ground truth, over the whole image and over the face region, next to do-nothing baselines."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from avatar4d.atomic import write_json_atomic
from avatar4d.avatar import Avatar, load_avatar
from avatar4d.dataset.layout import load_dataset
from avatar4d.environment import machine_description
from avatar4d.errors import AvatarError
from avatar4d.evaluation.holdout import HeldoutFrame, heldout_frames
from avatar4d.evaluation.lpips import LABEL as LPIPS_LABEL
from avatar4d.evaluation.lpips import load_lpips
from avatar4d.evaluation.metrics import block_pattern, mask_bbox, score
from avatar4d.evaluation.strips import comparison_strip
from avatar4d.images import resize_square, to_float, write_png
from avatar4d.progress import Progress, note


def _lpips_pairs(model, image: torch.Tensor, target: torch.Tensor, face: torch.Tensor) -> dict[str, float]:
    top, bottom, left, right = mask_bbox(face)
    batch = torch.stack([image, target]).permute(0, 3, 1, 2).clamp(0, 1)
    crop = batch[:, :, top:bottom, left:right]
    with torch.no_grad():
        whole = float(model(batch[:1], batch[1:])[0])
        region = float(model(crop[:1], crop[1:])[0]) if min(crop.shape[-2:]) >= 32 else float("nan")
    return {"lpips": whole, "face_lpips": region}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}


def _score_frames(avatar: Avatar, frames: list[HeldoutFrame], size: int, model, plate: torch.Tensor,
                  out_dir: Path, direct: bool) -> tuple[list[dict], list[dict], list[dict], list[float]]:
    """Render and score every held-out frame (and the two backdrops alone), writing a strip per frame."""
    scene = avatar.scene_at(size).cpu()
    rows, plate_rows, scene_rows, times = [], [], [], []
    with Progress("evaluate", len(frames), "frames") as progress:
        for frame in frames:
            started = time.perf_counter()
            render = avatar.render_image(frame.camera_from_head, frame.code, size, direct=direct)
            times.append(time.perf_counter() - started)
            row = score(render, frame.rgb, frame.face)
            row.update(block_pattern=block_pattern(render), frame_block_pattern=block_pattern(frame.rgb))
            if model is not None:
                row.update(_lpips_pairs(model, render, frame.rgb, frame.face))
            rows.append(row)
            plate_rows.append(score(plate, frame.rgb, frame.face))
            scene_rows.append(score(scene, frame.rgb, frame.face))
            label = f"held-out #{frame.index}  PSNR {row['psnr']:.2f} dB (face {row['face_psnr']:.2f})"
            write_png(out_dir / f"heldout_{frame.index:06d}.png", comparison_strip(frame.rgb, render, label))
            progress.set(psnr=row["psnr"], face_psnr=row["face_psnr"])
            progress.update()
    return rows, plate_rows, scene_rows, times


def _training_frames_score(avatar: Avatar, dataset, size: int, count: int, direct: bool) -> dict[str, float]:
    """Mean PSNR and face PSNR of ``count`` training frames spread over the run, rendered as held-out frames are (mean
    latent code): with the held-out scores, how much of the fit is memorised rather than learnt."""
    indices = dataset.train_indices
    chosen = indices[np.linspace(0, len(indices) - 1, min(count, len(indices))).round().astype(int)]
    rows = []
    for frame in heldout_frames(dataset, size, chosen):
        render = avatar.render_image(frame.camera_from_head, frame.code, size, direct=direct)
        rows.append({key: value for key, value in score(render, frame.rgb, frame.face).items()
                     if key in ("psnr", "face_psnr")})
    return {**_mean(rows), "frames": [int(i) for i in chosen]}


def evaluate(avatar_dir: Path, dataset_dir: Path | None = None, *, size: int | None = None,
             lpips: bool = True, direct: bool = False, train_frames: int = 8) -> dict:
    """Score an avatar on its dataset's held-out frames and write ``metrics.json`` and ``evaluation/*.png``.

    Args:
        avatar_dir: a trained avatar.
        dataset_dir: its dataset (default: the one it was trained on, as recorded in the avatar).
        size: evaluation resolution (default: the dataset's own, what a person looks at; smaller for a thumbnail).
        lpips: also compute LPIPS (AlexNet, v0.1) when its weights can be obtained; otherwise the reason is recorded.
        direct: one ray per pixel even where the avatar has an upsampler (the slow path, for comparison).
        train_frames: training frames also scored, for the training-versus-held-out gap (0: none).

    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    avatar = load_avatar(avatar_dir)
    dataset_dir = Path(dataset_dir) if dataset_dir is not None else avatar.dataset_path
    if dataset_dir is None or not dataset_dir.exists():
        raise AvatarError(f"the dataset of {avatar_dir} is not at {dataset_dir}; pass it with --dataset")
    dataset = load_dataset(dataset_dir)
    if dataset.tracking.num_frames != len(avatar.frames.codes):
        raise AvatarError(f"{dataset_dir} is not the dataset {avatar_dir} was trained on "
                          f"({dataset.tracking.num_frames} frames, the avatar knows {len(avatar.frames.codes)})")
    size = size or avatar.dataset_size
    frames = heldout_frames(dataset, size)
    model, reason = load_lpips() if lpips else (None, "not requested")
    if model is None:
        note(f"LPIPS not computed: {reason}")
    out_dir = Path(avatar_dir) / "evaluation"
    out_dir.mkdir(exist_ok=True)
    plate = to_float(resize_square(dataset.load_background(), size))
    rows, plate_rows, scene_rows, times = _score_frames(avatar, frames, size, model, plate, out_dir, direct)
    seen = _training_frames_score(avatar, dataset, size, train_frames, direct) if train_frames > 0 else None
    metrics = {
        "avatar": str(Path(avatar_dir).resolve()),
        "dataset": str(Path(dataset_dir).resolve()),
        "frames": [f.index for f in frames],
        "resolution": size,
        "path": ("one ray per pixel" if direct or avatar.upsampler is None
                 else f"rays at 1/{avatar.config.upsampler.factor} of the side, then the upsampler"),
        "latent_code": "mean of the training frames'" if avatar.config.field.use_latent_code else "none",
        "mean": _mean(rows),
        "per_frame": [{"frame": f.index, **r} for f, r in zip(frames, rows)],
        "baselines": {
            "background_plate": {**_mean(plate_rows), "what": "the dataset's background plate alone"},
            "scene_plate": {**_mean(scene_rows), "what": "the avatar's backdrop (background and torso) alone"},
        },
        "lpips": LPIPS_LABEL if model is not None else f"not computed: {reason}",
        "render_seconds_per_frame": float(np.mean(times)),
        **({"training_frames": {**seen, "psnr_gap_db": seen["psnr"] - _mean(rows)["psnr"],
                                "what": "training frames rendered as the held-out ones (mean latent code)"}}
           if seen is not None else {}),
        "machine": machine_description(),
    }
    write_json_atomic(Path(avatar_dir) / "metrics.json", metrics)
    note(_summary(metrics))
    return metrics


def _summary(metrics: dict) -> str:
    """One line: the held-out scores, the backdrop alone, the training frames' gap."""
    mean, seen = metrics["mean"], metrics.get("training_frames")
    return (f"held-out ({len(metrics['frames'])} frames, {metrics['resolution']} px): PSNR {mean['psnr']:.2f} dB "
            f"(face {mean['face_psnr']:.2f}), SSIM {mean['ssim']:.3f} (face {mean['face_ssim']:.3f})"
            + (f", LPIPS {mean['lpips']:.3f}" if "lpips" in mean else "")
            + f"; background plate alone {metrics['baselines']['background_plate']['psnr']:.2f} dB"
            + (f"; training frames {seen['psnr']:.2f} dB (gap {seen['psnr_gap_db']:.2f} dB)" if seen else ""))
