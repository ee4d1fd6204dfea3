"""Where an avatar's face error at full resolution comes from: the field at the ray resolution, the upsampler, and
misplacement, on held-out frames and on training frames.

    python benchmarks/fidelity_budget.py AVATAR_DIR [AVATAR_DIR ...] [--heldout 20] [--training 10]

Per avatar with an upsampler (rays at ``native / factor``), each frame's face region (the tracked face outline)
scored by PSNR against the video's frame:

- ``rays``: one ray per pixel at the ray resolution against the frame shrunk to it (area): how well the field itself
  fits;
- ``output``: what the avatar renders at its native size (rays, then the upsampler);
- ``bicubic``: the ray-resolution render enlarged bicubically instead (what the upsampler adds or loses);
- ``ceiling``: the frame itself shrunk to the ray resolution and enlarged bicubically (what a perfect field would
  give at this ray resolution with the plainest enlargement);
- ``flow``: ``output`` warped onto the frame by dense optical flow (DIS, OpenCV): error a non-rigid warp of the
  picture explains (misplaced mouth, eyes, jaw), an upper bound, as flow also absorbs some texture;
- ``own latent`` (training frames only): ``output`` with the frame's own latent code instead of the mean;
- ``fitted``: ``output`` after the frame's head pose (rotation, translation) and expression code are fitted to its
  own face pixels at the ray resolution through the field (Adam, ``--fit-steps`` steps): what perfect tracking could
  give, an upper bound, as the fit sees the scored pixels (0 steps: skipped);
- ``alone`` (training frames only, ``--alone-steps`` > 0): ``rays`` after fine-tuning a copy of the whole field on
  this one frame's face pixels (its own latent code): whether the representation can hold one frame at all (if it
  climbs far above ``rays``, what caps the fit is what differs between frames, not the grids' resolution).

Held-out frames: up to ``--heldout`` evenly spaced; training frames: ``--training`` evenly spaced. Writes
``results/<stamp>-<kind>.json`` and ``.md`` (``--kind``, default ``fidelity-budget``).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import cv2
import numpy as np
from stages import save_table

COLUMNS = ("rays", "output", "bicubic", "ceiling", "flow", "own_latent", "fitted", "alone")


def face_psnr(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of (H, W, 3) images in [0, 1] over the (H, W) bool mask (the evaluation's own metric)."""
    import torch

    from avatar4d.evaluation.metrics import psnr

    return psnr(torch.from_numpy(image), torch.from_numpy(target), torch.from_numpy(mask))


