"""The named training presets: ``preview`` (CPU, about 128 px, minutes on 2 cores) and ``quality`` (GPU, 512 px).

Vary them with ``dataclasses.replace`` (or :func:`get`'s overrides); there is no config file per experiment.
"""

from __future__ import annotations

import dataclasses

from avatar4d.field.expression_grids import ExpressionGridsConfig
from avatar4d.field.face_warp import FaceWarpConfig
from avatar4d.field.head_field import HeadFieldConfig
from avatar4d.field.heads import DecoderConfig
from avatar4d.field.voxel_grid import VoxelGridConfig
from avatar4d.render.renderer import RendererConfig
from avatar4d.render.upsampler import UpsamplerConfig
from avatar4d.training.config import TrainConfig
from avatar4d.training.losses import LossConfig
from avatar4d.training.schedule import ScheduleConfig

PREVIEW = TrainConfig(
    field=HeadFieldConfig(canonical=VoxelGridConfig(voxel_size_m=0.005, channels=12),
                          # codes weighted by how far each component moves the face, and noised in training: on
                          # five shared videos LPIPS lower on all five, train-vs-held-out gap 0.2-1.0 dB smaller
                          expression=ExpressionGridsConfig(voxel_size_m=0.008, channels=8, code_weight_power=1.0),
                          decoder=DecoderConfig(hidden=64, layers=1, feature_channels=8),
                          # the landmarks' motion moves the face: on five shared videos face PSNR +0.1 to +0.7 dB
                          # on all five, LPIPS lower on four (+0.004 on the fifth), 3-9 % more training time
                          warp=FaceWarpConfig(enabled=True)),
    renderer=RendererConfig(samples_per_ray=48),
    upsampler=UpsamplerConfig(factor=4),
    patch_trains_field=False,
    schedule=ScheduleConfig(iterations=1500, resolutions=(64, 128), resolution_starts=(0.0, 0.3)),
    frames_per_batch=4,
    rays_per_frame=1024,
    occupancy_warmup=40,
    code_noise=0.25,
    loss=LossConfig(face_depth=0.01),  # the face's mesh 2.6 mm from the tracked face instead of 4-5 (two videos)
    plateau_s=60.0,  # replayed on five shared videos' full runs: 0-42 % less training, held-out probe within 0.11 dB
)

QUALITY = TrainConfig(
    field=HeadFieldConfig(canonical=VoxelGridConfig(voxel_size_m=0.0025, channels=16),
                          expression=ExpressionGridsConfig(voxel_size_m=0.005, channels=8)),
    renderer=RendererConfig(samples_per_ray=128, chunk_rays=65536),
    schedule=ScheduleConfig(iterations=10000, resolutions=(256, 512), resolution_starts=(0.0, 0.6)),
    frames_per_batch=8,
    rays_per_frame=2048,
    occupancy_cell_m=0.005,
    checkpoint_every_s=120.0,
)

PRESETS = {"preview": PREVIEW, "quality": QUALITY}


def get(name: str, *, iterations: int | None = None, image_size: int | None = None, seed: int | None = None,
        device: str | None = None) -> TrainConfig:
    """A preset by name, with the common overrides applied.

    Args:
        image_size: the final training resolution (earlier resolutions of the schedule scale with it).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    schedule = config.schedule
    if iterations is not None:
        schedule = dataclasses.replace(schedule, iterations=iterations)
    if image_size is not None:
        ratio = image_size / schedule.resolutions[-1]
        schedule = dataclasses.replace(schedule, resolutions=tuple(max(16, int(round(r * ratio)))
                                                                   for r in schedule.resolutions))
    config = dataclasses.replace(config, schedule=schedule)
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    if device is not None:
        config = dataclasses.replace(config, device=device)
    return config
