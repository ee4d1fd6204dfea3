"""Mesh quality of trained avatars: ``export_mesh`` at the neutral face, its face region's distance to the tracked face
(mean, 95th percentile), roughness and coverage, for each density blur asked.

    python benchmarks/mesh_quality.py AVATAR_DIR [AVATAR_DIR ...] [--blur-mm 0 2.5] [--resolution 160]

Meshes and previews go to ``WORK/<avatar>-blur<mm>.ply`` (and ``_preview.png``), the table to
``results/<stamp>-mesh-quality.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from stages import save_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--blur-mm", type=float, nargs="+", default=[0.0, 2.5])
    parser.add_argument("--resolution", type=int, default=160)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work" / "mesh-quality")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    import torch

    from avatar4d.environment import machine_description
    from avatar4d.mesh import export_mesh

    torch.set_num_threads(min(2, torch.get_num_threads()))
    options.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for avatar in options.avatars:
        for blur_mm in options.blur_mm:
            started = time.perf_counter()
            result = export_mesh(avatar, options.work / f"{avatar.name}-blur{blur_mm:g}.ply",
                                 resolution=options.resolution, density_blur_m=blur_mm / 1000.0)
            rows.append({"avatar": avatar.name, "blur_mm": blur_mm, "seconds": time.perf_counter() - started,
                         "quality": result.quality.as_dict(), "unsmoothed": result.quality_unsmoothed.as_dict(),
                         "level": result.level, "face_level": result.face_level,
                         "dropped_components": result.dropped_components, "preview": str(result.preview)})
    lines = [("| avatar | density blur | face: mean distance (mm) | p95 (mm) | roughness (deg) | before smoothing "
              "| covers | pieces dropped | s |"), "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        q, u = row["quality"], row["unsmoothed"]
        lines.append(f"| {row['avatar']} | {row['blur_mm']:g} mm | {q['template_distance_mean_mm']:.2f} | "
                     f"{q['template_distance_p95_mm']:.1f} | {q['roughness_deg']:.1f} | {u['roughness_deg']:.1f} | "
                     f"{100 * q['face_coverage']:.0f}% | {row['dropped_components']} | {row['seconds']:.0f} |")
    machine = machine_description()
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
                f"{platform.python_version()}. `avatar4d mesh` defaults (neutral face, {options.resolution} vertices "
                "along the head box, level chosen from the field, 10 Taubin steps) but the density blur; face region = "
                "the frontmost surface inside the tracked face outline, distance to the tracked face surface.")
    print(save_table(options.out, "mesh-quality", "Mesh quality", preamble, "\n".join(lines),
                     {"machine": machine, "resolution": options.resolution, "rows": rows}))


if __name__ == "__main__":
    main()
