"""Benchmark records -> Markdown tables, quality-versus-time curves, and docs/benchmarks.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

BUDGET_MARKS_S = (60, 120, 180, 300, 600)


def _psnr_at(probes: list[dict], seconds: float) -> float | None:
    """Held-out PSNR of the last check at or before ``seconds`` of training (None if training was not that long)."""
    before = [p for p in probes if p["time_s"] <= seconds + 1e-6]
    if not probes or probes[-1]["time_s"] < seconds - 1e-6 and not before:
        return None
    return before[-1]["heldout_psnr"] if before else None


def _time_to(probes: list[dict], target: float) -> float | None:
    return next((p["time_s"] for p in probes if p["heldout_psnr"] >= target), None)


def _f(value, digits: int = 2, unit: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def machine_line(record: dict) -> str:
    m = record["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB{gpu}; Python {m['python']}, torch {m['torch']} "
            f"({m['torch_threads']} threads); {record['date']}")


def curve(record: dict, name: str, target: float, path: Path) -> Path | None:
    """PNG of held-out PSNR against training seconds for one video."""
    train = record["train"].get(name)
    if not train or not train["probes"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = train["probes"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([p["time_s"] for p in probes], [p["heldout_psnr"] for p in probes], "o-", ms=3, label="held-out PSNR")
    ax.axhline(target, color="0.5", ls="--", lw=1, label=f"target {target:g} dB")
    plate = train["baselines"].get("background_plate")
    if plate is not None:
        ax.axhline(plate, color="C3", ls=":", lw=1, label=f"background plate alone ({plate:.1f} dB)")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("dB")
    ax.set_title(f"{name} ({record['preset']}, {'GPU' if record['machine'].get('gpu') else 'CPU'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown(record: dict, target: float, *, curves_dir: Path, stamp: str, link_base: Path | None = None) -> str:
    """The record as Markdown tables (and its curve PNGs written to ``curves_dir``)."""
    lines = [f"Machine: {machine_line(record)}. Preset `{record['preset']}`.", ""]
    if record["prepare"]:
        lines += ["**Prepare** (tracking fps: kept frames per second of the two tracking passes; target ≥ 60 on the "
                  "2-core CPU)", "",
                  "| video | frames | tracking fps | prepare total (s) | peak RAM (MiB) | re-projection (px) |"
                  " explained variance (32 comp.) |", "|---|---|---|---|---|---|---|"]
        for name, p in record["prepare"].items():
            lines.append(f"| {name} | {p['frames']} | {p['tracking_fps']:.0f} | {p['prepare_s']:.1f} | "
                         f"{_f(p['peak_rss_mib'], 0)} | {p['reprojection_px']:.2f} | {p['explained_variance']:.4f} |")
        memory = record.get("prepare_memory")
        if memory:
            lines += ["", f"Peak RAM of prepare against length ({memory['video']}): {memory['quarter']['frames']} "
                      f"frames {memory['quarter']['peak_rss_mib']:.0f} MiB, {memory['full']['frames']} frames "
                      f"{memory['full']['peak_rss_mib']:.0f} MiB."]
        lines.append("")
    if record["train"]:
        budget = record["options"]["train_budget_s"]
        marks = [s for s in BUDGET_MARKS_S if not budget or s <= budget + 1]
        head = " | ".join(f"PSNR @{s // 60} min" for s in marks)
        lines += [f"**Train** (held-out PSNR during training: mean of 4 held-out frames, checked every "
                  f"{record['options']['probe_every_s']:g} s; final: every held-out frame, whole image / face region; "
                  f"training budget {budget:g} s)", "",
                  f"| video | steps | training (s) | {head} | time to {target:g} dB (s) | final PSNR | face PSNR | "
                  "SSIM | face SSIM | L1 | LPIPS | background plate PSNR | peak RAM (MiB) |",
                  "|" + "---|" * (12 + len(marks))]
        for name, t in record["train"].items():
            final = t["final"]
            at = " | ".join(_f(_psnr_at(t["probes"], s)) for s in marks)
            lines.append(f"| {name} | {t['steps']} | {t['training_s']:.0f} | {at} | "
                         f"{_f(_time_to(t['probes'], target), 0)} | {final['psnr']:.2f} | {final['face_psnr']:.2f} | "
                         f"{final['ssim']:.3f} | {final['face_ssim']:.3f} | {final['l1']:.4f} | "
                         f"{_f(final.get('lpips'), 3)} | {t['baselines']['background_plate']:.2f} | "
                         f"{_f(t['peak_rss_mib'], 0)} |")
        lines.append("")
        for name in record["train"]:
            path = curve(record, name, target, curves_dir / f"{stamp}-{name}.png")
            if path is not None:
                shown = os.path.relpath(path, link_base) if link_base else path.name
                lines.append(f"![{name}]({shown})")
        lines.append("")
    lines += _render_lines(record)
    lines += batch_markdown(record)
    demo = record.get("demo")
    if demo:
        heldout = demo["heldout"]
        lines += ["**Demo** (`avatar4d demo` from scratch on the sample clip `single_face.mp4`, the README's main "
                  "command; the sample download is not timed)", "",
                  "| " + " | ".join(demo["seconds"]) + " | total (s) | peak RAM (MiB) | held-out PSNR | face PSNR |",
                  "|" + "---|" * (len(demo["seconds"]) + 4),
                  "| " + " | ".join(f"{v:.0f}" for v in demo["seconds"].values())
                  + f" | {demo['wall_s']:.0f} | {_f(demo['peak_rss_mib'], 0)} | {heldout['psnr']:.2f} | "
                  f"{heldout['face_psnr']:.2f} |", ""]
    return "\n".join(lines)


def _render_lines(record: dict) -> list[str]:
    if not record["render"]:
        return []
    lines = ["**Render** (ms per frame; batch: an orbit, one frame after another; interactive: a new expression "
             "each frame, median)", "", "| video | size (px) | batch (ms) | interactive (ms) |", "|---|---|---|---|"]
    for name, r in record["render"].items():
        for size, v in r["render"].items():
            lines.append(f"| {name} | {size} | {v['batch_ms']:.0f} | {v['interactive_ms']:.0f} |")
    return lines + [""]


def batch_markdown(record: dict) -> list[str]:
    """The batch stage: wall time of each run (local pool, Ray), the overhead of Ray, and per-video figures."""
    batch = record.get("batch")
    if not batch:
        return []
    runs = batch["runs"]
    steps = f"{batch['iterations']}-step schedule, " if batch["iterations"] else ""
    lines = [f"**Batch** (`avatar4d batch` over {len(record['videos'])} videos from scratch: prepare, train "
             f"(`{record['preset']}`, {steps}training budget {batch['budget_s']:g} s per video), evaluate; "
             "local: spawned worker processes, torch threads = cores // workers; ray: a local Ray instance with as "
             "many CPUs as workers, one CPU per video)", "",
             "| run | wall (s) | videos done | failed | steps (all videos) | steps per training second | "
             "mean held-out PSNR | videos per hour | load average before / after |", "|" + "---|" * 9]
    for name, run in runs.items():
        videos = run["videos"].values()
        done = [v for v in videos if v["status"] == "done"]
        wall = run["batch_s"] + run.get("ray_start_s", 0.0) + run.get("ray_stop_s", 0.0)
        total_steps = sum(v.get("steps", 0) for v in done)
        training = sum(v.get("training_s", 0.0) for v in done)
        psnr = sum(v["psnr"] for v in done) / len(done) if done else None
        lines.append(f"| {name} | {wall:.0f} | {len(done)} | {len(videos) - len(done)} | {total_steps} | "
                     f"{total_steps / max(training, 1e-9):.2f} | {_f(psnr)} | {3600 * len(done) / wall:.1f} | "
                     f"{run['load_average_before'][0]:.1f} / {run['load_average_after'][0]:.1f} |")
    lines += _ray_overhead(runs)
    # a batch keeps every core busy itself (load about the core count); more than that is other work beside it
    busiest = max(run["load_average_after"][0] for run in runs.values())
    if busiest > 1.25 * record["machine"]["cores"]:
        lines.append(f"\nThe machine was busy with other work during these runs (1-minute load average up to "
                     f"{busiest:.1f} on {record['machine']['cores']} cores): training steps per second are far below "
                     "an idle machine's, and the runs are comparable only roughly.")
    lines += ["", "Per video (seconds of prepare / train / evaluate in the worker; steps; held-out PSNR):", "",
              "| video | frames | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    for video in next(iter(runs.values()))["videos"]:
        cells = []
        for run in runs.values():
            v = run["videos"][video]
            s = v.get("seconds", {})
            cells.append(v["status"] if v["status"] != "done" else
                         f"{s.get('prepare', 0):.0f} / {s.get('train', 0):.0f} / {s.get('evaluate', 0):.0f}; "
                         f"{v['steps']} steps; {v['psnr']:.2f} dB")
        frames = next((r["videos"][video].get("frames") for r in runs.values() if "frames" in r["videos"][video]), None)
        lines.append(f"| {video} | {_f(frames, 0)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _ray_overhead(runs: dict) -> list[str]:
    """Ray against the local pool with as many workers."""
    out = []
    for name, run in runs.items():
        backend, workers = name.split(":")
        local = runs.get(f"local:{workers}")
        if backend != "ray" or local is None:
            continue
        wall = run["batch_s"] + run["ray_start_s"] + run["ray_stop_s"]
        extra = wall - local["batch_s"]
        out.append(f"\nRay against the local pool, {workers} at a time: {extra:+.0f} s of wall time "
                   f"({100 * extra / local['batch_s']:+.1f} %), of which {run['ray_start_s']:.1f} s starting and "
                   f"{run['ray_stop_s']:.1f} s stopping the Ray instance.")
    return out


EXTRA_TABLES = (
    ("fidelity-block-pattern", "the upsampler's dot grid on its 4 px blocks, ablation on the five shared videos: a "
                               "light penalty on it (the preset now), a heavy one, LPIPS at a random shift, doubling by "
                               "resize-convolution (`benchmarks/fidelity.py --variants upsampler no_pattern ... "
                               "--plateau 0 --time-limit 0`)"),
    ("block-pattern", "the upsampler's block pattern, and LPIPS with nothing but the pattern taken away "
                      "(`benchmarks/block_pattern.py`)"),
    ("fidelity-preview", "quality at the video's resolution of the five 1500-step preview avatars "
                         "(`benchmarks/fidelity.py --variants upsampler --time-limit 0`)"),
    ("fidelity-budget", "where the held-out face error comes from: the field at the ray resolution, the upsampler, "
                        "misplacement (`benchmarks/fidelity_budget.py`)"),
    ("fidelity-face-detail", "the face's detail grid (a 2.5 mm feature grid over the face), ablation on four shared "
                             "videos (`benchmarks/fidelity.py --variants face_detail --plateau 0 --time-limit 0`), "
                             "not adopted"),
    ("fidelity-face-spread", "the face depth spread term (haze in front of the face), screened on one video and on the "
                             "widest head turns (`benchmarks/fidelity.py --variants face_spread`), not adopted"),
    ("side-views-face-spread", "side views of the face depth spread term's avatar on the widest head turns "
                               "(`benchmarks/side_views.py score`)"),
    ("fidelity-deep-decoder", "a deeper decoder (two hidden layers), screened on one video (`benchmarks/fidelity.py "
                              "--variants deep_decoder`), not adopted"),
    ("fidelity-budget-alone", "tracking fitted to the frame's own pixels, and the field fine-tuned on one training "
                              "frame alone (`benchmarks/fidelity_budget.py --fit-steps 40 --alone-steps 150`)"),
    ("fidelity-pose-refine", "per-frame pose corrections learned from the pixels, on two shared videos "
                             "(`benchmarks/fidelity.py --variants pose_refine --plateau 0 --time-limit 0`; training "
                             "times stretched by runs beside them), not adopted"),
    ("fidelity-fine-motion", "the motion grids at 5 mm instead of 8 mm, screened on one video (`benchmarks/fidelity.py "
                             "--variants fine_motion --plateau 0 --time-limit 0`; its first minutes beside another run), "
                             "not adopted"),
    ("fidelity-wide-motion", "16 channels in the motion grids instead of 8, screened on one video "
                             "(`benchmarks/fidelity.py --variants wide_motion --plateau 0 --time-limit 0`), not adopted"),
    ("fidelity-perceptual-heavy", "four times the LPIPS weight of the upsampler's patch loss, screened on one video "
                                  "(`benchmarks/fidelity.py --variants perceptual_heavy --plateau 0 --time-limit 0`), "
                                  "not adopted"),
    ("fidelity-light-tv", "a tenth of the canonical grid's total variation, screened on one video "
                          "(`benchmarks/fidelity.py --variants light_tv --plateau 0 --time-limit 0`), not adopted"),
    ("mesh-quality", "mesh quality of the five preset avatars and the demo's (`benchmarks/mesh_quality.py`)"),
    ("fidelity-face-warp", "the face warp (points moved back to the mean face by the landmarks' motion), ablation on "
                           "the five shared videos (`benchmarks/fidelity.py --variants upsampler face_warp --plateau 0 "
                           "--time-limit 0`)"),
    ("fidelity-warp-screen", "face warp variants screened on one video (`benchmarks/fidelity.py` variants "
                             "`face_warp`, `face_warp+warp_two_steps`, `face_warp+no_motion`, `--plateau 0`)"),
    ("fidelity-codes", "expression code weights and code noise, ablation on the five shared videos "
                       "(`benchmarks/fidelity.py --variants upsampler plain_codes --plateau 0 --time-limit 0`)"),
    ("fidelity-codes-screen", "expression code changes screened on one video (`benchmarks/fidelity.py` variants "
                              "`code_weights`, `code_noise`, `no_latent`, `fine_canonical`, `--plateau 0`)"),
    ("fidelity-pose-split-seeds", "the face warp on the widest head turns, a second seed (`benchmarks/fidelity.py "
                                  "--variants no_warp upsampler --seed 1` on a pose split of man_glasses_7s)"),
    ("fidelity-head-prior", "the head prior loss on the widest head turns, ablation (`benchmarks/fidelity.py "
                            "--variants upsampler head_prior` on a pose split of man_glasses_7s)"),
    ("side-views", "side views and view consistency (`benchmarks/side_views.py score`)"),
    ("fidelity", "quality at the video's resolution (`benchmarks/fidelity.py`)"),
    ("render-speed", "interactive render speed (`benchmarks/render_speed.py`)"),
    ("render-speed-before", "five 200-step avatars through the renderer before the 2026-12-04 render changes (the same "
                            "avatars after them: 25.4 and 7.8 FPS, record `20261204-180033-render-speed`)"),
    ("fast-path-quality", "the fast path against one ray per pixel, same avatars (`benchmarks/fast_path_quality.py`)"),
    ("fidelity-distortion", "the distortion loss, ablation (`benchmarks/fidelity.py --variants upsampler distortion`)"),
    ("fidelity-face-depth", "the face depth loss, ablation (`benchmarks/fidelity.py --variants upsampler face_depth "
                            "--plateau 0`)"),
    ("train-step", "training step time (`benchmarks/train_step.py`)"),
    ("plateau-replay", "the plateau rule replayed on training logs (`benchmarks/plateau_replay.py`)"),
    ("face-depth", "dense face depth supervision (`benchmarks/face_depth.py`)"),
    ("render-levers", "render levers (`benchmarks/render_levers.py`)"),
    ("viewer-frame-time", "the viewer's frame time in Chromium (`benchmarks/viewer_frame_time.py`)"),
)
"""Benchmarks that write their own Markdown table (``results/<stamp>-<kind>.md``): kind and heading."""


def write_docs(results: Path, docs: Path, target: float) -> None:
    """docs/benchmarks.md from the newest record of each kind (device x stages x training budget)."""
    records = []
    for path in sorted([*results.glob("*-cpu.json"), *results.glob("*-gpu.json")], reverse=True):
        record = json.loads(path.read_text())
        key = (path.stem.rsplit("-", 1)[-1],
               tuple(sorted(k for k in ("prepare", "train", "render", "demo", "batch") if record.get(k))),
               record["options"]["train_budget_s"] if record["train"] else None, tuple(record["videos"]))
        if key not in {k for k, _, _ in records}:
            records.append((key, path, record))
    lines = ["# Benchmarks", "",
             "Generated by `python benchmarks/run.py` from the newest records in `benchmarks/results/` (one section "
             "per kind of run, newest first). Every figure below was measured on the machine named in its section.",
             ""]
    for key, path, record in records:
        on = f" on {len(record['videos'])} video(s)" if record["videos"] else ""
        lines += [f"## {record['date'][:10]}: {', '.join(key[1])}{on}, {'GPU' if key[0] == 'gpu' else 'CPU'}", "",
                  f"Record: `benchmarks/results/{path.name}`", ""]
        lines.append(markdown(record, target, curves_dir=results / "curves", stamp=path.stem.rsplit("-", 1)[0],
                              link_base=docs.parent))
        lines.append("")
    for kind, title in EXTRA_TABLES:  # the other benchmarks: each one's newest table, under its own heading
        tables = sorted(results.glob(f"*-{kind}.md"))
        if tables:
            text = tables[-1].read_text().split("\n", 1)[1]
            lines += [f"## {tables[-1].stem[:8]}: {title}, CPU", "",
                      f"Record: `benchmarks/results/{tables[-1].with_suffix('.json').name}`", text]
    lines += expression_transfer_sections(results)
    docs.write_text("\n".join(lines))


def expression_transfer_sections(results: Path) -> list[str]:
    """benchmarks/expression_transfer.py: the newest table of each transfer (controls, the default, first; then
    residuals, the transfer before it), rendered runs before runs of the asked face alone, each under its heading."""
    lines = []
    for kind, what in (("", "rendered and tracked"), ("-asked", "the face the transfer asks for, no rendering")):
        for transfer in ("controls", "residuals"):
            tables = sorted(results.glob(f"*-expression-transfer-{transfer}{kind}.md"))
            if not tables:
                continue
            newest = tables[-1]
            text = newest.read_text().split("\n", 1)[1]
            lines += [(f"## {newest.stem[:8]}: expression transfer, `--transfer {transfer}`, {what} "
                       "(`benchmarks/expression_transfer.py`), CPU"), "",
                      f"Record: `benchmarks/results/{newest.with_suffix('.json').name}`", "", text]
    return lines
