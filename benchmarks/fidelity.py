"""Held-out quality at the video's own resolution, with and without the upsampler, at the same training time.

    python benchmarks/fidelity.py DATASET [DATASET ...] [--variants baseline upsampler] [--time-limit 300]

For each prepared dataset and variant, trains the preview preset (seeded, stopped at ``--time-limit`` seconds of
training) into ``WORK/fidelity/<dataset>-<variant>`` and evaluates every held-out frame at the dataset's resolution
(whole image and face region, PSNR / SSIM / LPIPS), plus eight training frames rendered the same way (the
training-versus-held-out gap):

- ``baseline``: no upsampler, one ray per output pixel (the render path before the upsampler: "today's slow path");
- ``upsampler``: the preview preset (rays at a quarter of the side, then the upsampler trained on full-resolution
  patches with L1, LPIPS and a penalty on a pattern repeated on its 4 px blocks);
- ``end_to_end``: the patch loss also trains the field (HeadNeRF's way: its feature channels learn for the upsampler);
- ``pixel_heavy``: end to end with ten times the L1 weight;
- ``no_perceptual``: the preset without the LPIPS term of the patch loss (L1 only): what the perceptual loss gives;
- ``distortion``: the preset with Mip-NeRF 360's distortion loss (weight ``--distortion``): a thinner surface;
- ``face_depth``: the preset with the face depth loss (weight 0.01): the face model's surface supervises the depth;
- ``code_weights``: the preset with each expression component's code weighted by its share of the landmarks' motion
  (``code_weight_power``, ``--code-weight-power``): the minor components, mostly tracking noise, cannot key the grids;
- ``no_latent``: no per-frame latent code (it can key each training frame's density and colour);
- ``code_noise``: Gaussian noise (``--code-noise``) on the training batch's expression codes;
- ``fine_canonical``: the canonical grid at 3.5 mm instead of 5 mm;
- ``plain_codes``: neither code weights nor code noise (the preview preset before 2026-12-05);
- ``head_prior``: the head prior loss (weight 0.01): the head's core, which no view sees, kept solid;
- ``no_warp``: the preset without its face warp (the preview preset before 2026-12-05 evening);
- ``face_warp``: points of the face region warped back to the mean face by the landmarks' displacement for the
  frame's code (the face model says where the jaw and lips go; the motion grids keep the rest);
- ``warp_two_steps``: the warp's inverse solved by two fixed-point steps instead of read at the frame's point;
- ``face_detail``: a 2.5 mm feature grid over the face's box added to the 5 mm canonical grid;
- ``face_spread``: the face depth loss also penalises spread around the face surface (``face_depth_spread`` 0.1);
- ``deep_decoder``: two hidden layers in the decoder instead of one (capacity of the field's fit);
- ``pose_refine``: each training frame's tracked head pose corrected by a small rigid motion learned from the pixels;
- ``fine_motion``: the motion grids at 5 mm instead of 8 mm (the quality preset's; more room for what differs
  between frames: eyelids, lips);
- ``wide_motion``: 16 channels in the motion grids instead of 8 (more room for what the code changes);
- ``perceptual_heavy``: four times the LPIPS weight of the upsampler's patch loss (0.2 instead of 0.05);
- ``light_tv``: a tenth of the canonical grid's total-variation weight (detail the regulariser may smooth away);
- ``resize_doubling``: the upsampler doubles by bilinear enlargement and a convolution instead of sub-pixel
  convolution (``PixelShuffle``): no sub-pixel filters of its own, so no pattern on its blocks;
- ``lpips_shift``: LPIPS of the patch loss on a window at a random 0-3 px shift, so that AlexNet's 4-pixel
  sampling does not always meet the upsampler's 4 x 4 blocks at the same phase;
- ``no_pattern``: no penalty on the patch error's pattern on the 4 px block grid (the preset before 2026-12-05
  noon, whose upsampler stamps a dot grid on the picture);
- ``block_pattern``: that penalty at ten times the preset's weight (1 instead of 0.1);
- ``no_motion``: no motion grids (with ``face_warp``: the landmarks' motion alone);
- ``a+b``: both changes.

Writes ``results/<stamp>-<kind>.json`` and ``.md`` (``--kind``, default ``fidelity``; the table docs/benchmarks.md
includes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

from stages import save_table

VARIANTS = ("baseline", "upsampler", "end_to_end", "pixel_heavy", "no_perceptual", "distortion", "face_depth",
            "code_weights", "no_latent", "code_noise", "fine_canonical",
            "plain_codes", "head_prior", "face_warp", "no_warp", "warp_two_steps", "no_motion",
            "face_detail", "face_spread", "deep_decoder", "pose_refine", "light_tv", "fine_motion",
            "wide_motion", "perceptual_heavy", "lpips_shift", "no_pattern", "block_pattern",
            "resize_doubling")


def _with(config, name: str, distortion: float, code_weight_power: float, code_noise: float):
    """``config`` with one named change (see the module's docstring)."""
    from avatar4d.render.upsampler import UpsamplerConfig

    field, loss = config.field, config.loss
    changes = {
        "upsampler": lambda: config,
        "end_to_end": lambda: dataclasses.replace(config, patch_trains_field=True),
        "pixel_heavy": lambda: dataclasses.replace(config, patch_trains_field=True,
                                                   loss=dataclasses.replace(loss, patch_l1=1.0)),
        "distortion": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, distortion=distortion)),
        "face_depth": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, face_depth=0.01)),
        "no_perceptual": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, patch_perceptual=0.0)),
        "code_weights": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, expression=dataclasses.replace(field.expression, code_weight_power=code_weight_power))),
        "code_noise": lambda: dataclasses.replace(config, code_noise=code_noise),
        "fine_canonical": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, canonical=dataclasses.replace(field.canonical, voxel_size_m=0.0035))),
        "plain_codes": lambda: dataclasses.replace(config, code_noise=0.0, field=dataclasses.replace(
            field, expression=dataclasses.replace(field.expression, code_weight_power=0.0))),
        "head_prior": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, head_prior=0.01)),
        "face_warp": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, warp=dataclasses.replace(field.warp, enabled=True))),
        "no_warp": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, warp=dataclasses.replace(field.warp, enabled=False))),
        "warp_two_steps": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, warp=dataclasses.replace(field.warp, iterations=2))),
        "face_detail": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, detail=dataclasses.replace(field.detail, enabled=True))),
        "face_spread": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, face_depth_spread=0.1)),
        "deep_decoder": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, decoder=dataclasses.replace(field.decoder, layers=2))),
        "pose_refine": lambda: dataclasses.replace(config, pose=dataclasses.replace(config.pose, enabled=True)),
        "fine_motion": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, expression=dataclasses.replace(field.expression, voxel_size_m=0.005))),
        "wide_motion": lambda: dataclasses.replace(config, field=dataclasses.replace(
            field, expression=dataclasses.replace(field.expression, channels=16))),
        "perceptual_heavy": lambda: dataclasses.replace(config, loss=dataclasses.replace(
            loss, patch_perceptual=4 * loss.patch_perceptual)),
        "light_tv": lambda: dataclasses.replace(config, loss=dataclasses.replace(
            loss, tv_canonical=loss.tv_canonical / 10)),
        "resize_doubling": lambda: dataclasses.replace(config, upsampler=dataclasses.replace(
            config.upsampler, doubling="resize")),
        "lpips_shift": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, patch_perceptual_shift=4)),
        "block_pattern": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, patch_pattern=1.0)),
        "no_pattern": lambda: dataclasses.replace(config, loss=dataclasses.replace(loss, patch_pattern=0.0)),
        "no_motion": lambda: dataclasses.replace(config, field=dataclasses.replace(field, use_expression=False)),
        "no_latent": lambda: dataclasses.replace(config, field=dataclasses.replace(field, use_latent_code=False)),
        "baseline": lambda: dataclasses.replace(
            config, upsampler=UpsamplerConfig(factor=1),
            field=dataclasses.replace(field, decoder=dataclasses.replace(field.decoder, feature_channels=0))),
    }
    if name not in changes:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return changes[name]()


