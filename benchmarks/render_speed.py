"""Interactive render speed: frames per second when every frame has a new expression and head pose (what the viewer
and reenactment ask for), through ``Avatar.render``, at 256 and 512 px.

    python benchmarks/render_speed.py AVATAR_DIR [AVATAR_DIR ...] [--frames 24] [--sizes 256 512]

Avatars with an upsampler are timed on their own path (rays at 1/factor of the side, then the network) and, for the
ratio, on one ray per pixel (``direct``: the path before the upsampler); avatars without one on their one path.
Writes ``results/<stamp>-render-speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from stages import save_table


def frame_times(avatar, size: int, frames: int, direct: bool) -> list[float]:
    """Seconds per frame, each with the next training frame's expression and a pose swinging in yaw and pitch."""
    import numpy as np

    from avatar4d.geometry.angles import HeadRotation, rotated_pose

    codes = avatar.frames.codes[avatar.frames.train_indices]
    mean = avatar.frames.mean_camera_from_head
    avatar.render(mean, codes[0], size=size, direct=direct)  # warm-up
    times = []
    for i in range(frames):
        pose = rotated_pose(mean, HeadRotation(yaw=12.0 * np.sin(i / 2), pitch=4.0 * np.cos(i / 3)))
        started = time.perf_counter()
        avatar.render(pose, codes[(7 * i) % len(codes)], size=size, direct=direct)
        times.append(time.perf_counter() - started)
    return times


def measure(root: Path, sizes: list[int], frames: int) -> list[dict]:
    import numpy as np
    import torch

    from avatar4d.avatar import load_avatar

    avatar = load_avatar(root, device="cpu")
    paths = [False, True] if avatar.upsampler is not None else [True]
    rows = []
    for direct in paths:
        for size in sizes:
            times = frame_times(avatar, size, frames if not direct else max(4, frames // 4), direct)
            rows.append({"avatar": str(root), "name": root.name, "size": size,
                         "path": "one ray per pixel" if direct else f"upsampler x{avatar.config.upsampler.factor}",
                         "median_ms": 1000 * float(np.median(times)), "frames": len(times),
                         "threads": torch.get_num_threads()})
    return rows


def table(rows: list[dict], sizes: list[int]) -> str:
    import numpy as np

    lines = ["| avatar | path | " + " | ".join(f"{s} px ms (FPS)" for s in sizes) + " |",
             "|---|---|" + "---|" * len(sizes)]
    keyed = {(r["name"], r["path"], r["size"]): r for r in rows}
    for name, path in dict.fromkeys((r["name"], r["path"]) for r in rows):
        cells = [f"{keyed[name, path, s]['median_ms']:.0f} ({1000 / keyed[name, path, s]['median_ms']:.1f})"
                 for s in sizes]
        lines.append(f"| {name} | {path} | " + " | ".join(cells) + " |")
    fast = [r for r in rows if r["path"].startswith("upsampler")]
    lines.append("")
    for s in sizes:
        mine = [r["median_ms"] for r in fast if r["size"] == s]
        slow = {r["name"]: r["median_ms"] for r in rows if r["size"] == s and r["path"] == "one ray per pixel"}
        ratios = [slow[r["name"]] / r["median_ms"] for r in fast if r["size"] == s and r["name"] in slow]
        if mine:
            lines.append(f"- {s} px, median over {len(mine)} avatar(s): {1000 / float(np.median(mine)):.1f} FPS "
                         f"through the upsampler; {float(np.median(ratios)):.1f}x one ray per pixel")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    from avatar4d.environment import keep_freed_memory, machine_description

    keep_freed_memory()
    rows = [row for root in options.avatars for row in measure(root, options.sizes, options.frames)]
    machine = machine_description()
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} ({rows[0]['threads']} "
                f"threads), Python {platform.python_version()}. Median over {options.frames} frames (a quarter of that "
                "for one ray per pixel), each with a new expression and head pose, through `Avatar.render`.")
    text = save_table(options.out, "render-speed", "Render speed", preamble, table(rows, options.sizes),
                      {"machine": machine, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
