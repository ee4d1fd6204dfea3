"""The training run's configuration: what ``avatar/config.json`` records. It imports only the components' configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from avatar4d.dataset.sampling import ImportanceConfig
from avatar4d.field.head_field import HeadFieldConfig
from avatar4d.render.renderer import RendererConfig
from avatar4d.render.upsampler import UpsamplerConfig
from avatar4d.training.losses import LossConfig
from avatar4d.training.pose_refinement import PoseRefinementConfig
from avatar4d.training.schedule import ScheduleConfig


@dataclass(frozen=True)
class OptimizerConfig:
    """Adam learning rates per parameter group (all decay together, see the schedule)."""

    canonical: float = 0.05
    motion: float = 0.02
    decoder: float = 3e-3
    latent: float = 3e-3
    upsampler: float = 2e-3


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json`` in the avatar)."""

    field: HeadFieldConfig = dataclasses.field(default_factory=HeadFieldConfig)
    renderer: RendererConfig = dataclasses.field(default_factory=RendererConfig)
    upsampler: UpsamplerConfig = dataclasses.field(default_factory=UpsamplerConfig)
    """With a factor above 1, a 2D network after volume rendering, trained on full-resolution patches (it also reads
    the field's ``field.decoder.feature_channels``)."""
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    importance: ImportanceConfig = dataclasses.field(default_factory=ImportanceConfig)
    pose: PoseRefinementConfig = dataclasses.field(default_factory=PoseRefinementConfig)
    """Per-frame corrections of the tracked head poses, learned from the pixels."""
    frames_per_batch: int = 4
    """Frames per batch (their expression grids are mixed once each)."""
    rays_per_frame: int = 1024
    code_noise: float = 0.0
    """Standard deviation of Gaussian noise added to each batch frame's expression code (unit-variance components,
    before the field's code weights), a fresh draw every step: smoothness across expressions (0 = off)."""
    landmark_rays_per_frame: int = 64
    """Extra rays per frame through tracked landmarks, for the landmark depth loss."""
    face_depth_rays_per_frame: int = 256
    """Extra rays per frame through the face model's surface rasterised into the frame, for the face depth loss
    (drawn only where ``loss.face_depth`` > 0)."""
    face_depth_size: int = 128
    """Pixels per side at which the face depth targets are rasterised (their rays pass through these pixels'
    centres, whatever the schedule's resolution)."""
    patch_blocks: int = 32
    """Rays per side of the full-resolution training patch (with an upsampler; the patch is ``patch_blocks *
    upsampler.factor`` pixels square)."""
    patch_trains_field: bool = True
    """The patch loss trains the field too (end to end, HeadNeRF's way; its feature channels learn only so); off,
    the patch's rays are rendered without gradients and only the upsampler learns from it."""
    use_background: bool = True
    """Composite the scene plate at the end of every ray and fit opacity to the head mask (off: black backdrop,
    no mask loss; the field must explain everything)."""
    occupancy_cell_m: float = 0.01
    """Edge of an occupancy cell during training, metres."""
    render_occupancy_cell_m: float = 0.005
    """Edge of a cell of the occupancy grid saved with the avatar, for rendering (refined once, at the end of
    training: 5 mm cells leave a fifth fewer samples to evaluate than 1 cm ones, for the same picture)."""
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
    plateau_s: float = 0.0
    """Stop once the held-out probe's PSNR has not risen by ``plateau_gain_db`` within this many seconds of training
    (0: never; the preview preset: 60); it needs probes (the spread ``evaluations`` or ``probe_every_s``) and counts
    those at the final resolution only. The probe's frames
    are held-out frames, so this stop is chosen on frames that ``evaluate`` scores too."""
    plateau_gain_db: float = 0.1
    heldout_probe_frames: int = 4
