"""Training an avatar: ray batches from a few frames at a time, rendered through the head field over the scene plate,
with progressive resolution, empty-space skipping, checkpoints and exact resumption.

``train(dataset, out, config)`` builds the avatar in ``out.partial/`` and renames it to ``out`` when done; a killed
run continues with ``resume=True`` from its last checkpoint to the same result as an unbroken run.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar4d.atomic import atomic_directory, partial_path, write_json_atomic
from avatar4d.configs import to_dict
from avatar4d.dataset.layout import PreparedDataset, load_dataset
from avatar4d.dataset.sampling import (
    FrameImages,
    ImportanceConfig,
    LandmarkTargets,
    RaySampler,
    landmark_targets,
    load_frame_images,
)
from avatar4d.environment import machine_description, pick_device
from avatar4d.errors import AvatarError
from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.progress import Progress, note
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import RendererConfig, render_image, render_rays
from avatar4d.training.checkpoint import TrainingState, load_checkpoint, read_checkpoint_config, save_checkpoint
from avatar4d.training.losses import LossConfig, landmark_depth_loss, psnr_from_mse, training_loss
from avatar4d.training.schedule import ScheduleConfig, lr_factor_at, resolution_at

CHECKPOINT = "checkpoint.safetensors"


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam learning rates per parameter group (all decay together, see the schedule)."""

    canonical: float = 0.05
    motion: float = 0.02
    decoder: float = 3e-3
    latent: float = 3e-3


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json`` in the avatar)."""

    field: HeadFieldConfig = dataclasses.field(default_factory=HeadFieldConfig)
    renderer: RendererConfig = dataclasses.field(default_factory=RendererConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    importance: ImportanceConfig = dataclasses.field(default_factory=ImportanceConfig)
    frames_per_batch: int = 4
    """Frames per batch (their expression grids are mixed once each)."""
    rays_per_frame: int = 1024
    landmark_rays_per_frame: int = 64
    """Extra rays per frame through tracked landmarks, for the landmark depth loss."""
    use_background: bool = True
    """Composite the scene plate at the end of every ray and fit opacity to the head mask (off: black backdrop,
    no mask loss; the field must explain everything)."""
    occupancy_cell_m: float = 0.01
    """Edge of an occupancy cell, metres."""
    occupancy_threshold: float = 2.0
    """Density (per metre) above which a cell is occupied (about 1% opacity over 5 mm)."""
    occupancy_every: int = 16
    occupancy_warmup: int = 100
    """Steps before empty space is skipped."""
    seed: int = 0
    device: str = "auto"
    checkpoint_every_s: float = 60.0
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many steps (0: only by time)."""
    evaluations: int = 8
    """Held-out checks (PSNR on a few held-out frames, preview render) spread over the run."""
    probe_every_s: float = 0.0
    """Also check the held-out frames every this many seconds of training (0: off); for quality-versus-time
    curves. Checks never touch the training's random state, and their time is not counted as training time."""
    time_limit_s: float = 0.0
    """Stop once training has run this long (0: run every iteration of the schedule)."""
    heldout_probe_frames: int = 4


@dataclass
class HeldoutProbe:
    """A few held-out frames at the training resolution, to follow quality on unseen frames during training."""

    indices: np.ndarray
    rgb: list[torch.Tensor]
    """(H, W, 3) float ground truth per probe frame."""
    poses: torch.Tensor
    codes: torch.Tensor


@dataclass
class Run:
    """The objects of one training run."""

    config: TrainConfig
    dataset: PreparedDataset
    device: torch.device
    field: HeadField
    occupancy: OccupancyGrid
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    sampler: RaySampler
    images: dict[int, FrameImages]
    codes: torch.Tensor
    """(F_train, K) training frames' expression codes."""
    landmarks: LandmarkTargets | None
    """Where the face model puts the training frames' landmarks (None without the landmark depth loss)."""
    probe: HeldoutProbe
    generator: torch.Generator
    state: TrainingState = field(default_factory=lambda: TrainingState(0, torch.empty(0, dtype=torch.uint8), [], 0.0))


