"""Expression transfer, measured on pictures: drive each avatar by each driver video (and, as self-reenactment, by
its own source video's held-out frames), track the driver's frames and the rendered avatar with the project's own
tracker, and compare per semantic control (jaw_open, smile, blinks, brow_raise, pucker, gaze) the curves over time:
correlation, lag, the avatar's range against the driver's; and the frame-to-frame jitter of the landmarks.

    python benchmarks/expression_transfer.py AVATAR_DIR [AVATAR_DIR ...] --drivers DRIVER.mp4 [...]
        [--transfer controls|residuals] [--size 128] [--every 2] [--max-seconds S] [--no-self]

Each avatar folder's dataset (``config.json``'s ``dataset``) names the source video for self-reenactment. Writes
``benchmarks/results/<stamp>-expression-transfer-<transfer>.{json,md}`` and one plot per pair under
``benchmarks/results/expression-transfer/``; ``benchmarks/report.py``'s ``write_docs`` puts the newest table of each
transfer into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHOWN_NAMES = ("jaw_open", "smile", "blink_left", "blink_right", "brow_raise", "pucker", "gaze_horizontal",
               "gaze_vertical")
TARGETS = {"jaw_open": 0.8, "smile": 0.7, "blink_left": 0.7, "blink_right": 0.7, "brow_raise": 0.7}


@dataclasses.dataclass
class Driver:
    """A tracked driver and the pictures of the frames the benchmark uses."""

    name: str
    track: object
    positions: np.ndarray
    """Positions (among the driver's processed frames) that are rendered and compared."""
    images: list
    rate_hz: float
    seen: object = None
    """The driver's pictures tracked (made once, by the first pair that needs it)."""


def driver_pictures(video: Path, track, positions: np.ndarray, size: int) -> list:
    """The driver's crops (the reenactment's left panel) of the chosen positions, at ``size`` pixels."""
    from avatar4d.images import resize_square
    from avatar4d.video.read import iter_frames

    wanted = {int(track.source_frames[p]) for p in positions}
    pictures = {}
    for frame in iter_frames(video, max_frames=max(wanted) + 1):
        if frame.index in wanted:
            pictures[frame.index] = resize_square(track.located.crop.apply(frame.image), size)
    return [pictures[int(track.source_frames[p])] for p in positions]


def load_driver(video: Path, name: str, track, positions: np.ndarray, size: int, every: int) -> Driver:
    return Driver(name=name, track=track, positions=positions, images=driver_pictures(video, track, positions, size),
                  rate_hz=track.located.info.fps / every)


def choose_positions(count: int, every: int, max_seconds: float | None, fps: float,
                     allowed: np.ndarray | None = None) -> np.ndarray:
    """Every ``every``-th position, from the first ``max_seconds`` (or all), within ``allowed`` when given."""
    positions = np.arange(count) if allowed is None else np.asarray(allowed)
    if max_seconds is not None:
        positions = positions[: round(max_seconds * fps)]
    return positions[::every]


def render_pictures(avatar, result, positions: np.ndarray, size: int) -> list:
    from avatar4d.images import to_uint8

    return [np.asarray(to_uint8(avatar.render_image(result.camera_from_head[p], result.codes[p], size)))
            for p in positions]


def asked_controls(avatar, codes: np.ndarray) -> np.ndarray:
    """(F, C) raw controls of the face the transfer asks for (the face model's landmarks of the codes): what the
    avatar would show if it rendered its codes perfectly."""
    from avatar4d.tracking.controls import measure_controls

    return measure_controls(avatar.face_model.landmarks(codes))


def measure_pair(avatar, driver: Driver, transfer: str, size: int, max_lag: int, render: bool = True) -> dict:
    """One avatar driven by one driver. Without ``render`` the avatar's side is the face the transfer asks for (the
    face model's landmarks of the codes) instead of the tracked render: the transfer alone, without the avatar's
    rendering (fast; the jitter is then that of model landmarks against tracked ones, not like for like)."""
    from avatar4d.evaluation.expression_transfer import TrackedSequence, compare, correlation, track_sequence
    from avatar4d.reenact.reenact import drive_avatar
    from avatar4d.tracking.coverage import measure_coverage

    started = time.perf_counter()
    result = drive_avatar(avatar, driver.track, transfer=transfer)
    transfer_s = time.perf_counter() - started
    if driver.seen is None:
        driver.seen = track_sequence(driver.images, driver.track.located.camera.resized(size, size), driver.rate_hz)
    driver_seen = driver.seen
    started = time.perf_counter()
    if render:
        renders = render_pictures(avatar, result, driver.positions, size)
        avatar_seen = track_sequence(renders, avatar.camera_at(size), driver.rate_hz)
    else:
        codes = result.codes[driver.positions]
        avatar_seen = TrackedSequence(found=np.ones(len(codes), dtype=bool), raw=asked_controls(avatar, codes),
                                      points=avatar.face_model.landmarks(codes))
    render_s = time.perf_counter() - started
    measured = compare(driver_seen, avatar_seen, max_lag)
    asked = asked_controls(avatar, result.codes[driver.positions])
    model, train = avatar.face_model, avatar.frames.train_indices
    subject = measure_coverage(model.controls.raw(avatar.frames.controls[train].astype(np.float64)))
    driver_coverage = measure_coverage(driver_seen.raw[driver_seen.found]) if driver_seen.found.sum() >= 5 else None
    controls = {}
    for i, name in enumerate(SHOWN_NAMES):
        agreement = dataclasses.asdict(measured["controls"][name])
        agreement["asked_correlation"] = correlation(np.where(driver_seen.found, driver_seen.raw[:, i], np.nan),
                                                     asked[:, i])
        agreement["subject_shows"] = bool(subject.control(name).shown)
        agreement["driver_shows"] = bool(driver_coverage.control(name).shown) if driver_coverage else False
        controls[name] = agreement
    return {"avatar": avatar.root.parent.name if avatar.root.name == "avatar" else avatar.root.name,
            "driver": driver.name, "transfer": transfer, "frames": measured["frames"],
            "driver_found": int(driver_seen.found.sum()), "avatar_found": int(avatar_seen.found.sum()),
            "both_found": measured["both_found"], "controls": controls,
            "jitter_driver_mm": 1000 * measured["jitter_driver_m"],
            "jitter_avatar_mm": 1000 * measured["jitter_avatar_m"],
            "jitter_ratio": measured["jitter_ratio"], "cannot_follow": list(result.cannot_follow),
            "seconds": {"transfer": transfer_s, "render": render_s},
            "curves": {k: np.round(v, 5).tolist() for k, v in (("driver", driver_seen.raw), ("avatar", avatar_seen.raw),
                                                                 ("asked", asked))},
            "rate_hz": driver.rate_hz, "render": render}


def plot_pair(row: dict, path: Path) -> None:
    """Driver's and avatar's curve for each control, as changes from each one's median, on one page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    driver, avatar = np.asarray(row["curves"]["driver"]), np.asarray(row["curves"]["avatar"])
    seconds = np.arange(len(driver)) / row["rate_hz"]
    fig, axes = plt.subplots(len(SHOWN_NAMES), 1, figsize=(7, 1.3 * len(SHOWN_NAMES)), sharex=True)
    for i, (name, ax) in enumerate(zip(SHOWN_NAMES, axes)):
        unit = 1000.0 if name in ("jaw_open", "smile", "brow_raise", "pucker") else 1.0
        side = "avatar" if row.get("render", True) else "asked face"
        for values, label, color in ((driver[:, i], "driver", "0.3"), (avatar[:, i], side, "C3")):
            ax.plot(seconds, unit * (values - np.nanmedian(values)), color=color, lw=1.2, label=label)
        c = row["controls"][name]
        shown = "" if c["subject_shows"] else " (not in the subject's video)"
        ax.set_title(f"{name}{shown}: r {c['correlation']:+.2f}, lag {c['lag_frames']:+d}, range "
                     f"{c['range_ratio']:.2f}x", fontsize=8, loc="left")
        ax.set_ylabel("mm" if unit > 1 else "ratio", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"{row['avatar']} driven by {row['driver']} ({row['transfer']})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def drivers_for(avatar_dir: Path, options, cache: dict) -> list[Driver]:
    """The shared drivers (tracked once for all avatars) and the avatar's own held-out frames."""
    from avatar4d.dataset.layout import load_dataset
    from avatar4d.reenact.reenact import track_driver

    out = []
    for video in options.drivers:
        if video not in cache:
            track = track_driver(video)
            positions = choose_positions(len(track.source_frames), options.every, options.max_seconds,
                                         track.located.info.fps)
            cache[video] = load_driver(video, video.stem, track, positions, options.size, options.every)
        out.append(cache[video])
    if options.self_reenactment:
        dataset = load_dataset(json.loads((avatar_dir / "config.json").read_text())["dataset"])
        video = Path(dataset.manifest["source"]["path"])
        track = track_driver(video)
        heldout = set(dataset.tracking.source_frames[dataset.heldout_indices].tolist())
        allowed = np.array([p for p, f in enumerate(track.source_frames) if int(f) in heldout])
        # the held-out block is short (8 frames for a 3 s video): every one of its frames is used
        positions = choose_positions(len(track.source_frames), 1, options.max_seconds, track.located.info.fps, allowed)
        out.append(load_driver(video, "self (held-out)", track, positions, options.size, 1))
    return out


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _f(value: float, digits: int = 2, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per control: medians over the pairs whose subject's video shows the control (and over those where the
    driver, as tracked, does it too)."""
    out = []
    for name in SHOWN_NAMES:
        shown = [r["controls"][name] | {"rate_hz": r["rate_hz"]} for r in rows if r["controls"][name]["subject_shows"]]
        both = [c for c in shown if c["driver_shows"]]
        out.append({"control": name, "pairs": len(shown), "pairs_both": len(both),
                    "median_r": _median([c["correlation"] for c in shown]),
                    "median_r_both": _median([c["correlation"] for c in both]),
                    "median_asked_r": _median([c["asked_correlation"] for c in shown]),
                    "median_lag_ms": _median([1000 * c["lag_frames"] / c["rate_hz"] for c in shown]),
                    "median_range_ratio": _median([c["range_ratio"] for c in shown]),
                    "target": TARGETS.get(name)})
    return out


def markdown(record: dict) -> str:
    o = record["options"]
    m = record["machine"]
    limit = "" if o["max_seconds"] is None else f", first {o['max_seconds']} s"
    rendered = o.get("render", True)
    side = "the rendered avatar's" if rendered else "the asked face's"
    shown = (f"renders {o['size']} px, tracked" if o.get("render", True) else
             f"no rendering: the avatar's side is the face the transfer asks for (driver tracked at {o['size']} px)")
    header = ("| control | pairs (subject shows it) | median r | median r, driver does it too (pairs) | median r of "
              "the asked face | median lag (ms) | median range avatar/driver | target r |")
    lines = [(f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
              f"{record['date']}. Transfer `{o['transfer']}`; {shown}; every {o['every']}th driver "
              f"frame (self-reenactment: every held-out frame){limit}; wall {record['wall_s']:.0f} s."), "",
             f"Command: `{record['command']}`", *([record["note"]] if record.get("note") else []), "", header,
             "|---|---|---|---|---|---|---|---|"]
    for s in summary_rows(record["pairs"]):
        lines.append(f"| {s['control']} | {s['pairs']} | {_f(s['median_r'])} | {_f(s['median_r_both'])} "
                     f"({s['pairs_both']}) | {_f(s['median_asked_r'])} | {_f(s['median_lag_ms'], 0, True)} | "
                     f"{_f(s['median_range_ratio'])} | {'≥ ' + _f(s['target'], 1) if s['target'] else ''} |")
    ratios = [r["jitter_ratio"] for r in record["pairs"]]
    lines += ["", (f"Landmark jitter, avatar against driver: median {_f(_median(ratios))}x over "
                   f"{len(ratios)} pairs (target ≤ 1.5x)."), "",
              (f"Per pair: correlation of {side} control with the driver's (in brackets: of the face the "
               "transfer asked for, the face model's landmarks of the codes); `*` the subject's own video does not "
               "show the control; `°` the driver, as tracked at this size, does not do it."
               + ("" if rendered else " Jitter here is of the asked face's model landmarks against the tracked "
                  "driver's: not like for like, a measure of the noise the transfer passes on.")), "",
              ("| avatar | driver | frames (face found in both) | " + " | ".join(SHOWN_NAMES)
               + " | jitter avatar / driver (mm) |"), "|---|---|---|" + "---|" * (len(SHOWN_NAMES) + 1)]
    for r in record["pairs"]:
        cells = []
        for name in SHOWN_NAMES:
            c = r["controls"][name]
            marks = ("" if c["subject_shows"] else "*") + ("" if c["driver_shows"] else "°")
            cells.append(f"{_f(c['correlation'])}{marks} ({_f(c['asked_correlation'])})")
        lines.append(f"| {r['avatar']} | {r['driver']} | {r['frames']} ({r['both_found']}) | " + " | ".join(cells)
                     + f" | {_f(r['jitter_avatar_mm'], 3)} / {_f(r['jitter_driver_mm'], 3)} |")
    plots = [p for p in (r.get("plot") for r in record["pairs"]) if p]
    if plots:
        lines += ["", "Plots (driver's and avatar's curve per control): "
                  + ", ".join(f"[{Path(p).stem}](../benchmarks/results/expression-transfer/{Path(p).name})"
                              for p in plots)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--drivers", nargs="*", type=Path, default=[])
    parser.add_argument("--transfer", choices=["controls", "residuals"], nargs="+", default=["controls"])
    parser.add_argument("--no-render", dest="render", action="store_false",
                        help="compare the face the transfer asks for (the face model's landmarks), not renders")
    parser.add_argument("--size", type=int, default=128, help="render and tracking size of both faces (px)")
    parser.add_argument("--every", type=int, default=2, help="use every K-th driver frame (self: every held-out one)")
    parser.add_argument("--max-seconds", type=float, default=None, help="use the first S seconds of each driver")
    parser.add_argument("--max-lag", type=int, default=5, help="lags searched, in used frames each way")
    parser.add_argument("--no-self", dest="self_reenactment", action="store_false")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for rendering")
    parser.add_argument("--out", type=Path, default=RESULTS)
    options = parser.parse_args()
    import sys

    import torch

    from avatar4d.avatar import load_avatar
    from avatar4d.environment import machine_description

    torch.set_num_threads(options.threads)
    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    cache: dict = {}
    rows: dict[str, list] = {transfer: [] for transfer in options.transfer}
    for avatar_dir in options.avatars:
        avatar = load_avatar(avatar_dir)
        for driver in drivers_for(avatar_dir, options, cache):
            for transfer in options.transfer:
                rows[transfer].append(run_pair(avatar, driver, transfer, options, stamp))
        for transfer in options.transfer:  # after every avatar, so that a stopped run leaves what it measured
            record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "machine": machine_description(), "command": "python " + " ".join(sys.argv),
                      "options": {"transfer": transfer, "size": options.size, "every": options.every,
                                  "max_seconds": options.max_seconds, "max_lag": options.max_lag,
                                  "self_reenactment": options.self_reenactment, "render": options.render},
                      "wall_s": time.perf_counter() - started, "pairs": rows[transfer]}
            write_record(record, options.out, stamp)
    if options.out == RESULTS:
        import report

        report.write_docs(RESULTS, Path(__file__).parents[1] / "docs" / "benchmarks.md", target=24.0)


def run_pair(avatar, driver: Driver, transfer: str, options, stamp: str) -> dict:
    row = measure_pair(avatar, driver, transfer, options.size, options.max_lag, render=options.render)
    kind = "" if options.render else "-asked"
    driver_name = driver.name.split(" ")[0]
    plot = options.out / "expression-transfer" / f"{stamp}-{transfer}{kind}-{row['avatar']}-{driver_name}.png"
    plot_pair(row, plot)
    row["plot"] = plot.name
    print(f"{row['avatar']} <- {row['driver']} ({transfer}): jaw r {row['controls']['jaw_open']['correlation']:+.2f}, "
          f"blink r {row['controls']['blink_left']['correlation']:+.2f}, jitter {row['jitter_ratio']:.2f}x "
          f"({row['seconds']['render']:.0f} s rendering)", flush=True)
    return row


def write_record(record: dict, out: Path, stamp: str) -> None:
    o = record["options"]
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"{stamp}-expression-transfer-{o['transfer']}{'' if o['render'] else '-asked'}"
    base.with_suffix(".json").write_text(json.dumps(record, separators=(",", ":")))  # curves make it long
    text = markdown(record)
    what = "rendered and tracked" if o["render"] else "the asked face, no rendering"
    base.with_suffix(".md").write_text(f"# Expression transfer ({o['transfer']}, {what}), {stamp}\n\n" + text)


if __name__ == "__main__":
    main()