def variant_config(name: str, time_limit_s: float, iterations: int | None, distortion: float = 0.05,
                   plateau_s: float | None = None, code_weight_power: float = 1.0, code_noise: float = 0.25,
                   seed: int | None = None):
    """The preview preset with the variant's changes (``a+b``: both; ``plateau_s``: its plateau stop, None: the
    preset's)."""
    from avatar4d.training import presets

    config = dataclasses.replace(presets.get("preview", iterations=iterations, seed=seed), time_limit_s=time_limit_s)
    if plateau_s is not None:
        config = dataclasses.replace(config, plateau_s=plateau_s)
    for part in name.split("+"):
        config = _with(config, part, distortion, code_weight_power, code_noise)
    return config


def measure(dataset: Path, variant: str, options: argparse.Namespace) -> dict:
    from avatar4d.evaluation.evaluate import evaluate
    from avatar4d.training.trainer import train

    out = options.work / f"{dataset.parent.name if dataset.name == 'dataset' else dataset.name}-{variant}"
    if not (out / "config.json").exists():
        config = variant_config(variant, options.time_limit, options.iterations, options.distortion, options.plateau,
                                options.code_weight_power, options.code_noise, options.seed)
        train(dataset, out, config)
    started = time.perf_counter()
    previous = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    if "training_frames" in previous and "lpips" in previous["mean"]:  # trained and evaluated by an earlier run
        metrics = previous
    else:
        metrics = evaluate(out, dataset, lpips=True)
    log = json.loads((out / "training_log.json").read_text())
    steps = max(entry["step"] for entry in log["log"])
    return {"dataset": str(dataset), "video": out.name.rsplit("-", 1)[0], "variant": variant,
            "training_s": log["training_seconds"], "steps": steps, "resolution": metrics["resolution"],
            "path": metrics["path"], **metrics["mean"], "training_frames": metrics["training_frames"],
            "render_s_per_frame": metrics["render_seconds_per_frame"],
            "evaluate_s": time.perf_counter() - started, "machine": metrics["machine"]}


