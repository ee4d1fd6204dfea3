"""The ``avatar4d`` command: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from avatar4d.environment import keep_freed_memory
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
    from avatar4d.preparation.config import PrepareConfig
    from avatar4d.preparation.prepare import prepare

    config = PrepareConfig(size=args.size, fov_deg=args.fov, max_frames=args.max_frames, every=args.every,
                           num_components=args.components, overlay=args.overlay)
    prepare(args.video, args.out, config)


@dataclass(frozen=True)
class TrainArgs:
    """Train an avatar (expression- and pose-conditioned radiance field) from a prepared dataset."""

    dataset: Annotated[Path, tyro.conf.Positional, _positional("DATASET_DIR")]
    """A folder written by `avatar4d prepare`."""
    out: Path
    """The avatar folder to create (built in OUT.partial, renamed when done)."""
    preset: Literal["preview", "quality"] | None = None
    """preview: about 128 px, minutes on a CPU; quality: 512 px, for a GPU. Default: quality on a GPU, else preview."""
    iters: int | None = None
    """Training steps (default: the preset's)."""
    image_size: int | None = None
    """Final training resolution (default: the preset's)."""
    resume: bool = False
    """Continue a killed run from its last checkpoint (OUT.partial/checkpoint.safetensors)."""
    seed: int | None = None
    device: str | None = None
    """cpu, cuda, or auto (default)."""


def _train(args: TrainArgs) -> None:
    from avatar4d.environment import pick_device
    from avatar4d.training import presets
    from avatar4d.training.trainer import train

    preset = args.preset or ("quality" if pick_device(args.device or "auto").type == "cuda" else "preview")
    config = presets.get(preset, iterations=args.iters, image_size=args.image_size, seed=args.seed,
                         device=args.device)
    train(args.dataset, args.out, config, resume=args.resume)


@dataclass(frozen=True)
class EvaluateArgs:
    """Score an avatar on its held-out frames (PSNR, SSIM, L1, LPIPS; whole image and face region)."""

    avatar: Annotated[Path, tyro.conf.Positional, _positional("AVATAR_DIR")]
    dataset: Path | None = None
    """The dataset (default: the one the avatar was trained on)."""
    size: int | None = None
    """Evaluation resolution (default: the dataset's own)."""
    lpips: bool = True
    """Compute LPIPS (AlexNet, v0.1) when its weights can be obtained."""
    direct: bool = False
    """One ray per pixel even where the avatar has an upsampler (the slow path, for comparison)."""


def _evaluate(args: EvaluateArgs) -> None:
    from avatar4d.evaluation.evaluate import evaluate

    evaluate(args.avatar, args.dataset, size=args.size, lpips=args.lpips, direct=args.direct)


@dataclass(frozen=True)
class ExportArgs:
    """Write a prepared dataset in another tool's layout (NeRFace: transforms_*.json, PNG frames, bg/00050.png)."""

    dataset: Annotated[Path, tyro.conf.Positional, _positional("DATASET_DIR")]
    out: Path
    format: Literal["nerface"] = "nerface"
    size: int | None = None
    """Resize the frames to this side (default: the dataset's)."""


def _export(args: ExportArgs) -> None:
    from avatar4d.dataset.nerface_format import export_nerface

    export_nerface(args.dataset, args.out, size=args.size)


@dataclass(frozen=True)
class RenderArgs:
    """Render the avatar: an orbit video (--orbit), or a still (.png) / short clip (.mp4) with expression and head
    pose edits."""

    avatar: Annotated[Path, tyro.conf.Positional, _positional("AVATAR_DIR")]
    out: Path | None = None
    """Output file (default: AVATAR_DIR/renders/orbit.mp4 or edit.png)."""
    orbit: bool = False
    """A novel-view video: yaw sweep then pitch sweep (--yaw/--pitch give their amplitudes)."""
    expr: str = ""
    """Expression, e.g. jaw_open=0.8,smile=0.5 or e0=2.0 (controls: jaw_open, smile, blink_left, blink_right,
    brow_raise, pucker, gaze_horizontal, gaze_vertical; raw components e0..e31)."""
    yaw: float | None = None
    """Head turn in degrees, positive to the subject's left (with --orbit: the sweep amplitude)."""
    pitch: float | None = None
    """Head nod in degrees, positive up (with --orbit: the sweep amplitude)."""
    roll: float | None = None
    """Head tilt in degrees, counter-clockwise as the camera sees it."""
    state: Path | None = None
    """An expression/pose JSON saved by the viewer (its values are used unless --expr/--yaw/--pitch/--roll are
    given)."""
    extrapolate: bool = False
    """Allow values beyond the range seen in training."""
    frames: int = 60
    """Frames of an orbit or clip."""
    size: int | None = None
    """Output side in pixels (default: the training resolution)."""


def _render(args: RenderArgs) -> None:
    from avatar4d.geometry.angles import HeadRotation
    from avatar4d.novel_views import load_edit_state, render_edit, render_orbit

    expression: dict[str, float] | str = args.expr
    rotation = HeadRotation(args.yaw or 0.0, args.pitch or 0.0, args.roll or 0.0)
    if args.state is not None:
        saved_expression, saved_rotation = load_edit_state(args.state)
        expression = args.expr or saved_expression
        rotation = HeadRotation(args.yaw if args.yaw is not None else saved_rotation.yaw,
                                args.pitch if args.pitch is not None else saved_rotation.pitch,
                                args.roll if args.roll is not None else saved_rotation.roll)
    renders = args.avatar / "renders"
    if args.orbit:
        out = args.out or renders / "orbit.mp4"
        if args.out is None:
            renders.mkdir(exist_ok=True)
        render_orbit(args.avatar, out, frames=args.frames, yaw_deg=args.yaw, pitch_deg=args.pitch,
                     expression=expression, size=args.size, extrapolate=args.extrapolate)
    else:
        out = args.out or renders / "edit.png"
        if args.out is None:
            renders.mkdir(exist_ok=True)
        render_edit(args.avatar, out, expression=expression, rotation=rotation, size=args.size, frames=args.frames,
                    extrapolate=args.extrapolate)
    print(out)


@dataclass(frozen=True)
class ReenactArgs:
    """Drive the avatar with a video of a face: driver | avatar side by side, with the driver's audio."""

    avatar: Annotated[Path, tyro.conf.Positional, _positional("AVATAR_DIR")]
    driver: Annotated[Path, tyro.conf.Positional, _positional("DRIVER_VIDEO")]
    out: Path
    """Output .mp4 (or .png with --frame)."""
    frame: int | None = None
    """Render only this driver frame, as a still."""
    size: int | None = None
    """Panel side in pixels (default: the training resolution)."""
    max_frames: int | None = None
    """Use at most this many driver frames."""
    expression_only: bool = False
    """Transfer the expression only; keep the avatar's mean head pose."""
    extrapolate: bool = False
    """Keep the driver's expression as transferred, beyond the range the avatar's own video showed."""
    transfer: Literal["controls", "residuals"] = "controls"
    """controls: the driver's jaw, smile, blinks, brows, pucker and gaze from its neutral face; residuals: the earlier
    transfer of landmark offsets from the driver's mean face."""


def _reenact(args: ReenactArgs) -> None:
    from avatar4d.reenact.reenact import reenact

    reenact(args.avatar, args.driver, args.out, frame=args.frame, size=args.size, max_frames=args.max_frames,
            expression_only=args.expression_only, extrapolate=args.extrapolate, transfer=args.transfer)


@dataclass(frozen=True)
class MeshArgs:
    """Extract the head surface (marching cubes of the density) with vertex colours, a shaded preview PNG (front,
    three-quarter, profile) and a JSON report (face roughness, distance to the tracked face)."""

    avatar: Annotated[Path, tyro.conf.Positional, _positional("AVATAR_DIR")]
    out: Path
    """.ply, .obj or .glb."""
    expr: str = ""
    """Expression of the surface (default: the neutral, mean face)."""
    extrapolate: bool = False
    resolution: int = 160
    """Grid vertices along the head box's longest side."""
    level: float | None = None
    """Surface level, density per metre (default: chosen from the field, see the mesh report)."""
    smooth: int = 10
    """Taubin smoothing iterations (0 = the raw marching-cubes surface)."""
    blur_mm: float = 2.5
    """Gaussian blur of the sampled density before marching cubes, millimetres (0 = none)."""


def _mesh(args: MeshArgs) -> None:
    from avatar4d.avatar import load_avatar
    from avatar4d.mesh import export_mesh

    code = load_avatar(args.avatar).resolve_expression(args.expr, extrapolate=args.extrapolate).code if args.expr \
        else None
    result = export_mesh(args.avatar, args.out, code=code, resolution=args.resolution, level=args.level,
                         smooth_iterations=args.smooth, density_blur_m=args.blur_mm / 1000.0)
    print(result.mesh)


@dataclass(frozen=True)
class DemoArgs:
    """The whole chain on a real sample video the tool downloads itself: prepare, train, evaluate, orbit,
    reenactment by another person, mesh."""

    out: Path = Path("avatar4d-demo")
    """Folder for everything the demo writes."""
    preset: Literal["preview", "quality"] | None = None
    """Default: quality on a GPU, else preview."""
    iters: int | None = None
    """Training steps (default: the preset's)."""
    time_limit: float | None = None
    """Seconds of training at most (default: 360 for the preview preset, so the demo takes about 10 minutes on a
    2-core CPU; 0: no limit)."""


def _demo(args: DemoArgs) -> None:
    from avatar4d.demo import run_demo

    run_demo(args.out, preset=args.preset, iterations=args.iters, time_limit_s=args.time_limit)


@dataclass(frozen=True)
class ViewArgs:
    """Play with the avatar in a web browser: expression and pose sliders, mouse orbit, frame replay beside the
    ground truth, save PNG / state JSON. Serves on localhost until Ctrl-C."""

    avatar: Annotated[Path, tyro.conf.Positional, _positional("AVATAR_DIR")]
    port: int = 7007
    """Port of the page (the next free one is taken when it is busy)."""
    host: str = "127.0.0.1"
    """Address to listen on (the default keeps the page on this machine; 0.0.0.0 opens it to the network)."""
    size: int | None = None
    """Resolution of the picture (default: the avatar's native one, the video's for an avatar with an upsampler;
    the page can change it)."""
    preview_size: int | None = None
    """Resolution of a quick picture while a control moves (0: none; default: none for an avatar with an upsampler,
    which renders full pictures while a control moves, else 64)."""


def _view(args: ViewArgs) -> None:
    from avatar4d.viewer.server import serve_viewer

    serve_viewer(args.avatar, host=args.host, port=args.port, full_size=args.size, preview_size=args.preview_size)


@dataclass(frozen=True)
class BatchArgs:
    """Many videos: prepare, train and evaluate each (and an orbit with --orbit) into OUT/NAME/, with OUT/summary.csv
    and summary.md kept current. Rerun the same command to resume: finished videos are skipped, unfinished ones
    continue, failed ones are kept unless --retry-failed."""

    input: Annotated[Path, tyro.conf.Positional, _positional("INPUT")]
    """A folder of videos, or a list: one video per line, or a CSV whose header row is video,fov,every,name."""
    out: Path
    """The batch folder (new, empty, or an earlier batch's with the same options)."""
    preset: Literal["preview", "quality"] = "preview"
    """preview: about 128 px, minutes on a CPU; quality: 512 px, one GPU per video."""
    iters: int | None = None
    """Training steps (default: the preset's)."""
    image_size: int | None = None
    """Final training resolution (default: the preset's)."""
    time_limit: float = 0.0
    """Stop each video's training after this many seconds of training (0: the whole schedule)."""
    seed: int | None = None
    device: str | None = None
    """cpu, cuda, or auto (default)."""
    size: int = 512
    """Side of the square head crop, pixels."""
    fov: float = 70.0
    """Field of view across a video's longer side, degrees, unless the list gives one."""
    max_seconds: float = 60.0
    """Longer videos keep one frame in every K, K chosen to keep this many seconds' worth (0: keep every frame)."""
    orbit: bool = False
    """Also render each avatar's orbit video (OUT/NAME/orbit.mp4)."""
    lpips: bool = True
    """Compute LPIPS (AlexNet, v0.1) when its weights can be obtained."""
    workers: int | None = None
    """Videos at once (default: by cores and memory locally; by the cluster's CPUs on Ray)."""
    threads: int | None = None
    """Torch threads per video (default: cores // workers locally; 1 CPU per task on Ray)."""
    shard: str = "0/1"
    """i/n: this machine takes share i of n of the list sorted by name (n machines, one shared disk)."""
    backend: Literal["local", "ray"] = "local"
    """local: a process pool on this machine; ray: Ray tasks (pip install -e ".[cluster]")."""
    address: str | None = None
    """Ray cluster to join: auto (this node's) or HOST:PORT (default: start a local Ray instance)."""
    retry_failed: bool = False
    """Run the videos that failed before again."""


def _batch(args: BatchArgs) -> None:
    from avatar4d.batch.jobs import parse_shard
    from avatar4d.batch.pipeline import PipelineConfig
    from avatar4d.batch.run import BatchConfig, run_batch

    pipeline = PipelineConfig(preset=args.preset, iterations=args.iters, image_size=args.image_size,
                              time_limit_s=args.time_limit, seed=args.seed, device=args.device, size=args.size,
                              fov_deg=args.fov, max_seconds=args.max_seconds, orbit=args.orbit, lpips=args.lpips)
    config = BatchConfig(pipeline=pipeline, workers=args.workers, threads=args.threads, shard=parse_shard(args.shard),
                         backend=args.backend, address=args.address, retry_failed=args.retry_failed)
    run_batch(args.input, args.out, config).check()


COMMANDS: dict[str, tuple[type, Callable]] = {
    "demo": (DemoArgs, _demo),
    "prepare": (PrepareArgs, _prepare),
    "train": (TrainArgs, _train),
    "evaluate": (EvaluateArgs, _evaluate),
    "render": (RenderArgs, _render),
    "reenact": (ReenactArgs, _reenact),
    "mesh": (MeshArgs, _mesh),
    "export": (ExportArgs, _export),
    "view": (ViewArgs, _view),
    "batch": (BatchArgs, _batch),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``avatar4d`` command."""
    args = tyro.extras.subcommand_cli_from_dict({name: args_type for name, (args_type, _) in COMMANDS.items()},
                                                args=argv, prog="avatar4d",
                                                description="Phone video of a face -> animatable 4D head avatar.")
    handler = next(run for args_type, run in COMMANDS.values() if isinstance(args, args_type))
    keep_freed_memory()  # large tensors are freed and taken again every step: keep them instead of re-faulting pages
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
