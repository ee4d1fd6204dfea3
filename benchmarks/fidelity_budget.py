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
- ``own latent`` (training frames only): ``output`` with the frame's own latent code instead of the mean.

Held-out frames: up to ``--heldout`` evenly spaced; training frames: ``--training`` evenly spaced. Writes
``results/<stamp>-fidelity-budget.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import cv2
import numpy as np
from stages import save_table

COLUMNS = ("rays", "output", "bicubic", "ceiling", "flow", "own_latent")


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


def frame_budget(avatar, frame, latent=None) -> dict[str, float]:
    """The columns (see the module's notes) for one frame (``HeldoutFrame`` at the avatar's native size)."""
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
    if latent is not None:
        own = avatar.render(frame.camera_from_head, frame.code, size=size, latent=latent).rgb.reshape(size, size, 3)
        values["own_latent"] = face_psnr(own.clamp(0, 1).cpu().numpy(), truth, face)
    return values


def avatar_budget(path: Path, heldout: int, training: int) -> dict:
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
                rows.append(frame_budget(avatar, frame, latent))
                progress.update(1)
        result[split] = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
        result[split]["frames"] = len(rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--heldout", type=int, default=20)
    parser.add_argument("--training", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    import torch

    from avatar4d.environment import machine_description

    torch.set_num_threads(min(2, torch.get_num_threads()))
    records = [avatar_budget(path, options.heldout, options.training) for path in options.avatars]
    lines = [("| avatar | frames | face PSNR: field at the ray resolution | output (upsampler) | bicubic of the rays "
              "| ceiling (frame at ray resolution, bicubic) | output warped by flow | own latent |"),
             "|---|---|---|---|---|---|---|---|"]
    for record in records:
        for split in ("heldout", "training"):
            row = record[split]
            cells = " | ".join(f"{row[key]:.2f}" if key in row else "–" for key in COLUMNS)
            lines.append(f"| {record['avatar']} | {split} ({row['frames']}) | {cells} |")
    machine = machine_description()
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
                f"{platform.python_version()}. Face region (the tracked face outline) PSNR in dB at the avatar's "
                "native size unless said; columns as in `benchmarks/fidelity_budget.py`'s notes.")
    print(save_table(options.out, "fidelity-budget", "Where the face error comes from", preamble, "\n".join(lines),
                     {"machine": machine, "avatars": records}))


if __name__ == "__main__":
    main()
