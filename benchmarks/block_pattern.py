"""The dot grid an upsampler can stamp on its 4 px blocks, and what LPIPS makes of it.

    python benchmarks/block_pattern.py AVATAR_DIR [AVATAR_DIR ...] [--frames 10] [--labels NAME ...]

Per avatar, on evenly spaced held-out frames rendered at the avatar's native size:

- ``pattern``: :func:`avatar4d.evaluation.metrics.block_pattern` of the render (the rms of the mean detail at each
  position of the 4 x 4 block grid), beside the same of the video's frame (``frame``);
- ``LPIPS``: of the render, as ``evaluate`` computes it (AlexNet v0.1, whole image);
- ``LPIPS, stamp removed``: of the render with its local block pattern subtracted (at each of the 16 positions of
  the grid, the mean detail over a 32 px neighbourhood of that position's pixels): if LPIPS rises when nothing but
  the stamp is taken away, the metric rewards the stamp;
- ``LPIPS, blurred``: of the render blurred by a Gaussian of 0.7 px (for scale: what losing real detail costs).

Writes ``results/<stamp>-<kind>.json`` and ``.md`` (``--kind``, default ``block-pattern``).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
from stages import save_table

BLOCK = 4


def without_stamp(image: np.ndarray, window: int = 32) -> np.ndarray:
    """(H, W, 3) image minus, at each pixel, the mean detail (image minus its Gaussian blur, sigma 1.5) of the pixels
    at the same position of the 4 x 4 grid within ``window`` pixels."""
    from scipy.ndimage import gaussian_filter, uniform_filter

    detail = image - gaussian_filter(image, (1.5, 1.5, 0))
    out = image.copy()
    for dy in range(BLOCK):
        for dx in range(BLOCK):
            picked = np.zeros_like(image)
            picked[dy::BLOCK, dx::BLOCK] = detail[dy::BLOCK, dx::BLOCK]
            count = np.zeros(image.shape[:2])
            count[dy::BLOCK, dx::BLOCK] = 1.0
            local = uniform_filter(picked, (window, window, 1)) / np.maximum(uniform_filter(count, window), 1e-9)[..., None]
            out[dy::BLOCK, dx::BLOCK] -= local[dy::BLOCK, dx::BLOCK]
    return out.clip(0.0, 1.0)


def measure(avatar_dir: Path, frames: int, label: str) -> dict:
    import torch
    from scipy.ndimage import gaussian_filter

    from avatar4d.avatar import load_avatar
    from avatar4d.dataset.layout import load_dataset
    from avatar4d.environment import machine_description
    from avatar4d.evaluation.holdout import heldout_frames
    from avatar4d.evaluation.lpips import load_lpips
    from avatar4d.evaluation.metrics import block_pattern

    avatar = load_avatar(avatar_dir)
    dataset = load_dataset(avatar.dataset_path)
    chosen = dataset.heldout_indices
    chosen = chosen[np.linspace(0, len(chosen) - 1, min(frames, len(chosen))).round().astype(int)]
    model, reason = load_lpips()
    if model is None:
        raise SystemExit(f"LPIPS is needed here: {reason}")

    def lpips(image: np.ndarray, target: torch.Tensor) -> float:
        pair = torch.stack([torch.from_numpy(image).float(), target.float()]).permute(0, 3, 1, 2).clamp(0, 1)
        with torch.no_grad():
            return float(model(pair[:1], pair[1:])[0])

    rows = []
    for frame in heldout_frames(dataset, avatar.dataset_size, chosen):
        render = avatar.render_image(frame.camera_from_head, frame.code, avatar.dataset_size)
        image = render.double().numpy()
        rows.append({"pattern": block_pattern(render), "frame": block_pattern(frame.rgb),
                     "lpips": lpips(image, frame.rgb), "lpips_unstamped": lpips(without_stamp(image), frame.rgb),
                     "lpips_blurred": lpips(gaussian_filter(image, (0.7, 0.7, 0)), frame.rgb)})
    return {"avatar": label, "frames": [int(i) for i in chosen], "machine": machine_description(),
            **{key: float(np.mean([r[key] for r in rows])) for key in rows[0]}}


def table(rows: list[dict]) -> str:
    lines = ["| avatar | frames | pattern x 1000 (frame's) | LPIPS | LPIPS, stamp removed | LPIPS, blurred 0.7 px |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['avatar']} | {len(r['frames'])} | {1000 * r['pattern']:.2f} ({1000 * r['frame']:.2f}) | "
                     f"{r['lpips']:.4f} | {r['lpips_unstamped']:.4f} | {r['lpips_blurred']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=10, help="held-out frames per avatar, evenly spaced")
    parser.add_argument("--labels", nargs="*", default=[], help="names of the avatars in the table (default: folder names)")
    parser.add_argument("--kind", default="block-pattern", help="the record's name: results/<stamp>-<kind>.{json,md}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()
    labels = options.labels or [avatar.name for avatar in options.avatars]
    if len(labels) != len(options.avatars):
        raise SystemExit(f"{len(labels)} labels for {len(options.avatars)} avatars")
    rows = [measure(avatar, options.frames, label) for avatar, label in zip(options.avatars, labels)]
    for row in rows:
        print(row)
    machine = rows[0]["machine"]
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
                f"{platform.python_version()}. Held-out frames at the avatar's native size; columns as in "
                "`benchmarks/block_pattern.py`'s notes.")
    print(save_table(options.out, options.kind, "The upsampler's block pattern and LPIPS", preamble, table(rows),
                     rows))


if __name__ == "__main__":
    main()
