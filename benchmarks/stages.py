"""One measurement per function, each run in a child process so its peak memory (the child's maximum resident set
size, from the kernel) is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
started = time.perf_counter()
result = {}
exec(args["code"], {"args": args, "result": result, "json": json})
result["wall_s"] = time.perf_counter() - started
print("BENCHMARK-RESULT " + json.dumps(result))
"""


def save_table(out: Path, kind: str, title: str, preamble: str, table: str, record: object) -> str:
    """Write ``out/<stamp>-<kind>.json`` (the record) and ``.md`` (``# <title>, <stamp>``, the preamble, the table:
    what ``report.write_docs`` puts in docs/benchmarks.md); returns the Markdown."""
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    text = f"# {title}, {stamp}\n\n{preamble}\n\n{table}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}-{kind}.json").write_text(json.dumps(record, indent=1))
    (out / f"{stamp}-{kind}.md").write_text(text)
    return text


def run_child(code: str, **arguments) -> dict:
    """Run ``code`` in a fresh Python; it fills ``result``. Returns it with ``wall_s`` and ``peak_rss_mib`` (that
    child's own maximum resident set size, from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps({"code": code, **arguments})],
                                 stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"benchmark child failed (exit {child.returncode}):\n{stderr[-3000:]}")
    line = next(l for l in stdout.splitlines() if l.startswith("BENCHMARK-RESULT "))
    result = json.loads(line[len("BENCHMARK-RESULT "):])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # Linux reports KiB
    return result


PREPARE = """
from avatar4d.preparation.prepare import PrepareConfig, prepare
prepare(args["video"], args["out"], PrepareConfig(overlay=False, max_frames=args.get("max_frames")))
manifest = json.load(open(args["out"] + "/manifest.json"))
result.update(frames=manifest["frames"]["kept"], dropped=manifest["frames"]["dropped"],
              tracking_fps=manifest["timing"]["tracking_fps"], prepare_s=manifest["timing"]["total_s"],
              reprojection_px=manifest["quality"]["reprojection_error_px"]["mean"],
              explained_variance=manifest["quality"]["explained_variance"])
"""

TRAIN = """
import dataclasses, torch
from avatar4d.training import presets
from avatar4d.training.trainer import train
from avatar4d.evaluation.evaluate import evaluate
config = presets.get(args["preset"], iterations=args.get("iterations"))
config = dataclasses.replace(config, probe_every_s=args["probe_every_s"], time_limit_s=args["time_limit_s"])
train(args["dataset"], args["out"], config)
log = json.load(open(args["out"] + "/training_log.json"))
metrics = evaluate(args["out"], args["dataset"], lpips=args.get("lpips", True))
result.update(training_s=log["training_seconds"], device=log["device"],
              probes=[e for e in log["log"] if "heldout_psnr" in e],
              steps=max(e["step"] for e in log["log"]),
              final=metrics["mean"], baselines={k: v["psnr"] for k, v in metrics["baselines"].items()},
              gpu_peak_mib=(torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None))
"""

RENDER = """
import time, numpy as np, torch
from avatar4d.avatar import load_avatar
from avatar4d.geometry.angles import HeadRotation, rotated_pose
avatar = load_avatar(args["avatar"], device="cuda" if torch.cuda.is_available() else "cpu")
codes = avatar.frames.codes[avatar.frames.train_indices]
mean = avatar.frames.mean_camera_from_head
out = {}
for size in args["sizes"]:
    avatar.render(mean, codes[0], size=size)  # warm-up
    batch = []
    for i in range(args["frames"]):  # an orbit: one frame after another
        pose = rotated_pose(mean, HeadRotation(yaw=10.0 * np.sin(i / 3)))
        started = time.perf_counter()
        avatar.render(pose, codes[i % len(codes)], size=size)
        batch.append(time.perf_counter() - started)
    interactive = []
    for i in range(args["frames"]):  # a slider moved: a new expression each time
        code = codes[(7 * i) % len(codes)] * 1.2
        started = time.perf_counter()
        avatar.render(mean, code, size=size)
        interactive.append(time.perf_counter() - started)
    out[str(size)] = {"batch_ms": 1000 * float(np.mean(batch)), "interactive_ms": 1000 * float(np.median(interactive))}
result["render"] = out
"""

DEMO = """
import shutil
from pathlib import Path
from avatar4d.demo import run_demo
shutil.rmtree(args["out"], ignore_errors=True)
demo = run_demo(Path(args["out"]))
result.update(seconds=demo.seconds, heldout=demo.metrics["mean"])
"""

BATCH = """
import os, shutil, time
from pathlib import Path
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.pipeline import PipelineConfig
from avatar4d.batch.run import BatchConfig, run_batch
shutil.rmtree(args["out"], ignore_errors=True)
result["load_average_before"] = os.getloadavg()
pipeline = PipelineConfig(iterations=args["iterations"], time_limit_s=args["time_limit_s"], lpips=args["lpips"])
config = BatchConfig(pipeline=pipeline, workers=args["workers"], backend=args["backend"])
if args["backend"] == "ray":
    import ray
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    started = time.perf_counter()
    ray.init(num_cpus=args["workers"], include_dashboard=False, log_to_driver=False)
    result["ray_start_s"] = time.perf_counter() - started
started = time.perf_counter()
outcome = run_batch(Path(args["videos"]), Path(args["out"]), config)
result["batch_s"] = time.perf_counter() - started
if args["backend"] == "ray":
    started = time.perf_counter()
    ray.shutdown()
    result["ray_stop_s"] = time.perf_counter() - started
layout = BatchLayout(Path(args["out"]))
result["videos"] = {row.video: {"status": row.status, "error": row.error, "wall_s": row.wall_s, **row.figures,
                                "seconds": json.loads(layout.video(row.video).status.read_text())["seconds"]}
                    for row in outcome.rows}
result["summary_md"] = outcome.summary_md.read_text()
result["load_average_after"] = os.getloadavg()
"""


def prepare(video: Path, out: Path, max_frames: int | None = None) -> dict:
    return run_child(PREPARE, video=str(video), out=str(out), max_frames=max_frames)


def train(dataset: Path, out: Path, *, preset: str, time_limit_s: float, probe_every_s: float,
          iterations: int | None = None, lpips: bool = True) -> dict:
    return run_child(TRAIN, dataset=str(dataset), out=str(out), preset=preset, time_limit_s=time_limit_s,
                     probe_every_s=probe_every_s, iterations=iterations, lpips=lpips)


def render(avatar: Path, sizes: list[int], frames: int) -> dict:
    return run_child(RENDER, avatar=str(avatar), sizes=sizes, frames=frames)


def demo(out: Path) -> dict:
    """``avatar4d demo`` from scratch (the sample clip must already be cached: its download is not timed)."""
    return run_child(DEMO, out=str(out))


def batch(videos: Path, out: Path, *, backend: str, workers: int, iterations: int | None, time_limit_s: float,
          lpips: bool = True) -> dict:
    """``avatar4d batch`` over a folder of videos from scratch (a Ray backend run starts its local instance first,
    timed apart)."""
    return run_child(BATCH, videos=str(videos), out=str(out), backend=backend, workers=workers, iterations=iterations,
                     time_limit_s=time_limit_s, lpips=lpips)
