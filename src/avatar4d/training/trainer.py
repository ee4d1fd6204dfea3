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
from avatar4d.avatar import save_avatar
from avatar4d.configs import differences, to_dict
from avatar4d.dataset.face_depth import FaceDepthTargets, face_depth_targets, sample_face_depth
from avatar4d.dataset.layout import PreparedDataset, load_dataset
from avatar4d.dataset.rays import PatchRays, RayBatch
from avatar4d.dataset.sampling import FrameImages, LandmarkTargets, RaySampler, landmark_targets, load_frame_images
from avatar4d.environment import machine_description, pick_device
from avatar4d.errors import AvatarError
from avatar4d.evaluation.lpips import LPIPS, load_lpips
from avatar4d.field.head_field import HeadField, field_geometry
from avatar4d.field.head_shape import Ellipsoid, head_core
from avatar4d.images import resize_square
from avatar4d.progress import Progress, note
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import RenderOutput, render_rays
from avatar4d.render.upsampler import Upsampler
from avatar4d.training.checkpoint import TrainingState, load_checkpoint, read_checkpoint_config, save_checkpoint
from avatar4d.training.config import TrainConfig
from avatar4d.training.curves import plot_training_curve
from avatar4d.training.losses import (
    LossConfig,
    LossTerms,
    face_depth_loss,
    head_prior_loss,
    landmark_depth_loss,
    patch_loss,
    psnr_from_mse,
    training_loss,
)
from avatar4d.training.occupancy import frame_density, rendering_occupancy
from avatar4d.training.pose_refinement import PoseRefinement
from avatar4d.training.presets import PREVIEW
from avatar4d.training.probe import HeldoutProbe, plateau, probe_heldout
from avatar4d.training.schedule import lr_factor_at, resolution_at

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Run:
    """The objects of one training run."""

    config: TrainConfig
    dataset: PreparedDataset
    device: torch.device
    field: HeadField
    occupancy: OccupancyGrid
    upsampler: Upsampler | None
    perceptual: LPIPS | None
    """The patch loss's LPIPS network (None without an upsampler, or where its weights cannot be obtained)."""
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    sampler: RaySampler
    images: dict[int, FrameImages]
    """The training frames at each resolution of the schedule (and at the dataset's, with an upsampler)."""
    codes: torch.Tensor
    """(F_train, K) training frames' expression codes, on the run's device."""
    landmarks: LandmarkTargets | None
    """Where the face model puts the training frames' landmarks (None without the landmark depth loss)."""
    face_depth: FaceDepthTargets | None
    """The face model's surface in the training frames, at ``config.face_depth_size`` px (None without the face
    depth loss)."""
    head_core: Ellipsoid
    """Where the head surely is though no view shows it (for the head prior loss)."""
    probe: HeldoutProbe
    generator: torch.Generator
    """CPU generator of every random draw (so a run is reproducible on any device)."""
    pose: PoseRefinement | None
    """The training frames' pose corrections (None where ``config.pose`` is off)."""
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
            changed = differences(stored, to_dict(config))
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
            run.state = load_checkpoint(checkpoint, _modules(run), run.optimizer)
            run.generator.set_state(run.state.generator_state)
            note(f"resuming from step {run.state.step} of {config.schedule.iterations}")
        _train_loop(run, work_dir)
        cell_m = min(config.render_occupancy_cell_m, config.occupancy_cell_m)
        run.occupancy = rendering_occupancy(run.field, run.codes, _latents(run), config.occupancy_threshold, cell_m)
        scene = _scene_plate(run)
        save_avatar(work_dir, config=config, geometry=run.field.geometry, field=run.field, occupancy=run.occupancy,
                    upsampler=run.upsampler, dataset=dataset, scene=scene, image_size=config.schedule.resolutions[-1])
        log = {"machine": machine_description(), "device": str(run.device), "training_seconds": run.state.elapsed_s}
        write_json_atomic(work_dir / "training_log.json", {**log, "log": run.state.log})
        plot_training_curve(run.state.log, work_dir / "training_curve.png")
        (work_dir / CHECKPOINT).unlink(missing_ok=True)
    last = next((e for e in reversed(run.state.log) if "heldout_psnr" in e), None)
    note(f"avatar ready: {out_dir} ({run.state.step} steps in {run.state.elapsed_s:.0f} s of training"
         + (f"; held-out PSNR {last['heldout_psnr']:.2f} dB on {len(run.probe.frames)} frames" if last else "") + ")")
    return out_dir


