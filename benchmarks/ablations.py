"""Switch off one part of the model at a time and measure held-out quality: what each part the seeds give is worth.

    python benchmarks/ablations.py DATASET --variants full no_latent no_prior no_background

Each variant trains the preview preset (one torch thread, seeded) into ``WORK/ablate_<variant>`` and is evaluated on
every held-out frame; one line ``RESULT <variant> {json}`` per variant, and a Markdown table at the end.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class Options:
    dataset: tyro.conf.Positional[Path]
    """A prepared dataset (``avatar4d prepare``)."""
    variants: tuple[str, ...] = ("full", "no_latent", "no_prior", "no_background")
    work: Path = Path(__file__).resolve().parent / "work"
    iterations: int | None = None
    """Training steps (default: the preview preset's)."""


def variant_config(name: str, iterations: int | None):
    """The preview preset with one part switched off."""
    from avatar4d.training import presets

    config = presets.get("preview", iterations=iterations)
    field = config.field
    changes = {
        "full": config,
        "no_latent": dataclasses.replace(config, field=dataclasses.replace(field, use_latent_code=False)),
        "no_prior": dataclasses.replace(config, field=dataclasses.replace(field, use_spatial_prior=False)),
        "no_background": dataclasses.replace(config, use_background=False),
    }
    if name not in changes:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(changes)}")
    return changes[name]


def main(options: Options) -> None:
    import torch

    from avatar4d.evaluation.evaluate import evaluate
    from avatar4d.training.trainer import train

    torch.set_num_threads(1)
    rows = []
    for name in options.variants:
        out = options.work / f"ablate_{name}"
        train(options.dataset, out, variant_config(name, options.iterations))
        metrics = evaluate(out, options.dataset, lpips=True)["mean"]
        log = json.loads((out / "training_log.json").read_text())
        result = {**metrics, "training_s": log["training_seconds"]}
        print("RESULT", name, json.dumps(result), flush=True)
        rows.append((name, result))
    print("| variant | PSNR | face PSNR | SSIM | face SSIM | L1 | LPIPS | training (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in rows:
        lpips = f"{m['lpips']:.3f}" if "lpips" in m else "–"
        print(f"| {name} | {m['psnr']:.2f} | {m['face_psnr']:.2f} | {m['ssim']:.3f} | {m['face_ssim']:.3f} | "
              f"{m['l1']:.4f} | {lpips} | {m['training_s']:.0f} |")


if __name__ == "__main__":
    main(tyro.cli(Options))