def train(dataset_dir: Path, out_dir: Path, config: TrainConfig | None = None, *, resume: bool = False) -> Path:
    """Train an avatar from a prepared dataset.

    Args:
        dataset_dir: a folder written by ``prepare``.
        out_dir: the avatar folder to create.
        config: a preset from :mod:`avatar4d.training.presets` (default ``preview``).
        resume: continue from ``out_dir.partial/checkpoint.safetensors`` if a killed run left one.

    Returns:
        ``out_dir``.
    """
    from avatar4d.avatar import save_avatar
    from avatar4d.training.presets import PREVIEW

    config = config or PREVIEW
    out_dir = Path(out_dir)
    dataset = load_dataset(dataset_dir)
    work = partial_path(out_dir)
    checkpoint = work / CHECKPOINT
    resuming = resume and checkpoint.exists()
    if resume and not resuming:
        note(f"no checkpoint in {work}; starting from the beginning")
    if resuming:
        stored = read_checkpoint_config(checkpoint)
        if stored != to_dict(config):
            changed = _differences(stored, to_dict(config))
            raise AvatarError(f"the checkpoint in {work} was made with another configuration ({changed}); resume "
                              "with the same options or start afresh without --resume")
    elif work.exists():
        note(f"removing the unfinished run in {work} (use --resume to continue it)")
    with atomic_directory(out_dir, keep_partial=True) as work_dir:
        if not resuming:
            for child in work_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        run = _build_run(dataset, config)
        if resuming:
            run.state = load_checkpoint(checkpoint, {"field": run.field, "occupancy": run.occupancy}, run.optimizer)
            run.generator.set_state(run.state.generator_state)
            note(f"resuming from step {run.state.step} of {config.schedule.iterations}")
        _train_loop(run, work_dir)
        _finalise_occupancy(run)
        scene = _scene_plate(run)
        save_avatar(work_dir, config=config, geometry=run.field.geometry, field=run.field, occupancy=run.occupancy,
                    dataset=dataset, scene=scene, image_size=config.schedule.resolutions[-1])
        write_json_atomic(work_dir / "training_log.json", {"machine": machine_description(),
                                                           "device": str(run.device),
                                                           "training_seconds": run.state.elapsed_s,
                                                           "log": run.state.log})
        _plot_training_curve(run.state.log, work_dir / "training_curve.png")
        (work_dir / CHECKPOINT).unlink(missing_ok=True)
    last = next((e for e in reversed(run.state.log) if "heldout_psnr" in e), None)
    note(f"avatar ready: {out_dir} ({config.schedule.iterations} steps in {run.state.elapsed_s:.0f} s of training"
         + (f"; held-out PSNR {last['heldout_psnr']:.2f} dB on {len(run.probe.indices)} frames" if last else "") + ")")
    return out_dir