def _build_run(dataset: PreparedDataset, config: TrainConfig) -> Run:
    device = pick_device(config.device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    model = dataset.face_model
    geometry = field_geometry(model.template, config.field)
    train_indices = dataset.train_indices
    head = HeadField(config.field, geometry, model.num_components, len(train_indices), model.template, generator,
                     model.basis.stddev, model.basis.scaled)
    occupancy = OccupancyGrid.with_cell_size(head.box_min, head.box_max, config.occupancy_cell_m)
    groups = [
        {"name": "canonical", "params": head.canonical_tables(), "lr": config.optimizer.canonical},
        {"name": "decoder", "params": list(head.decoder.parameters()), "lr": config.optimizer.decoder},
        {"name": "latent", "params": [head.latents], "lr": config.optimizer.latent},
    ]
    if head.expression is not None:
        groups.insert(1, {"name": "motion", "params": [head.expression.tables], "lr": config.optimizer.motion})
    pose = PoseRefinement(len(train_indices)) if config.pose.enabled else None
    groups += pose.parameter_groups(config.pose) if pose is not None else []
    upsampler, perceptual = _build_upsampler(config, generator)
    if upsampler is not None:
        groups.append({"name": "upsampler", "params": list(upsampler.parameters()), "lr": config.optimizer.upsampler})
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)  # one pass over the tables
    sizes = sorted(set(config.schedule.resolutions) | ({dataset.size} if upsampler is not None else set()))
    images = load_frame_images(dataset, train_indices, sizes, config.importance)
    poses = torch.from_numpy(dataset.tracking.camera_from_head[train_indices]).float()
    sampler = RaySampler(poses, config.frames_per_batch, config.rays_per_frame)
    codes = torch.from_numpy(dataset.tracking.expression[train_indices]).float().to(device)
    landmarks = (landmark_targets(dataset, train_indices)
                 if config.loss.landmark_depth > 0 and config.landmark_rays_per_frame > 0 else None)
    face_depth = (face_depth_targets(dataset, train_indices, config.face_depth_size)
                  if config.loss.face_depth > 0 and config.face_depth_rays_per_frame > 0 else None)
    for module in (m for m in (head, occupancy, upsampler, perceptual, pose) if m is not None):
        module.to(device)
    return Run(config=config, dataset=dataset, device=device, field=head, occupancy=occupancy, upsampler=upsampler,
               perceptual=perceptual, optimizer=optimizer, base_lrs=[g["lr"] for g in groups], sampler=sampler,
               images=images, codes=codes, landmarks=landmarks, face_depth=face_depth,
               head_core=head_core(model.template),
               probe=HeldoutProbe.from_dataset(dataset, config.schedule.resolutions[-1], config.heldout_probe_frames),
               generator=generator, pose=pose)


def _build_upsampler(config: TrainConfig, generator: torch.Generator) -> tuple[Upsampler | None, LPIPS | None]:
    """The upsampler (seeded from ``generator``, like the field) and the LPIPS network of its patch loss."""
    if not config.upsampler.enabled:
        return None, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        upsampler = Upsampler(config.upsampler, config.field.decoder.feature_channels)
    perceptual = None
    if config.loss.patch_perceptual > 0:
        perceptual, reason = load_lpips()
        if perceptual is None:
            note(f"training without the perceptual patch loss: {reason}")
    return upsampler, perceptual


def _modules(run: Run) -> dict[str, torch.nn.Module]:
    """What a checkpoint holds besides the optimizer."""
    modules = {"field": run.field, "occupancy": run.occupancy, "upsampler": run.upsampler, "pose": run.pose}
    return {name: module for name, module in modules.items() if module is not None}


