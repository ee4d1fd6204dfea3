"""The ``avatar4d`` command: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
import tyro

from avatar4d.errors import Avatar4dError


def _positional(metavar: str) -> tyro.conf.arg:
    return tyro.conf.arg(metavar=metavar)


@dataclass(frozen=True)
class PrepareArgs:
    """Track a face video into a dataset folder (frames, masks, background, poses, expression codes)."""

    video: Annotated[Path, tyro.conf.Positional, _positional("VIDEO")]
    """The input video (mp4, mov, ...)."""
    out: Path
    """The dataset folder to create (written to OUT.partial, renamed when complete)."""
    size: int = 512
    """Side of the square head crop, pixels."""
    fov: float = 70.0
    """Field of view across the video's longer side, degrees (default: a phone front camera)."""
    max_frames: int | None = None
    """Use at most this many frames."""
    every: int = 1
    """Keep one frame in every K."""
    components: int = 32
    """Expression components."""
    overlay: bool = True
    """Write overlay.mp4 and tracking.png to check the tracking by eye."""


def _prepare(args: PrepareArgs) -> None:
    from avatar4d.tracking.prepare import PrepareConfig, prepare

    config = PrepareConfig(size=args.size, fov_deg=args.fov, max_frames=args.max_frames, every=args.every,
                           num_components=args.components, overlay=args.overlay)
    prepare(args.video, args.out, config)


COMMANDS: dict[str, tuple[type, Callable]] = {
    "prepare": (PrepareArgs, _prepare),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``avatar4d`` command."""
    args = tyro.extras.subcommand_cli_from_dict({name: args_type for name, (args_type, _) in COMMANDS.items()},
                                                args=argv, prog="avatar4d",
                                                description="Phone video of a face -> animatable 4D head avatar.")
    handler = next(run for args_type, run in COMMANDS.values() if isinstance(args, args_type))
    try:
        handler(args)
    except Avatar4dError as error:
        print(f"avatar4d: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("avatar4d: interrupted; outputs in progress were not published (a *.partial folder may remain; "
              "`train --resume` continues a training run)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
