"""The plateau rule replayed on finished training runs: where ``TrainConfig.plateau_s`` would have stopped each one,
and its held-out probe PSNR there against the full run's.

    python benchmarks/plateau_replay.py AVATAR_DIR [AVATAR_DIR ...] [--windows 60 90 120] [--gain 0.1]

Reads each avatar's ``training_log.json`` (its held-out probes: the trainer's spread evaluations and any
``probe_every_s`` ones) and asks :func:`avatar4d.training.probe.plateau` after every probe, as the trainer does; the
rule only sees probes at the schedule's final resolution. Writes ``results/<stamp>-plateau-replay.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stages import save_table


def replay(root: Path, window_s: float, gain_db: float) -> dict:
    from avatar4d.training.probe import plateau

    record = json.loads((root / "training_log.json").read_text())
    config = json.loads((root / "config.json").read_text())["train"]
    schedule = config["schedule"]
    final_step = int(round(schedule["resolution_starts"][-1] * schedule["iterations"]))
    log = record["log"]
    probes = [entry for entry in log if "heldout_psnr" in entry]
    stop = next((probe for probe in probes
                 if plateau([e for e in log if e["time_s"] <= probe["time_s"]], probe["time_s"], window_s, gain_db,
                            final_step)), None)
    last = probes[-1]
    return {"avatar": root.name, "window_s": window_s, "gain_db": gain_db, "probes": len(probes),
            "full": {"step": last["step"], "time_s": last["time_s"], "heldout_psnr": last["heldout_psnr"]},
            "best_heldout_psnr": max(p["heldout_psnr"] for p in probes),
            "stop": None if stop is None else {"step": stop["step"], "time_s": stop["time_s"],
                                               "heldout_psnr": stop["heldout_psnr"]},
            "machine": record.get("machine")}


def table(rows: list[dict]) -> str:
    lines = ["| avatar | window | stops at | held-out there | full run | best probe | training saved |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        full, stop = r["full"], r["stop"]
        where = (f"step {stop['step']}, {stop['time_s']:.0f} s" if stop else "does not stop")
        there = f"{stop['heldout_psnr']:.2f} dB" if stop else "–"
        saved = f"{100 * (1 - stop['time_s'] / full['time_s']):.0f} %" if stop else "0 %"
        lines.append(f"| {r['avatar']} | {r['window_s']:.0f} s | {where} | {there} | {full['heldout_psnr']:.2f} dB "
                     f"(step {full['step']}, {full['time_s']:.0f} s) | {r['best_heldout_psnr']:.2f} dB | {saved} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--windows", nargs="+", type=float, default=[60.0, 90.0, 120.0])
    parser.add_argument("--gain", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()
    rows = [replay(root, window, options.gain) for root in options.avatars for window in options.windows]
    machine = next((r["machine"] for r in rows if r["machine"]), {})
    preamble = (f"Training runs on {machine.get('cpu', 'an unrecorded machine')}, {machine.get('cores', '?')} cores. "
                f"Rule: stop when the best held-out probe PSNR of the last `window` seconds of training is not "
                f"{options.gain:g} dB above the best before them (probes at the final resolution only). The probe's "
                "frames are held-out frames (4, at the training resolution), so the rule is chosen on frames that "
                "`evaluate` scores too.")
    print(save_table(options.out, "plateau-replay", "The plateau rule replayed on training logs", preamble,
                     table(rows), rows))


if __name__ == "__main__":
    main()