def _differences(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            inner = _differences(a[key], b[key], f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif a.get(key) != b.get(key):
            out.append(f"{prefix}{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return ", ".join(out)


def _build_run(dataset: PreparedDataset, config: TrainConfig) -> Run:
    device = pick_device(config.device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    model = dataset.face_model
    geometry = field_geometry(model.template, config.field)
    train_indices = dataset.train_indices
    head = HeadField(config.field, geometry, model.num_components, len(train_indices), model.template, generator)
    extent = np.array(geometry.box_max) - np.array(geometry.box_min)
    occupancy_shape = tuple(max(2, int(math.ceil(e / config.occupancy_cell_m))) for e in extent)
    occupancy = OccupancyGrid(head.box_min, head.box_max, occupancy_shape)
    groups = [
        {"name": "canonical", "params": [head.canonical.table], "lr": config.optimizer.canonical},
        {"name": "decoder", "params": list(head.decoder.parameters()), "lr": config.optimizer.decoder},
        {"name": "latent", "params": [head.latents], "lr": config.optimizer.latent},
    ]
    if head.expression is not None:
        groups.insert(1, {"name": "motion", "params": [head.expression.tables], "lr": config.optimizer.motion})
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)
    images = load_frame_images(dataset, train_indices, list(config.schedule.resolutions), config.importance)
    poses = torch.from_numpy(dataset.tracking.camera_from_head[train_indices]).float()
    sampler = RaySampler(poses, config.frames_per_batch, config.rays_per_frame)
    codes = torch.from_numpy(dataset.tracking.expression[train_indices]).float()
    landmarks = (landmark_targets(dataset, train_indices)
                 if config.loss.landmark_depth > 0 and config.landmark_rays_per_frame > 0 else None)
    head.to(device)
    occupancy.to(device)
    return Run(config=config, dataset=dataset, device=device, field=head, occupancy=occupancy, optimizer=optimizer,
               base_lrs=[g["lr"] for g in groups], sampler=sampler, images=images, codes=codes, landmarks=landmarks,
               probe=_heldout_probe(dataset, config), generator=generator)


def _heldout_probe(dataset: PreparedDataset, config: TrainConfig) -> HeldoutProbe:
    import cv2

    size = config.schedule.resolutions[-1]
    held = dataset.heldout_indices
    chosen = held[np.linspace(0, len(held) - 1, min(config.heldout_probe_frames, len(held))).round().astype(int)]
    rgb = [torch.from_numpy(cv2.resize(dataset.load_frame(int(i)), (size, size), interpolation=cv2.INTER_AREA)
                            .astype(np.float32) / 255.0) for i in chosen]
    return HeldoutProbe(indices=chosen, rgb=rgb,
                        poses=torch.from_numpy(dataset.tracking.camera_from_head[chosen]).float(),
                        codes=torch.from_numpy(dataset.tracking.expression[chosen]).float())


def _background(run: Run, background: torch.Tensor) -> torch.Tensor:
    return background if run.config.use_background else torch.zeros_like(background)


def _next_probe_after(elapsed_s: float, every_s: float) -> float:
    """The first multiple of ``every_s`` after ``elapsed_s`` (never, for ``every_s`` <= 0)."""
    return (math.floor(elapsed_s / every_s) + 1) * every_s if every_s > 0 else math.inf


def _train_loop(run: Run, work_dir: Path) -> None:
    config = run.config
    total = config.schedule.iterations
    evaluation_steps = {int(round(total * (i + 1) / config.evaluations)) for i in range(config.evaluations)} \
        if config.evaluations > 0 else set()
    last_checkpoint = time.perf_counter()
    mask_weight = config.loss.mask if config.use_background else 0.0
    loss_config = dataclasses.replace(config.loss, mask=mask_weight)
    next_probe = _next_probe_after(run.state.elapsed_s, config.probe_every_s)
    step_started = time.perf_counter()
    with Progress("train", total, "it") as progress:
        progress.update(run.state.step)
        while run.state.step < total:
            if config.time_limit_s > 0 and run.state.elapsed_s >= config.time_limit_s:
                run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3),
                                      "stopped": f"time limit of {config.time_limit_s:g} s"})
                note(f"stopping at the time limit after {run.state.step} of {total} steps")
                break
            step = run.state.step
            size = resolution_at(step, config.schedule)
            images = run.images[size]
            factor = lr_factor_at(step, config.schedule)
            for group, base in zip(run.optimizer.param_groups, run.base_lrs):
                group["lr"] = base * factor
            batch = run.sampler.sample(images, run.generator)
            batch_latents = run.field.latents[batch.frame_rows]
            frames = run.field.prepare(run.codes[batch.frame_rows].to(run.device), batch_latents)
            origins, directions, frame_ids = batch.origins, batch.directions, batch.frame_ids
            background = _background(run, batch.background)
            landmark_rays = None
            if run.landmarks is not None:
                landmark_rays = run.sampler.sample_landmarks(run.landmarks, images.camera, batch.frame_rows,
                                                             config.landmark_rays_per_frame, run.generator)
                origins = torch.cat([origins, landmark_rays.origins])
                directions = torch.cat([directions, landmark_rays.directions])
                frame_ids = torch.cat([frame_ids, landmark_rays.frame_ids])
                background = torch.cat([background, torch.zeros_like(landmark_rays.origins)])
            skip = step >= config.occupancy_warmup
            output = render_rays(run.field, origins.to(run.device), directions.to(run.device),
                                 frame_ids.to(run.device), frames, background.to(run.device), config.renderer,
                                 run.occupancy if skip else None, run.generator)
            colour = slice(0, batch.num_rays)
            depth = None
            if landmark_rays is not None:
                extra = slice(batch.num_rays, None)
                depth = landmark_depth_loss(output.depth[extra], output.depth_second_moment[extra],
                                            output.opacity[extra], landmark_rays.distance.to(run.device),
                                            config.loss.landmark_depth_sigma_m)
            terms = training_loss(output.rgb[colour], batch.rgb.to(run.device), output.opacity[colour],
                                  batch.opacity.to(run.device),
                                  run.field.total_variation(config.loss.tv_samples, run.generator),
                                  batch_latents if config.field.use_latent_code else None, loss_config, depth)
            run.optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            run.optimizer.step()
            run.state.step += 1
            if run.state.step % config.occupancy_every == 0:
                _update_occupancy(run)
            now = time.perf_counter()
            run.state.elapsed_s += now - step_started
            psnr = psnr_from_mse(terms.rgb)
            losses = terms.as_floats()
            progress.set(loss=losses["total"], psnr=psnr, res=size,
                         occ=f"{run.occupancy.occupied_fraction:.2f}")
            progress.update()
            if run.state.step % 10 == 0 or run.state.step == total:
                run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3),
                                      "resolution": size, "lr_factor": factor, "psnr": psnr,
                                      "samples_per_ray": output.samples_evaluated / output.opacity.shape[0],
                                      "occupied": run.occupancy.occupied_fraction, **losses})
            preview = run.state.step in evaluation_steps
            if preview or run.state.elapsed_s >= next_probe:
                heldout = _probe_heldout(run, work_dir if preview else None)
                run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3),
                                      **{f"heldout_{k}": v for k, v in heldout.items()}})
                progress.set(loss=losses["total"], psnr=psnr, heldout=heldout["psnr"], res=size)
                next_probe = _next_probe_after(run.state.elapsed_s, config.probe_every_s)
            due = (now - last_checkpoint >= config.checkpoint_every_s
                   or (config.checkpoint_every_steps and run.state.step % config.checkpoint_every_steps == 0))
            if due and run.state.step < total:
                run.state.generator_state = run.generator.get_state()
                save_checkpoint(work_dir / CHECKPOINT, {"field": run.field, "occupancy": run.occupancy},
                                run.optimizer, run.state, to_dict(config))
                last_checkpoint = time.perf_counter()
            step_started = time.perf_counter()


