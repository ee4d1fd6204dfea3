"""Training step time of the preview preset, from a trained avatar's state (so that empty-space skipping and the
density are what a real run has after a few minutes, not an untrained field's empty occupancy grid).

    python benchmarks/train_step.py DATASET AVATAR_DIR [--source SRC_DIR ...] [--steps 20] [--rounds 2]

Each ``--source`` (a ``src`` folder of another checkout of avatar4d, e.g. a ``git worktree`` of an older commit;
default: this checkout's) is timed in its own Python, alternating rounds, so that two versions of the trainer are
compared on one machine in one run. Writes ``results/<stamp>-train-step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from stages import save_table

HERE = Path(__file__).parent

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from avatar4d.avatar import load_avatar
from avatar4d.dataset.layout import load_dataset
from avatar4d.environment import keep_freed_memory, machine_description
from avatar4d.training import presets
from avatar4d.training import trainer

options = json.loads(sys.argv[1])
keep_freed_memory()
config = presets.get("preview")
run = trainer._build_run(load_dataset(Path(options["dataset"])), config)
avatar = load_avatar(options["avatar"])
run.field.load_state_dict(avatar.field.state_dict())
if avatar.upsampler is not None and run.upsampler is not None:
    run.upsampler.load_state_dict(avatar.upsampler.state_dict())
run.state.step = options["step"]  # past the warm-up, at the final resolution
for _ in range(12):
    trainer._update_occupancy(run)
for _ in range(3):
    trainer._train_step(run, config.loss)
started = time.perf_counter()
for _ in range(options["steps"]):
    trainer._train_step(run, config.loss)
seconds = (time.perf_counter() - started) / options["steps"]
print(json.dumps({"ms_per_step": 1000 * seconds, "occupied": run.occupancy.occupied_fraction,
                  "machine": machine_description()}))
"""


def time_source(source: Path | None, options: argparse.Namespace) -> dict:
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source)
    arguments = json.dumps({"dataset": str(options.dataset), "avatar": str(options.avatar), "steps": options.steps,
                            "step": options.step})
    done = subprocess.run([sys.executable, "-c", CHILD, arguments], env=environment, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("avatar", type=Path)
    parser.add_argument("--source", type=Path, nargs="*", default=[])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step", type=int, default=600, help="the schedule's step to time at")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    options = parser.parse_args()
    sources = [source.resolve() for source in options.source] or [None]
    rows = []
    for round_ in range(options.rounds):
        for source in sources:
            result = time_source(source, options)
            rows.append({"source": str(source) if source else "this checkout", "round": round_, **result})
            print(json.dumps(rows[-1]), flush=True)
    machine = rows[0]["machine"]
    lines = ["| code | round | ms per step | occupied |", "|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['round']} | {r['ms_per_step']:.0f} | {r['occupied']:.3f} |" for r in rows]
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
                f"({machine['torch_threads']} threads), Python {platform.python_version()}. Preview preset on "
                f"{options.dataset.name}, field and upsampler from {options.avatar}, step {options.step} of the "
                f"schedule, mean of {options.steps} steps after 3 warm-up steps.")
    print(save_table(options.out, "train-step", "Training step time", preamble, "\n".join(lines), rows))


if __name__ == "__main__":
    main()
