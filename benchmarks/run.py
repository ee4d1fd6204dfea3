"""Measure what users choose a tool like this by: time to a usable avatar, quality on frames it never saw, rendering
speed. One entry point; every figure in the README and docs/benchmarks.md comes from a record this writes.

    python benchmarks/run.py                                   # the default set: every shared video, all stages
    python benchmarks/run.py --stages train --videos hdtf_speaker_8s --train-budget-s 600
    python benchmarks/run.py --stages batch                    # avatar4d batch: 1 and 2 local workers, Ray

Writes ``benchmarks/results/<stamp>-<device>.json`` (the record, with the machine), a Markdown table beside it,
quality-versus-time curves (PNG), and regenerates ``docs/benchmarks.md`` from the latest records.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402
import stages  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Options:
    """What to measure."""

    stages: tuple[str, ...] = ("prepare", "train", "render")
    """Any of prepare, train, render, demo, batch (train needs prepare's datasets; render needs train's avatars; demo
    times ``avatar4d demo`` from scratch on its own sample clip; batch times ``avatar4d batch`` over the videos from
    scratch with each of --batch-runs; demo and batch are not in the default set)."""
    videos: tuple[str, ...] = ()
    """Video names (stems) in DATA/videos; default: all of them."""
    data: Path = ROOT.parent / "shared" / "data"
    """The shared test videos."""
    work: Path = ROOT / "benchmarks" / "work"
    """Where datasets and avatars are built (reused by later stages and runs)."""
    results: Path = ROOT / "benchmarks" / "results"
    preset: str | None = None
    """Training preset (default: quality on a GPU, else preview)."""
    iterations: int | None = None
    """Training steps of the preset's schedule (default: the preset's)."""
    train_budget_s: float = 180.0
    """Stop each training run after this many seconds (0: run the whole schedule)."""
    probe_every_s: float = 15.0
    """Held-out check interval for the quality-versus-time curve."""
    target_psnr: float = 24.0
    """Report the training time to reach this held-out PSNR."""
    render_sizes: tuple[int, ...] = (256, 512)
    render_frames: int = 4
    memory_check: bool = True
    """Prepare the longest video also cut to a quarter, to show prepare's peak memory does not grow with length."""
    batch_runs: tuple[str, ...] = ("local:1", "local:2", "ray:2")
    """BACKEND:WORKERS for each timed batch (ray: a local Ray instance with that many CPUs, one per video)."""
    batch_budget_s: float = 60.0
    """Training budget of each video in a batch (seconds of training)."""
    batch_iterations: int | None = 300
    """Training steps of each video's schedule in a batch (the budget usually stops it first)."""
    lpips: bool = True
    docs: bool = True
    """Regenerate docs/benchmarks.md."""


def main(options: Options) -> Path:
    import torch

    from avatar4d.environment import machine_description

    videos_dir = options.data / "videos"
    if not videos_dir.is_dir():
        raise SystemExit(f"the shared videos are not at {videos_dir} (pass --data)")
    names = list(options.videos) or sorted(p.stem for p in videos_dir.glob("*.mp4"))
    if set(options.stages) <= {"demo"}:
        names = []
    device = "gpu" if torch.cuda.is_available() else "cpu"
    preset = options.preset or ("quality" if device == "gpu" else "preview")
    started = time.time()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    record: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_description(),
                    "options": {k: (str(v) if isinstance(v, Path) else v)
                                for k, v in dataclasses.asdict(options).items()},
                    "preset": preset, "videos": names, "prepare": {}, "train": {}, "render": {}, "demo": {},
                    "batch": {}}
    options.work.mkdir(parents=True, exist_ok=True)
    options.results.mkdir(parents=True, exist_ok=True)
    for name in names:
        dataset = options.work / f"{name}-dataset"
        avatar = options.work / f"{name}-{preset}-avatar"
        if "prepare" in options.stages:
            print(f"[benchmark] prepare {name}", flush=True)
            record["prepare"][name] = stages.prepare(videos_dir / f"{name}.mp4", dataset)
        if "train" in options.stages:
            print(f"[benchmark] train {name} ({preset}, budget {options.train_budget_s:g} s)", flush=True)
            record["train"][name] = stages.train(dataset, avatar, preset=preset, time_limit_s=options.train_budget_s,
                                                 probe_every_s=options.probe_every_s, iterations=options.iterations,
                                                 lpips=options.lpips)
        if "render" in options.stages:
            print(f"[benchmark] render {name}", flush=True)
            record["render"][name] = stages.render(avatar, list(options.render_sizes), options.render_frames)
    if "demo" in options.stages:
        from avatar4d.samples import sample_path

        sample_path("single_face.mp4"), sample_path("WolfgangLanger_Pexels.mp4")  # downloaded once, not timed
        print("[benchmark] avatar4d demo", flush=True)
        record["demo"] = stages.demo(options.work / "demo")
    if "batch" in options.stages:
        record["batch"] = batch_stage(options, videos_dir, names)
    if options.memory_check and "prepare" in options.stages:
        record["prepare_memory"] = memory_check(options, videos_dir, names, record["prepare"])
    record["total_s"] = round(time.time() - started, 1)
    path = options.results / f"{stamp}-{device}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    table = report.markdown(record, options.target_psnr, curves_dir=options.results / "curves", stamp=stamp,
                            link_base=options.results)
    path.with_suffix(".md").write_text(table)
    print(table)
    if options.docs:
        report.write_docs(options.results, ROOT / "docs" / "benchmarks.md", options.target_psnr)
    print(f"[benchmark] record: {path} ({record['total_s']:.0f} s)")
    return path


def memory_check(options: Options, videos_dir: Path, names: list[str], prepared: dict) -> dict:
    """Prepare the longest video cut to a quarter: prepare's peak memory should not grow with the length."""
    longest = max(names, key=lambda n: prepared.get(n, {}).get("frames", 0))
    frames = prepared[longest]["frames"]
    quarter = max(40, frames // 4)
    print(f"[benchmark] prepare {longest} cut to {quarter} frames (memory check)", flush=True)
    short = stages.prepare(videos_dir / f"{longest}.mp4", options.work / f"{longest}-quarter-dataset",
                           max_frames=quarter)
    return {"video": longest, "full": {"frames": frames, "peak_rss_mib": prepared[longest]["peak_rss_mib"]},
            "quarter": {"frames": short["frames"], "peak_rss_mib": short["peak_rss_mib"]}}


def batch_stage(options: Options, videos_dir: Path, names: list[str]) -> dict:
    """Each of ``options.batch_runs`` from scratch over the chosen videos (the shared folder itself when all of them
    are chosen, else a folder of links to them)."""
    folder = videos_dir
    if set(names) != {path.stem for path in videos_dir.glob("*.mp4")}:
        folder = options.work / "batch-videos"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in names:
            (folder / f"{name}.mp4").symlink_to((videos_dir / f"{name}.mp4").resolve())
    runs = {}
    for run in options.batch_runs:
        backend, workers = run.split(":")
        print(f"[benchmark] batch {backend}, {workers} worker(s)", flush=True)
        runs[run] = stages.batch(folder, options.work / f"batch-{backend}-{workers}", backend=backend,
                                 workers=int(workers), iterations=options.batch_iterations,
                                 time_limit_s=options.batch_budget_s, lpips=options.lpips)
    return {"budget_s": options.batch_budget_s, "iterations": options.batch_iterations, "runs": runs}


if __name__ == "__main__":
    main(tyro.cli(Options))
