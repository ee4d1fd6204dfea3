"""Side views, measured: which videos turn the head most, a held-out split by pose, and how consistent an avatar's
views stay when it is orbited beyond what the video showed.

    python benchmarks/side_views.py survey DATASET [DATASET ...]
        Yaw, pitch and roll of every frame relative to the video's mean pose; the video with the widest yaw range
        is the one to test side views on.
    python benchmarks/side_views.py split DATASET OUT [--fraction 0.1]
        A copy of DATASET (images linked, not copied) whose held-out block is the ``fraction`` of frames with the
        largest |yaw| (the frames are reordered so that the block comes last, which is the layout the trainer and
        ``evaluate`` read). Train an avatar on it to score widest-turn frames it never saw.
    python benchmarks/side_views.py score AVATAR [--dataset D] [--size 128] [--yaws 15 30]
        The avatar's held-out frames scored in the face region (PSNR, SSIM, LPIPS where its weights are available)
        with their |yaw|; then the view-consistency figure: from the mean training pose, the head turned by each
        +-yaw is rendered with its depth (the avatar's own render path: upsampled where it has an upsampler, whose
        depth is then the low-resolution depth enlarged), warped by the frontal render's depth into the frontal
        view, and compared with the frontal render in the face region (the face model's mesh rasterised in the
        frontal view). Pixels the side view cannot see (its own depth is nearer than the warped point by more than
        1 cm) are left out and counted. The rendered depth is also compared with the face model's surface (mm) in
        both views.

Results go to benchmarks/results/<time>-side-views.{json,md} (score) with the machine they ran on; a picture per
yaw (frontal | side | side warped to frontal | 4 x the difference where compared) to benchmarks/work/side-views/.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

from avatar4d.avatar import Avatar, load_avatar
from avatar4d.dataset.face_depth import rasterize_depth
from avatar4d.dataset.layout import DatasetLayout, Tracking, load_dataset
from avatar4d.environment import machine_description
from avatar4d.evaluation.holdout import heldout_frames
from avatar4d.evaluation.lpips import load_lpips
from avatar4d.evaluation.metrics import mask_bbox, psnr, score
from avatar4d.geometry.angles import HeadRotation, rotated_pose, yaw_pitch_roll_deg
from avatar4d.geometry.rigid import invert_rigid, transform_points
from avatar4d.images import write_png
from avatar4d.tracking.triangulation import face_triangles

HERE = Path(__file__).parent
OCCLUSION_M = 0.01


# ----------------------------------------------------------------------------------------------------------- survey


def mean_pose(poses: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    out = np.eye(4)
    out[:3, :3] = Rotation.from_matrix(poses[:, :3, :3]).mean().as_matrix()
    out[:3, 3] = poses[:, :3, 3].mean(0)
    return out


def head_angles(poses: np.ndarray) -> np.ndarray:
    """(F, 3) yaw, pitch, roll (degrees) of each pose relative to the mean pose of all of them."""
    mean = mean_pose(poses)
    return yaw_pitch_roll_deg(np.einsum("ji,fjk->fik", mean[:3, :3], poses[:, :3, :3]))


def survey(datasets: list[Path]) -> list[dict]:
    rows = []
    for root in datasets:
        tracking = Tracking.load(DatasetLayout(root).tracking)
        angles = head_angles(tracking.camera_from_head)
        yaw = angles[:, 0]
        rows.append({"dataset": str(root), "frames": len(yaw), "yaw_min": float(yaw.min()),
                     "yaw_max": float(yaw.max()), "yaw_range": float(np.ptp(yaw)),
                     "abs_yaw_p95": float(np.percentile(np.abs(yaw), 95)),
                     "pitch_range": float(np.ptp(angles[:, 1])), "roll_range": float(np.ptp(angles[:, 2]))})
    rows.sort(key=lambda r: -r["yaw_range"])
    print("| dataset | frames | yaw min..max (deg) | yaw range | p95 |yaw| | pitch range | roll range |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['frames']} | {r['yaw_min']:.1f}..{r['yaw_max']:.1f} | {r['yaw_range']:.1f} | "
              f"{r['abs_yaw_p95']:.1f} | {r['pitch_range']:.1f} | {r['roll_range']:.1f} |")
    print(f"\nwidest head turns: {rows[0]['dataset']} ({rows[0]['yaw_range']:.1f} deg of yaw)")
    return rows


# ------------------------------------------------------------------------------------------------------------ split


def pose_split(dataset_dir: Path, out: Path, fraction: float) -> np.ndarray:
    """Write the pose-split copy (see the module's notes); returns the new order (old frame index per new one)."""
    source = DatasetLayout(dataset_dir)
    tracking = Tracking.load(source.tracking)
    count = tracking.num_frames
    yaw = np.abs(head_angles(tracking.camera_from_head)[:, 0])
    held = max(1, round(fraction * count))
    widest = np.sort(np.argsort(-yaw, kind="stable")[:held])
    order = np.concatenate([np.setdiff1d(np.arange(count), widest), widest])
    target = DatasetLayout(out)
    if out.exists():
        shutil.rmtree(out)
    target.make_dirs()
    for name in ("background", "background_holes", "face_model"):
        getattr(target, name).symlink_to(getattr(source, name).resolve())
    for new, old in enumerate(order):
        target.frame(new).symlink_to(source.frame(int(old)).resolve())
        target.person_mask(new).symlink_to(source.person_mask(int(old)).resolve())
        target.face_mask(new).symlink_to(source.face_mask(int(old)).resolve())
    Tracking(**{name: getattr(tracking, name)[order] for name in Tracking.__dataclass_fields__}).save(target.tracking)
    manifest = json.loads(source.manifest.read_text())
    manifest["split"] = {**manifest["split"], "train": [0, count - held], "heldout": [count - held, count]}
    manifest["pose_split"] = {"source": str(dataset_dir.resolve()), "heldout_fraction": fraction,
                              "heldout_abs_yaw_min_deg": float(yaw[widest].min()),
                              "order": [int(i) for i in order]}
    target.manifest.write_text(json.dumps(manifest, indent=1))
    load_dataset(out)  # checks it
    print(f"{out}: {count - held} training frames, {held} held out with |yaw| >= {yaw[widest].min():.1f} deg "
          f"(largest {yaw.max():.1f} deg)")
    return order


# ------------------------------------------------------------------------------------------------ view consistency


def render_with_depth(avatar: Avatar, pose: np.ndarray, code: np.ndarray, size: int):
    """(S, S, 3) colour, (S, S) distance along each pixel's ray where the ray is at least half opaque (NaN else)."""
    output = avatar.render(pose, code, size=size)
    rgb = output.rgb.reshape(size, size, 3).clamp(0, 1).cpu()
    opacity = output.opacity.reshape(size, size).cpu()
    depth = (output.depth.reshape(size, size).cpu() / opacity.clamp_min(1e-6)).numpy()
    depth[opacity.numpy() < 0.5] = np.nan
    return rgb, depth


def pixel_rays(camera, size: int) -> np.ndarray:
    """(S, S, 3) unit ray directions of the pixel centres, camera frame."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    rays = np.stack([(xs - camera.cx) / camera.fx, (ys - camera.cy) / camera.fy, np.ones_like(xs)], -1)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def warp_to_front(front_pose, front_depth, side_pose, side_rgb, side_depth, camera, size):
    """Sample the side render at where each frontal pixel's rendered point lands in the side view.

    Returns:
        (S, S, 3) warped colour, (S, S) bool: the point has a depth, lands in the side image and is the surface the
        side view sees there (not hidden behind a nearer one).
    """
    points_front = pixel_rays(camera, size) * front_depth[..., None]
    head = transform_points(invert_rigid(front_pose), points_front.reshape(-1, 3))
    points_side = transform_points(side_pose, head)
    xy = camera.project(points_side).reshape(size, size, 2).astype(np.float32)
    warped = cv2.remap(side_rgb.numpy(), xy[..., 0] - 0.5, xy[..., 1] - 0.5, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    seen_depth = cv2.remap(np.nan_to_num(side_depth, nan=np.inf).astype(np.float32), xy[..., 0] - 0.5,
                           xy[..., 1] - 0.5, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.inf)
    distance = np.linalg.norm(points_side, axis=1).reshape(size, size)
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < size) & (xy[..., 1] >= 0) & (xy[..., 1] < size)
    visible = np.isfinite(front_depth) & inside & (np.abs(seen_depth - distance) < OCCLUSION_M)
    return torch.from_numpy(warped), visible


def template_depth(avatar: Avatar, pose: np.ndarray, code: np.ndarray, size: int):
    """The face model's surface at ``code`` rasterised in a view (distance and validity)."""
    landmarks = avatar.face_model.landmarks(code[None].astype(np.float64))[0, :468]
    return rasterize_depth(transform_points(pose, landmarks), face_triangles(avatar.face_model.template),
                           avatar.camera_at(size))


def consistency(avatar: Avatar, size: int, yaws: list[float], pictures: Path) -> list[dict]:
    code = np.zeros(avatar.field.num_components, dtype=np.float32)
    front_pose = avatar.frames.mean_camera_from_head
    camera = avatar.camera_at(size)
    front_rgb, front_depth = render_with_depth(avatar, front_pose, code, size)
    front_surface = template_depth(avatar, front_pose, code, size)
    face = front_surface.valid
    rows = []
    for yaw in [y * s for y in yaws for s in (-1, 1)]:
        side_pose = rotated_pose(front_pose, HeadRotation(yaw=yaw))
        side_rgb, side_depth = render_with_depth(avatar, side_pose, code, size)
        warped, visible = warp_to_front(front_pose, front_depth, side_pose, side_rgb, side_depth, camera, size)
        region = face & visible
        side_surface = template_depth(avatar, side_pose, code, size)
        rows.append({"yaw": yaw, "face_pixels": int(face.sum()), "visible_fraction": float(region.sum() / face.sum()),
                     "warp_psnr": psnr(warped, front_rgb, torch.from_numpy(region)) if region.any() else float("nan"),
                     "front_depth_error_mm": _depth_error_mm(front_depth, front_surface),
                     "side_depth_error_mm": _depth_error_mm(side_depth, side_surface)})
        difference = 4 * (warped - front_rgb).abs() * torch.from_numpy(region)[..., None]
        write_png(pictures / f"yaw{yaw:+.0f}.png",
                  (torch.cat([front_rgb, side_rgb, warped, difference.clamp(0, 1)], 1).numpy() * 255).round()
                  .astype(np.uint8))
    return rows


def _depth_error_mm(depth: np.ndarray, surface) -> float:
    """Median |rendered depth - face model surface| over the surface's valid pixels (a missing depth counts as the
    whole box, so a see-through face scores badly)."""
    if not surface.valid.any():
        return float("nan")
    error = np.abs(np.nan_to_num(depth[surface.valid], nan=np.inf) - surface.distance[surface.valid])
    return float(1000 * np.median(np.minimum(error, 1.0)))


# ------------------------------------------------------------------------------------------------------------ score


def heldout_scores(avatar: Avatar, dataset_dir: Path, size: int) -> list[dict]:
    dataset = load_dataset(dataset_dir)
    frames = heldout_frames(dataset, size)
    mean = avatar.frames.mean_camera_from_head
    poses = np.stack([f.camera_from_head for f in frames])
    yaw = yaw_pitch_roll_deg(np.einsum("ji,fjk->fik", mean[:3, :3], poses[:, :3, :3]))[:, 0]
    model, reason = load_lpips()
    if model is None:
        print(f"LPIPS not computed: {reason}")
    rows = []
    for frame, frame_yaw in zip(frames, yaw):
        render = avatar.render_image(frame.camera_from_head, frame.code, size)
        row = {"frame": frame.index, "yaw": float(frame_yaw), **score(render, frame.rgb, frame.face)}
        if model is not None:
            top, bottom, left, right = mask_bbox(frame.face)
            pair = torch.stack([render, frame.rgb]).permute(0, 3, 1, 2)[:, :, top:bottom, left:right]
            with torch.no_grad():
                row["face_lpips"] = float(model(pair[:1], pair[1:])[0]) if min(pair.shape[-2:]) >= 32 else math.nan
        rows.append(row)
    return rows


def summarise(rows: list[dict], keys: list[str]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in keys if k in rows[0]}


def main_score(options) -> None:
    avatar = load_avatar(options.avatar, device="cpu")
    dataset = options.dataset or avatar.dataset_path
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    pictures = HERE / "work" / "side-views" / f"{stamp}-{Path(options.avatar).name}"
    pictures.mkdir(parents=True, exist_ok=True)
    heldout = heldout_scores(avatar, Path(dataset), options.size)
    widest = sorted(heldout, key=lambda r: -abs(r["yaw"]))[:max(1, len(heldout) // 4)]
    keys = ["psnr", "face_psnr", "face_ssim", "face_lpips"]
    views = consistency(avatar, options.size, options.yaws, pictures)
    record = {"avatar": str(Path(options.avatar).resolve()), "dataset": str(Path(dataset).resolve()),
              "size": options.size, "machine": machine_description(), "heldout": heldout,
              "heldout_mean": summarise(heldout, keys), "widest_quarter_mean": summarise(widest, keys),
              "widest_quarter_abs_yaw_min": float(min(abs(r["yaw"]) for r in widest)), "views": views,
              "pictures": str(pictures)}
    text = _markdown(record, stamp)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stamp}-side-views.json").write_text(json.dumps(record, indent=1))
    (out / f"{stamp}-side-views.md").write_text(text)
    print(text)


def _markdown(record: dict, stamp: str) -> str:
    machine = record["machine"]

    def cells(values: dict) -> str:
        return " | ".join(f"{values.get(k, math.nan):.3f}" for k in ("psnr", "face_psnr", "face_ssim", "face_lpips"))

    lines = [f"# Side views, {stamp}", "",
             (f"Avatar {record['avatar']}, dataset {record['dataset']}, {record['size']} px. Machine: "
              f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
              f"{platform.python_version()}."), "",
             "| held-out frames | PSNR | face PSNR | face SSIM | face LPIPS |", "|---|---|---|---|---|",
             f"| all {len(record['heldout'])} | {cells(record['heldout_mean'])} |",
             (f"| widest quarter (abs yaw >= {record['widest_quarter_abs_yaw_min']:.1f} deg) | "
              f"{cells(record['widest_quarter_mean'])} |"), "",
             ("| orbit yaw (deg) | face visible from the side | warped side vs frontal, face PSNR (dB) | "
              "frontal depth vs face model (median mm) | side depth vs face model (median mm) |"),
             "|---|---|---|---|---|"]
    for view in record["views"]:
        lines.append(f"| {view['yaw']:+.0f} | {view['visible_fraction']:.2f} | {view['warp_psnr']:.2f} | "
                     f"{view['front_depth_error_mm']:.1f} | {view['side_depth_error_mm']:.1f} |")
    lines += ["", ("Pictures (frontal | side | side warped to frontal | difference x 4 where compared): "
                   f"{record['pictures']}")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    survey_parser = commands.add_parser("survey")
    survey_parser.add_argument("datasets", nargs="+", type=Path)
    split_parser = commands.add_parser("split")
    split_parser.add_argument("dataset", type=Path)
    split_parser.add_argument("out", type=Path)
    split_parser.add_argument("--fraction", type=float, default=0.1)
    score_parser = commands.add_parser("score")
    score_parser.add_argument("avatar", type=Path)
    score_parser.add_argument("--dataset", type=Path)
    score_parser.add_argument("--size", type=int, default=128)
    score_parser.add_argument("--yaws", type=float, nargs="+", default=[15.0, 30.0])
    options = parser.parse_args()
    if options.command == "survey":
        survey(options.datasets)
    elif options.command == "split":
        pose_split(options.dataset, options.out, options.fraction)
    else:
        main_score(options)


if __name__ == "__main__":
    main()