def _background(run: Run, background: torch.Tensor) -> torch.Tensor:
    return background if run.config.use_background else torch.zeros_like(background)


def _next_probe_after(elapsed_s: float, every_s: float) -> float:
    """The first multiple of ``every_s`` after ``elapsed_s`` (never, for ``every_s`` <= 0)."""
    return (math.floor(elapsed_s / every_s) + 1) * every_s if every_s > 0 else math.inf


@dataclass
class _Step:
    """What one training step produced, for the log and the progress line."""

    size: int
    lr_factor: float
    terms: LossTerms
    output: RenderOutput


def _train_loop(run: Run, work_dir: Path) -> None:
    config = run.config
    total = config.schedule.iterations
    evaluation_steps = {int(round(total * (i + 1) / config.evaluations)) for i in range(config.evaluations)}
    loss_config = dataclasses.replace(config.loss, mask=config.loss.mask if config.use_background else 0.0)
    next_probe = _next_probe_after(run.state.elapsed_s, config.probe_every_s)
    last_checkpoint = time.perf_counter()
    with Progress("train", total, "it") as progress:
        progress.update(run.state.step)
        while run.state.step < total and not _time_is_up(run):
            started = time.perf_counter()
            step = _train_step(run, loss_config)
            run.state.elapsed_s += time.perf_counter() - started
            _log_step(run, step, progress)
            preview = run.state.step in evaluation_steps
            if preview or run.state.elapsed_s >= next_probe:
                strip = work_dir / "previews" / f"step_{run.state.step:06d}.png" if preview else None
                _probe(run, strip, progress)
                next_probe = _next_probe_after(run.state.elapsed_s, config.probe_every_s)
                if _plateaued(run):
                    break
            due = (time.perf_counter() - last_checkpoint >= config.checkpoint_every_s
                   or (config.checkpoint_every_steps and run.state.step % config.checkpoint_every_steps == 0))
            if due and run.state.step < total:
                run.state.generator_state = run.generator.get_state()
                save_checkpoint(work_dir / CHECKPOINT, _modules(run), run.optimizer, run.state, to_dict(config))
                last_checkpoint = time.perf_counter()


def _time_is_up(run: Run) -> bool:
    limit = run.config.time_limit_s
    if limit <= 0 or run.state.elapsed_s < limit:
        return False
    run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3),
                          "stopped": f"time limit of {limit:g} s"})
    note(f"stopping at the time limit after {run.state.step} of {run.config.schedule.iterations} steps")
    return True


def _plateaued(run: Run) -> bool:
    """Held-out quality has stopped improving (``config.plateau_s``): log why and say so."""
    config = run.config
    if config.plateau_s <= 0:
        return False
    final_step = int(round(config.schedule.resolution_starts[-1] * config.schedule.iterations))
    reason = plateau(run.state.log, run.state.elapsed_s, config.plateau_s, config.plateau_gain_db, final_step)
    if reason is None:
        return False
    run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3), "stopped": reason})
    note(f"stopping after {run.state.step} of {config.schedule.iterations} steps: {reason}")
    return True


@dataclass
class _StepRays:
    """A step's rays: the batch's, then the landmarks' (for the landmark depth loss), then the face surface's (for the
    face depth loss), then the patch's (for the upsampler)."""

    rays: RayBatch
    """All of them, on the run's device (targets are the batch's only)."""
    colour: slice
    landmarks: slice
    landmark_distance: torch.Tensor | None
    face_depth: slice
    face_depth_distance: torch.Tensor | None
    """(R_d,) the face surface's distance along each face depth ray, metres, on the run's device."""
    patch: slice
    patch_targets: PatchRays | None