def table(rows: list[dict]) -> str:
    patterns = any("block_pattern" in r for r in rows)
    lines = ["| video | variant | training | PSNR | face PSNR | SSIM | face SSIM | LPIPS | face LPIPS | "
             "training frames PSNR (gap) | render s/frame |" + (" 4 px pattern x 1000 (frames) |" if patterns else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if patterns else "")]
    for r in rows:
        seen = r["training_frames"]
        pattern = (f" {1000 * r['block_pattern']:.2f} ({1000 * r['frame_block_pattern']:.2f}) |"
                   if "block_pattern" in r else " – |")
        lines.append(f"| {r['video']} | {r['variant']} | {r['steps']} steps, {r['training_s']:.0f} s | "
                     f"{r['psnr']:.2f} | {r['face_psnr']:.2f} | {r['ssim']:.3f} | {r['face_ssim']:.3f} | "
                     f"{r['lpips']:.3f} | {r['face_lpips']:.3f} | {seen['psnr']:.2f} ({seen['psnr_gap_db']:+.2f}) | "
                     f"{r['render_s_per_frame']:.2f} |" + (pattern if patterns else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--variants", nargs="+", default=["baseline", "upsampler"], help=", ".join(VARIANTS))
    parser.add_argument("--ablations", nargs="*", default=[],
                        help="more variants, on the first dataset only")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds of training per avatar")
    parser.add_argument("--iterations", type=int, default=None, help="steps (default: the preview preset's)")
    parser.add_argument("--distortion", type=float, default=0.05, help="weight of the distortion variant's loss")
    parser.add_argument("--code-weight-power", type=float, default=1.0,
                        help="the code_weights variant's power (1: weights proportional to the components' stddev)")
    parser.add_argument("--code-noise", type=float, default=0.25, help="the code_noise variant's standard deviation")
    parser.add_argument("--plateau", type=float, default=None,
                        help="seconds of the plateau stop (0: off; default: the preset's)")
    parser.add_argument("--seed", type=int, default=None, help="the training seed (default: the preset's)")
    parser.add_argument("--kind", default="fidelity", help="the record's name: results/<stamp>-<kind>.{json,md}")
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work" / "fidelity")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    from avatar4d.environment import keep_freed_memory

    keep_freed_memory()
    options.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for position, dataset in enumerate(options.datasets):
        for variant in options.variants + (options.ablations if position == 0 else []):
            rows.append(measure(dataset, variant, options))
            print("RESULT", json.dumps(rows[-1]), flush=True)
    machine = rows[0]["machine"]
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, Python "
                f"{platform.python_version()}. Preview preset, "
                + (f"at most {options.time_limit:.0f} s of training per avatar" if options.time_limit > 0
                   else "its whole schedule")
                + "; every held-out frame scored at the dataset's resolution (LPIPS: AlexNet v0.1; the face region "
                "is the tracked face outline); training frames rendered the same way (mean latent code) give the gap.")
    text = save_table(options.out, options.kind, "Quality at full resolution", preamble, table(rows), rows)
    print(text)


if __name__ == "__main__":
    main()