def flow_warped(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(H, W, 3) ``image`` resampled so that it best lines up with ``target`` (DIS optical flow, medium preset)."""
    def grey(a: np.ndarray) -> np.ndarray:
        return cv2.cvtColor((a * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)

    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(grey(target), grey(image), None)
    rows, cols = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float32)
    return cv2.remap(image, cols + flow[..., 0], rows + flow[..., 1], cv2.INTER_LINEAR)


def face_rays(avatar, frame, size: int, face: np.ndarray, grow: int = 0):
    """(R, 3) origins, (R, 3) directions (head frame, the tracked pose) and (R,) pixel indices of the rays through the
    (size, size) ``face`` mask grown by ``grow`` pixels, one per pixel."""
    import torch

    from avatar4d.geometry.rays import camera_rays_in_head, pixel_centers, pixel_directions
    from avatar4d.geometry.rigid import invert_rigid

    region = cv2.dilate(face.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) if grow else face
    chosen = torch.from_numpy(region.reshape(-1) > 0).nonzero().squeeze(1)
    tracked = invert_rigid(torch.as_tensor(frame.camera_from_head, dtype=torch.float32))
    origins, directions = camera_rays_in_head(pixel_directions(avatar.camera_at(size), pixel_centers(size, size))[
        chosen], tracked)
    return origins, directions, chosen


def fitted_alone(avatar, frame, size: int, truth: np.ndarray, face: np.ndarray, latent, steps: int) -> float:
    """Face PSNR at ``size`` of a copy of the field fine-tuned (every parameter, Adam) on this frame's face pixels."""
    import copy

    import torch

    from avatar4d.render.renderer import render_rays

    field = copy.deepcopy(avatar.field)
    origins, directions, chosen = face_rays(avatar, frame, size, face)
    target = torch.from_numpy(truth.reshape(-1, 3))[chosen]
    background = avatar.scene_at(size).float().reshape(-1, 3)[chosen]
    ids, code = torch.zeros(len(chosen), dtype=torch.long), torch.as_tensor(frame.code, dtype=torch.float32)[None]
    for parameter in field.parameters():
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(field.parameters(), lr=0.01, eps=1e-15)
    for step in range(steps + 1):
        frames = field.prepare(code, latent[None] if latent is not None else None)
        rgb = render_rays(field, origins, directions, ids, frames, background, avatar.config.renderer,
                          avatar.occupancy).rgb[:, :3]
        error = (rgb - target).square().mean()
        if step < steps:
            optimiser.zero_grad()
            error.backward()
            optimiser.step()
    return float(-10.0 * torch.log10(error.detach()))


def fitted_tracking(avatar, frame, size: int, truth: np.ndarray, face: np.ndarray, steps: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The frame's (4, 4) ``camera_from_head`` and (K,) code after fitting a rigid correction of the head pose and a
    change of the code to the (size, size, 3) ``truth`` inside the (size, size) ``face`` mask (grown by 2 pixels),
    rendering one ray per pixel through the field (mean latent code)."""
    import torch

    from avatar4d.geometry.rigid import invert_rigid
    from avatar4d.render.renderer import render_rays
    from avatar4d.training.pose_refinement import PoseRefinement

    origins, directions, chosen = face_rays(avatar, frame, size, face, grow=2)
    target = torch.from_numpy(truth.reshape(-1, 3))[chosen]
    tracked = invert_rigid(torch.as_tensor(frame.camera_from_head, dtype=torch.float32))
    background = avatar.scene_at(size).float().reshape(-1, 3)[chosen]
    latent = avatar.field.mean_latent().detach()[None] if avatar.config.field.use_latent_code else None
    code = torch.as_tensor(frame.code, dtype=torch.float32)
    change, pose = torch.zeros_like(code, requires_grad=True), PoseRefinement(1)
    optimiser = torch.optim.Adam([{"params": [pose.rotation], "lr": 2e-3}, {"params": [pose.translation], "lr": 5e-4},
                                  {"params": [change], "lr": 0.05}])
    ids, rows = torch.zeros(len(chosen), dtype=torch.long), torch.zeros(1, dtype=torch.long)
    for _ in range(steps):
        moved, turned = pose.apply(origins, directions, ids, rows)
        frames = avatar.field.prepare((code + change)[None], latent)
        rgb = render_rays(avatar.field, moved, turned, ids, frames, background, avatar.config.renderer,
                          avatar.occupancy).rgb[:, :3]
        loss = (rgb - target).square().mean() + 1e-4 * change.square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return invert_rigid(pose.corrections()[0] @ tracked).numpy(), (code + change).detach().numpy()


def frame_budget(avatar, frame, latent=None, fit_steps: int = 0, alone_steps: int = 0) -> dict[str, float]:
    """The columns (see the module's notes) for one frame (``HeldoutFrame`` at the avatar's native size)."""
    import torch

    size = avatar.native_size
    low = size // avatar.upsampler.config.factor
    truth, face = frame.rgb.numpy(), frame.face.numpy()
    truth_low = cv2.resize(truth, (low, low), interpolation=cv2.INTER_AREA)
    face_low = cv2.resize(face.astype(np.float32), (low, low), interpolation=cv2.INTER_AREA) > 0.5
    rays = avatar.render(frame.camera_from_head, frame.code, size=low, direct=True).rgb.reshape(low, low, 3)
    rays = rays.clamp(0, 1).cpu().numpy()
    output = avatar.render_image(frame.camera_from_head, frame.code, size).numpy()

    def enlarged(image: np.ndarray) -> np.ndarray:
        return np.clip(cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)

    values = {"rays": face_psnr(rays, truth_low, face_low), "output": face_psnr(output, truth, face),
              "bicubic": face_psnr(enlarged(rays), truth, face), "ceiling": face_psnr(enlarged(truth_low), truth, face),
              "flow": face_psnr(flow_warped(output, truth), truth, face)}
    if fit_steps > 0:
        with torch.enable_grad():
            camera_from_head, code = fitted_tracking(avatar, frame, low, truth_low, face_low, fit_steps)
        values["fitted"] = face_psnr(avatar.render_image(camera_from_head, code, size).numpy(), truth, face)
    if latent is not None and alone_steps > 0:
        with torch.enable_grad():
            values["alone"] = fitted_alone(avatar, frame, low, truth_low, face_low, latent, alone_steps)
    if latent is not None:
        own = avatar.render(frame.camera_from_head, frame.code, size=size, latent=latent).rgb.reshape(size, size, 3)
        values["own_latent"] = face_psnr(own.clamp(0, 1).cpu().numpy(), truth, face)
    return values


def avatar_budget(path: Path, heldout: int, training: int, fit_steps: int, alone_steps: int) -> dict:
    """Mean of each column over the avatar's held-out and training frames."""
    import torch

    from avatar4d.avatar import load_avatar
    from avatar4d.dataset.layout import load_dataset
    from avatar4d.evaluation.holdout import heldout_frames
    from avatar4d.progress import Progress

    avatar = load_avatar(path)
    if avatar.upsampler is None:
        raise SystemExit(f"{path} renders one ray per pixel (no upsampler): there is no budget to split")
    dataset = load_dataset(avatar.dataset_path)
    for parameter in avatar.field.parameters():  # fixed here: the fits below learn poses, codes or a copy of the field
        parameter.requires_grad_(False)

    def spread(indices: np.ndarray, count: int) -> np.ndarray:
        return indices[np.unique(np.linspace(0, len(indices) - 1, min(count, len(indices))).round().astype(int))]

    result = {"avatar": path.name, "video": Path(avatar.dataset_path).name}
    train_rows = list(dataset.train_indices)
    for split, indices in (("heldout", spread(dataset.heldout_indices, heldout)),
                           ("training", spread(dataset.train_indices, training))):
        rows = []
        with Progress(f"budget: {split}", len(indices), "frames") as progress, torch.no_grad():
            for frame in heldout_frames(dataset, avatar.native_size, indices):
                latent = (avatar.field.latents[train_rows.index(frame.index)]
                          if split == "training" and avatar.config.field.use_latent_code else None)
                rows.append(frame_budget(avatar, frame, latent, fit_steps, alone_steps))
                progress.update(1)
        result[split] = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
        result[split]["frames"] = len(rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--heldout", type=int, default=20)
    parser.add_argument("--training", type=int, default=10)
    parser.add_argument("--fit-steps", type=int, default=40, help="steps of the fitted column's fit (0: skip it)")
    parser.add_argument("--alone-steps", type=int, default=0, help="steps of the alone column's fit (0: skip it)")
    parser.add_argument("--kind", default="fidelity-budget", help="the record's name: results/<stamp>-<kind>.{json,md}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    import torch

    from avatar4d.environment import machine_description

    torch.set_num_threads(min(2, torch.get_num_threads()))
    records = [avatar_budget(path, options.heldout, options.training, options.fit_steps, options.alone_steps)
               for path in options.avatars]
    lines = [("| avatar | frames | face PSNR: field at the ray resolution | output (upsampler) | bicubic of the rays "
              "| ceiling (frame at ray resolution, bicubic) | output warped by flow | own latent | pose and code fitted "
              "to the frame | field fitted to this frame alone, at the ray resolution |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for record in records:
        for split in ("heldout", "training"):
            row = record[split]
            cells = " | ".join(f"{row[key]:.2f}" if key in row else "–" for key in COLUMNS)
            lines.append(f"| {record['avatar']} | {split} ({row['frames']}) | {cells} |")
    machine = machine_description()
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
                f"{platform.python_version()}. Face region (the tracked face outline) PSNR in dB at the avatar's "
                "native size unless said; columns as in `benchmarks/fidelity_budget.py`'s notes.")
    print(save_table(options.out, options.kind, "Where the face error comes from", preamble, "\n".join(lines),
                     {"machine": machine, "avatars": records}))


if __name__ == "__main__":
    main()