def _step_rays(run: Run, images: FrameImages, batch: RayBatch) -> _StepRays:
    """The batch's rays with the landmark rays, the face depth rays and the patch rays appended (each behind a black
    backdrop)."""
    parts, distance, surface_distance, patch = [batch], None, None, None
    if run.landmarks is not None:
        landmark_rays = run.sampler.sample_landmarks(run.landmarks, images.camera, batch.frame_rows,
                                                     run.config.landmark_rays_per_frame, run.generator)
        parts.append(landmark_rays)
        distance = landmark_rays.distance.to(run.device)
    landmark_end = sum(part.origins.shape[0] for part in parts)
    if run.face_depth is not None:
        surface_rays = sample_face_depth(run.face_depth, run.sampler.head_from_camera, batch.frame_rows,
                                         run.config.face_depth_rays_per_frame, run.generator)
        parts.append(surface_rays)
        surface_distance = surface_rays.distance.to(run.device)
    face_depth_end = sum(part.origins.shape[0] for part in parts)
    if run.upsampler is not None:
        patch = run.sampler.sample_patch(run.images[run.dataset.size], batch.frame_rows, run.config.patch_blocks,
                                         run.config.upsampler.factor, run.generator).to(run.device)
        if run.config.patch_trains_field:
            parts.append(patch)
    rays = dataclasses.replace(
        batch, origins=torch.cat([part.origins for part in parts]),
        directions=torch.cat([part.directions for part in parts]),
        frame_ids=torch.cat([part.frame_ids for part in parts]),
        background=torch.cat([batch.background] + [torch.zeros_like(part.origins) for part in parts[1:]])
    ).to(run.device)
    if run.pose is not None and run.state.step >= run.config.pose.start * run.config.schedule.iterations:
        rays = run.pose.correct(rays, rays.frame_rows)
        patch = run.pose.correct(patch, rays.frame_rows) if patch is not None else None
    return _StepRays(rays=rays, colour=slice(0, batch.num_rays),
                     landmarks=slice(batch.num_rays, landmark_end), landmark_distance=distance,
                     face_depth=slice(landmark_end, face_depth_end), face_depth_distance=surface_distance,
                     patch=slice(face_depth_end, None), patch_targets=patch)


def _upsampled_patch_loss(run: Run, output: RenderOutput, rays: _StepRays, frames, occupancy: OccupancyGrid | None,
                          loss_config: LossConfig) -> torch.Tensor:
    """Upsample the patch's rays and score them against the full-resolution patch. Where the patch does not train
    the field, its rays are rendered here without gradients (as at render time) and only the upsampler learns."""
    target = rays.patch_targets
    blocks = target.blocks
    patch = rays.patch
    if not run.config.patch_trains_field:
        with torch.no_grad():
            output = render_rays(run.field, target.origins, target.directions, target.frame_ids, frames.detached(),
                                 torch.zeros_like(target.origins), run.config.renderer, occupancy)
        patch = slice(None)

    def planes(values: torch.Tensor) -> torch.Tensor:
        return values.reshape(1, blocks, blocks, -1).permute(0, 3, 1, 2)

    features = planes(output.features[patch]) if output.features is not None else None
    image = run.upsampler(planes(output.rgb[patch]), planes(output.opacity[patch]), features, target.background)
    return patch_loss(image.rgb, target.rgb, image.opacity, target.opacity, loss_config, run.perceptual, run.generator)


