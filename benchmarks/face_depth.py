"""The face depth loss, measured: preview avatars trained at a fixed number of iterations with and without it, and
their mesh quality and held-out scores side by side.

    python benchmarks/face_depth.py train DATASET OUT [--weight 0.01] [--iterations 600]
        The preview preset at a fixed number of iterations (so that a busy machine changes the time, not the result),
        ``loss.face_depth`` set to ``--weight``, one torch thread; resumes a killed run.
    python benchmarks/face_depth.py table AVATAR [AVATAR ...] [--side-views JSON ...] [--notes TEXT]
        Reads what ``avatar4d mesh AVATAR --out AVATAR/mesh/head.ply`` (``mesh/head_report.json``) and
        ``avatar4d evaluate AVATAR`` (``metrics.json``) wrote, and, per avatar, a ``side_views.py score`` record
        (matched by its avatar path); writes benchmarks/results/<time>-face-depth.{json,md} with the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from avatar4d.environment import machine_description
from avatar4d.training import presets
from avatar4d.training.trainer import train

HERE = Path(__file__).parent


def train_command(options: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    config = presets.get("preview", iterations=options.iterations)
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, face_depth=options.weight))
    train(options.dataset, options.out, config, resume=True)


def avatar_row(avatar: Path, side_views: dict[str, dict]) -> dict:
    """One avatar's training settings, mesh quality, held-out scores and (where given) side-view scores."""
    config = json.loads((avatar / "config.json").read_text())["train"]
    log = json.loads((avatar / "training_log.json").read_text())
    mesh = json.loads((avatar / "mesh" / "head_report.json").read_text())
    metrics = json.loads((avatar / "metrics.json").read_text())
    row = {"avatar": str(avatar), "dataset": metrics["dataset"], "face_depth": config["loss"]["face_depth"],
           "iterations": config["schedule"]["iterations"], "training_s": log["training_seconds"],
           "mesh_level": mesh["level"], "mesh": mesh["quality"], "mesh_unsmoothed": mesh["quality_unsmoothed"],
           "dropped_components": mesh["dropped_components"], "heldout_resolution": metrics["resolution"],
           "heldout": metrics["mean"]}
    side = side_views.get(str(avatar.resolve()))
    if side is not None:
        row["side_views"] = {key: side[key] for key in ("size", "heldout_mean", "widest_quarter_mean",
                                                        "widest_quarter_abs_yaw_min", "views")}
    return row


def _markdown_table(rows: list[dict]) -> str:
    lines = ["| dataset | face_depth | train s | roughness (deg) | distance mean / p95 (mm) | face covered | "
             "held-out PSNR (face) | SSIM | LPIPS (face) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mesh, held = row["mesh"], row["heldout"]
        lines.append(
            f"| {Path(row['dataset']).name} | {row['face_depth']:g} | {row['training_s']:.0f} | "
            f"{mesh['roughness_deg']:.1f} | {mesh['template_distance_mean_mm']:.1f} / "
            f"{mesh['template_distance_p95_mm']:.1f} | {mesh['face_coverage']:.2f} | {held['psnr']:.2f} "
            f"({held['face_psnr']:.2f}) | {held['ssim']:.3f} | {held.get('lpips', float('nan')):.3f} "
            f"({held.get('face_lpips', float('nan')):.3f}) |")
    sides = [row for row in rows if "side_views" in row]
    if sides:
        lines += ["", "| dataset | face_depth | side views px | held-out PSNR (face) | widest quarter face PSNR | "
                  "face LPIPS | orbit +-15 / +-30 deg warp face PSNR | frontal / +-30 deg depth vs face model (mm) |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in sides:
            side = row["side_views"]
            views = {view["yaw"]: view for view in side["views"]}
            warp = " / ".join(f"{(views[-y]['warp_psnr'] + views[y]['warp_psnr']) / 2:.2f}" for y in (15.0, 30.0))
            depth = (f"{views[30.0]['front_depth_error_mm']:.1f} / "
                     f"{(views[-30.0]['side_depth_error_mm'] + views[30.0]['side_depth_error_mm']) / 2:.1f}")
            lines.append(f"| {Path(row['dataset']).name} | {row['face_depth']:g} | {side['size']} | "
                         f"{side['heldout_mean']['psnr']:.2f} ({side['heldout_mean']['face_psnr']:.2f}) | "
                         f"{side['widest_quarter_mean']['face_psnr']:.2f} | "
                         f"{side['heldout_mean'].get('face_lpips', float('nan')):.3f} | {warp} | {depth} |")
    return "\n".join(lines)


def table_command(options: argparse.Namespace) -> None:
    from stages import save_table

    side_views = {}
    for path in options.side_views or []:
        record = json.loads(Path(path).read_text())
        side_views[str(Path(record["avatar"]).resolve())] = record
    rows = [avatar_row(Path(avatar), side_views) for avatar in options.avatars]
    machine = machine_description()
    preamble = (f"Machine: {machine}. Preview preset at a fixed number of iterations; mesh: `avatar4d mesh AVATAR "
                f"--out AVATAR/mesh/head.ply` (face region of the smoothed mesh: roughness, distance to the tracked "
                f"face); held-out: `avatar4d evaluate AVATAR` (the dataset's resolution, its time split).\n\n"
                + (options.notes or ""))
    text = save_table(HERE / "results", "face-depth", "Face depth loss", preamble, _markdown_table(rows),
                      {"machine": machine, "rows": rows, "notes": options.notes})
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train")
    train_parser.add_argument("dataset", type=Path)
    train_parser.add_argument("out", type=Path)
    train_parser.add_argument("--weight", type=float, default=0.01)
    train_parser.add_argument("--iterations", type=int, default=600)
    table_parser = commands.add_parser("table")
    table_parser.add_argument("avatars", nargs="+", type=Path)
    table_parser.add_argument("--side-views", nargs="*", type=Path)
    table_parser.add_argument("--notes", default="")
    options = parser.parse_args()
    {"train": train_command, "table": table_command}[options.command](options)


if __name__ == "__main__":
    main()
