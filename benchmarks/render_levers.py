"""What each lever of the render path gives on this machine, measured in one run: frames per second at 256 and
512 px when every frame has a new expression and head pose (as the viewer and reenactment need), for

- ``every sample``: every occupied sample of every ray is evaluated (the render path before early termination);
- ``marching``: rays are marched front to back and stop once less than 0.1 % of the light reaches on;

each with glibc's default allocator and with freed buffers kept (``keep_freed_memory``, what the tool does at
start-up). Every configuration runs in its own child process. The pictures of the two paths are compared (PSNR of
marching against every sample) so that speed is never bought with quality unnoticed.

    python benchmarks/render_levers.py AVATAR_DIR [AVATAR_DIR ...] [--frames 12] [--sizes 256 512]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from stages import run_child, save_table

LEVER = """
import dataclasses, time, numpy as np, torch
from avatar4d.environment import keep_freed_memory, machine_description
if args["keep_freed_memory"]:
    assert keep_freed_memory()
from avatar4d.avatar import load_avatar
from avatar4d.geometry.angles import HeadRotation, rotated_pose
avatar = load_avatar(args["avatar"], device="cpu")
if not args["marching"]:
    avatar.config = dataclasses.replace(avatar.config, renderer=dataclasses.replace(avatar.config.renderer,
                                                                                  min_transmittance=0.0))
codes = avatar.frames.codes[avatar.frames.train_indices]
mean = avatar.frames.mean_camera_from_head
out = {}
for size in args["sizes"]:
    avatar.render(mean, codes[0], size=size)  # warm-up
    times, samples, images = [], [], []
    for i in range(args["frames"]):
        pose = rotated_pose(mean, HeadRotation(yaw=12.0 * np.sin(i / 2), pitch=4.0 * np.cos(i / 3)))
        started = time.perf_counter()
        output = avatar.render(pose, codes[(7 * i) % len(codes)], size=size)
        times.append(time.perf_counter() - started)
        samples.append(output.samples_evaluated / size ** 2)
        if i < 3:
            images.append(output.rgb.reshape(size, size, 3).clamp(0, 1).numpy())
    np.save(args["images"] + f"-{size}.npy", np.stack(images))
    out[str(size)] = {"median_ms": 1000 * float(np.median(times)), "samples_per_pixel": float(np.mean(samples))}
result["render"] = out
result["machine"] = machine_description()
"""

CONFIGURATIONS = [("every sample", False, False), ("every sample", False, True), ("marching", True, False),
                  ("marching", True, True)]


def measure(avatar: Path, sizes: list[int], frames: int, work: Path) -> list[dict]:
    rows = []
    for name, marching, keep in CONFIGURATIONS:
        images = work / f"{avatar.name}-{'march' if marching else 'all'}-{int(keep)}"
        result = run_child(LEVER, avatar=str(avatar), sizes=sizes, frames=frames, marching=marching,
                           keep_freed_memory=keep, images=str(images))
        rows.append({"avatar": avatar.name, "path": name, "keep_freed_memory": keep, "images": str(images),
                     "peak_rss_mib": result["peak_rss_mib"], "machine": result["machine"], **result["render"]})
    return rows


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def table(rows: list[dict], sizes: list[int]) -> str:
    import numpy as np

    lines = ["| avatar | path | freed memory kept | " + " | ".join(f"{s} px ms (FPS) | {s} px samples/px"
                                                                   for s in sizes) + " | peak RSS (MiB) |",
             "|---|---|---|" + "---|---|" * len(sizes) + "---|"]
    for row in rows:
        cells = [f"{row[str(s)]['median_ms']:.0f} ({1000 / row[str(s)]['median_ms']:.1f}) | "
                 f"{row[str(s)]['samples_per_pixel']:.1f}" for s in sizes]
        lines.append(f"| {row['avatar']} | {row['path']} | {'yes' if row['keep_freed_memory'] else 'no'} | "
                     + " | ".join(cells) + f" | {row['peak_rss_mib']:.0f} |")
    lines.append("")
    for avatar in sorted({r["avatar"] for r in rows}):
        mine = [r for r in rows if r["avatar"] == avatar]
        base = next(r for r in mine if r["path"] == "every sample" and not r["keep_freed_memory"])
        best = next(r for r in mine if r["path"] == "marching" and r["keep_freed_memory"])
        for s in sizes:
            a = np.load(base["images"] + f"-{s}.npy")
            b = np.load(best["images"] + f"-{s}.npy")
            ratio = base[str(s)]["median_ms"] / best[str(s)]["median_ms"]
            lines.append(f"- {avatar}, {s} px: both levers {ratio:.2f}x "
                         f"faster; marching against every sample: PSNR {psnr(a, b):.1f} dB, largest pixel difference "
                         f"{float(np.abs(a - b).max()) * 255:.1f}/255")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()
    work = Path(__file__).parent / "work"
    work.mkdir(exist_ok=True)
    rows = [row for avatar in options.avatars for row in measure(avatar, options.sizes, options.frames, work)]
    machine = rows[0]["machine"]
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
                f"({machine['torch_threads']} threads), Python {platform.python_version()}. Median over "
                f"{options.frames} frames, each with a new expression and head pose.")
    text = save_table(options.out, "render-levers", "Render levers", preamble, table(rows, options.sizes), rows)
    print(text)


if __name__ == "__main__":
    main()