def _train_step(run: Run, loss_config: LossConfig) -> _Step:
    """One optimiser step on a fresh batch (and an occupancy refresh when due)."""
    config = run.config
    step = run.state.step
    size = resolution_at(step, config.schedule)
    images = run.images[size]
    factor = lr_factor_at(step, config.schedule)
    for group, base in zip(run.optimizer.param_groups, run.base_lrs):
        group["lr"] = base * factor
    batch = run.sampler.sample(images, run.generator)
    step_rays = _step_rays(run, images, batch)
    rays, colour = step_rays.rays, step_rays.colour
    batch_latents, codes = run.field.latents[rays.frame_rows], run.codes[rays.frame_rows]
    if config.code_noise > 0:  # nearby expressions must look alike: the grids cannot key on a frame's exact code
        codes = codes + config.code_noise * torch.randn(codes.shape, generator=run.generator).to(codes.device)
    frames = run.field.prepare(codes, batch_latents)
    skip = step >= config.occupancy_warmup
    output = render_rays(run.field, rays.origins, rays.directions, rays.frame_ids, frames,
                         _background(run, rays.background), config.renderer, run.occupancy if skip else None,
                         run.generator)
    depth = None
    if step_rays.landmark_distance is not None:
        extra = step_rays.landmarks
        depth = landmark_depth_loss(output.depth[extra], output.depth_second_moment[extra], output.opacity[extra],
                                    step_rays.landmark_distance, config.loss.landmark_depth_sigma_m)
    surface = None
    if step_rays.face_depth_distance is not None and step_rays.face_depth_distance.numel() > 0:
        extra = step_rays.face_depth
        surface = face_depth_loss(output.depth[extra], output.opacity[extra], step_rays.face_depth_distance,
                                  config.loss.face_depth_sigma_m, output.depth_second_moment[extra],
                                  config.loss.face_depth_spread)
    prior = None  # the head prior: the core's points, spread over the batch's frames
    if config.loss.head_prior > 0:
        points = run.head_core.sample(config.loss.head_prior_points, run.generator).to(run.device)
        ids = torch.arange(len(points), device=run.device) % len(codes)
        prior = head_prior_loss(run.field.density(points, ids, frames))
    patch = (_upsampled_patch_loss(run, output, step_rays, frames, run.occupancy if skip else None, loss_config)
             if step_rays.patch_targets else None)
    terms = training_loss(output.rgb[colour], rays.rgb, output.opacity[colour], rays.opacity,
                          run.field.total_variation(config.loss.tv_samples, run.generator),
                          batch_latents if config.field.use_latent_code else None, loss_config, depth, patch, surface,
                          output.distortion[colour] if output.distortion is not None else None, prior)
    run.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    run.optimizer.step()
    if run.pose is not None:
        run.pose.center_()
    run.state.step += 1
    if run.state.step % config.occupancy_every == 0:
        _update_occupancy(run)
    return _Step(size=size, lr_factor=factor, terms=terms, output=output)


def _log_step(run: Run, step: _Step, progress: Progress) -> None:
    psnr = psnr_from_mse(step.terms.rgb)
    losses = step.terms.as_floats()
    progress.set(loss=losses["total"], psnr=psnr, res=step.size, occ=f"{run.occupancy.occupied_fraction:.2f}")
    progress.update()
    if run.state.step % 10 == 0 or run.state.step == run.config.schedule.iterations:
        run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3),
                              "resolution": step.size, "lr_factor": step.lr_factor, "psnr": psnr,
                              "samples_per_ray": step.output.samples_evaluated / step.output.opacity.shape[0],
                              "occupied": run.occupancy.occupied_fraction, **losses,
                              **(dict(zip(("pose_deg", "pose_mm"), run.pose.magnitudes())) if run.pose else {})})


def _probe(run: Run, strip: Path | None, progress: Progress) -> None:
    """Score the held-out probe (its time is not training time) and log it."""
    size = run.probe.size
    images = run.images[size]
    latent = run.field.mean_latent() if run.config.field.use_latent_code else None
    background = _background(run, images.background).reshape(size, size, 3)
    scores = probe_heldout(run.probe, run.field, run.occupancy, run.config.renderer, images.camera, background,
                           latent, strip)
    run.state.log.append({"step": run.state.step, "time_s": round(run.state.elapsed_s, 3),
                          **{f"heldout_{k}": v for k, v in scores.items()}})
    progress.set(heldout=scores["psnr"])


def _latents(run: Run) -> torch.Tensor | None:
    return run.field.latents if run.config.field.use_latent_code else None


@torch.no_grad()
def _update_occupancy(run: Run) -> None:
    row = int(torch.randint(run.codes.shape[0], (1,), generator=run.generator))
    latents = _latents(run)
    density_at = frame_density(run.field, run.codes[row], latents[row] if latents is not None else None)
    run.occupancy.update(density_at, run.config.occupancy_threshold, generator=run.generator)


def _scene_plate(run: Run) -> np.ndarray:
    """(S, S, 3) uint8 scene plate at the dataset's resolution (from the full-size training images if loaded, else
    resized up from the largest training resolution)."""
    largest = max(run.images)
    plate = (run.images[largest].background.reshape(largest, largest, 3).numpy() * 255).round().astype(np.uint8)
    return resize_square(plate, run.dataset.size)