def _density_of_frame(run: Run, row: int):
    latents = run.field.latents[row:row + 1] if run.config.field.use_latent_code else None
    frames = run.field.prepare(run.codes[row:row + 1].to(run.device), latents)

    def density_at(points: torch.Tensor) -> torch.Tensor:
        points = points.to(run.device)
        return run.field.density(points, torch.zeros(points.shape[0], dtype=torch.long, device=run.device), frames)

    return density_at


@torch.no_grad()
def _update_occupancy(run: Run) -> None:
    row = int(torch.randint(run.codes.shape[0], (1,), generator=run.generator))
    run.occupancy.update(_density_of_frame(run, row), run.config.occupancy_threshold, generator=run.generator)


@torch.no_grad()
def _finalise_occupancy(run: Run) -> None:
    """Occupancy for rendering: the union over frames spread across training (and the most extreme expressions),
    grown by one cell as a margin for expressions between them."""
    count = run.codes.shape[0]
    rows = set(np.linspace(0, count - 1, min(count, 24)).round().astype(int).tolist())
    norms = run.codes.norm(dim=1)
    rows |= set(torch.topk(norms, min(8, count)).indices.tolist())
    run.occupancy.density.fill_(0.0)
    for row in sorted(rows):
        run.occupancy.update(_density_of_frame(run, row), run.config.occupancy_threshold, decay=1.0)
    run.occupancy.dilate(1)


@torch.no_grad()
def _probe_heldout(run: Run, work_dir: Path | None) -> dict[str, float]:
    """Mean PSNR, SSIM and L1 over the probe's held-out frames (mean latent code); a preview strip into
    ``work_dir/previews`` when given."""
    import cv2

    from avatar4d.evaluation.metrics import l1, psnr, ssim

    size = run.config.schedule.resolutions[-1]
    images = run.images[size]
    latent = run.field.mean_latent() if run.config.field.use_latent_code else None
    background = _background(run, images.background).reshape(size, size, 3)
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "l1": []}
    strips = []
    for i in range(len(run.probe.indices)):
        output = render_image(run.field, images.camera, run.probe.poses[i], run.probe.codes[i], latent, background,
                              run.config.renderer, run.occupancy)
        render = output.rgb.reshape(size, size, 3).clamp(0, 1).cpu()
        for name, metric in (("psnr", psnr), ("ssim", ssim), ("l1", l1)):
            scores[name].append(metric(render, run.probe.rgb[i]))
        strips.append(torch.cat([run.probe.rgb[i], render], 1))
    if work_dir is not None:
        previews = work_dir / "previews"
        previews.mkdir(exist_ok=True)
        strip = (torch.cat(strips, 0).numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(previews / f"step_{run.state.step:06d}.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def _scene_plate(run: Run) -> np.ndarray:
    """(S, S, 3) uint8 scene plate at the dataset's resolution (from the full-size training images if loaded, else
    resized up from the largest training resolution)."""
    import cv2

    largest = max(run.images)
    plate = (run.images[largest].background.reshape(largest, largest, 3).numpy() * 255).round().astype(np.uint8)
    size = run.dataset.size
    if largest != size:
        plate = cv2.resize(plate, (size, size), interpolation=cv2.INTER_LINEAR)
    return plate


def _plot_training_curve(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avatar4d.atomic import atomic_file

    steps = [e for e in log if "psnr" in e]
    held = [e for e in log if "heldout_psnr" in e]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.semilogy([e["time_s"] for e in steps], [e["total"] for e in steps], label="total loss")
    ax_loss.semilogy([e["time_s"] for e in steps], [e["rgb"] for e in steps], label="colour MSE")
    ax_loss.set_xlabel("training time (s)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_psnr.plot([e["time_s"] for e in steps], [e["psnr"] for e in steps], alpha=0.5, label="train batch PSNR")
    ax_psnr.plot([e["time_s"] for e in held], [e["heldout_psnr"] for e in held], "o-", label="held-out PSNR")
    ax_psnr.set_xlabel("training time (s)")
    ax_psnr.set_ylabel("dB")
    ax_psnr.legend()
    ax_psnr.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
