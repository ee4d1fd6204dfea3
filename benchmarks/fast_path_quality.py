"""What the fast render path costs in quality: every held-out frame of each avatar at its dataset's resolution,
through the fast path (rays at 1/factor of the side, then the upsampler) and through one ray per pixel (``direct``,
the path before the upsampler), same avatar, same frames.

    python benchmarks/fast_path_quality.py AVATAR_DIR [AVATAR_DIR ...]

Each avatar is scored with ``avatar4d.evaluation.evaluate`` twice (direct first, so that the avatar's own
``metrics.json`` ends as the fast path's). Writes ``results/<stamp>-fast-path-quality.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from stages import save_table

METRICS = ("psnr", "face_psnr", "ssim", "face_ssim", "lpips", "face_lpips")


def measure(avatar: Path) -> dict:
    from avatar4d.evaluation.evaluate import evaluate

    row: dict = {"avatar": str(avatar), "video": avatar.name}
    for path, direct in (("direct", True), ("fast", False)):
        started = time.perf_counter()
        metrics = evaluate(avatar, direct=direct, train_frames=0 if direct else 8)
        row[path] = {key: metrics["mean"][key] for key in METRICS if key in metrics["mean"]}
        row[path]["render_s_per_frame"] = metrics["render_seconds_per_frame"]
        row[path]["evaluate_s"] = time.perf_counter() - started
        row.update(resolution=metrics["resolution"], frames=len(metrics["frames"]), machine=metrics["machine"])
    return row


def table(rows: list[dict]) -> str:
    lines = ["| video | frames | path | PSNR | face PSNR | SSIM | face SSIM | LPIPS | face LPIPS | render s/frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for path in ("direct", "fast"):
            m = r[path]
            lines.append(f"| {r['video']} | {r['frames']} | {path} | " + " | ".join(
                f"{m[k]:.3f}" if "ssim" in k or "lpips" in k else f"{m[k]:.2f}" for k in METRICS)
                + f" | {m['render_s_per_frame']:.2f} |")
        d = {k: r["fast"][k] - r["direct"][k] for k in METRICS}
        lines.append(f"| {r['video']} | | fast - direct | " + " | ".join(
            f"{d[k]:+.3f}" if "ssim" in k or "lpips" in k else f"{d[k]:+.2f}" for k in METRICS) + " | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    from avatar4d.environment import keep_freed_memory

    keep_freed_memory()
    rows = [measure(avatar) for avatar in options.avatars]
    machine = rows[0]["machine"]
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
                f"{platform.python_version()}. Every held-out frame at the dataset's resolution, the mean latent code; "
                "LPIPS AlexNet v0.1; the face region is the tracked face outline. Target (issue 11): fast within "
                "0.3 dB and 0.01 LPIPS of direct, or better.")
    print(save_table(options.out, "fast-path-quality", "Fast path against one ray per pixel", preamble, table(rows),
                     rows))


if __name__ == "__main__":
    main()
