"""Every tensor the render path makes is on the field's device. This machine has no GPU, so two checks stand in for
one: (1) every tensor factory called while rendering names its device (or copies one from a tensor that has it), and
(2) with the field on PyTorch's ``meta`` device, rendering gets as far as the first computation that needs real data
without ever mixing devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from avatar4d.field.expression_grids import ExpressionGridsConfig
from avatar4d.field.head_field import HeadField, HeadFieldConfig, field_geometry
from avatar4d.field.voxel_grid import VoxelGridConfig
from avatar4d.geometry.camera import PinholeCamera
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import RendererConfig, render_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.linspace, torch.rand,
             torch.randn, torch.randint, torch.tensor, torch.eye, torch.as_tensor, torch.from_numpy}


class FactoryRecorder(TorchFunctionMode):
    """Records the tensor factories called without a device (``from_numpy`` always makes a CPU tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.without_device: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and (func is torch.from_numpy or kwargs.get("device") is None):
            self.without_device.append(func.__name__)
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def small_field(face_template) -> HeadField:
    config = HeadFieldConfig(canonical=VoxelGridConfig(voxel_size_m=0.02), expression=ExpressionGridsConfig(
        voxel_size_m=0.03))
    return HeadField(config, field_geometry(face_template, config), num_components=32, num_frames=2,
                     template=face_template, generator=torch.Generator().manual_seed(0)).eval()


def render_inputs(field: HeadField, device: str):
    camera = PinholeCamera(40.0, 40.0, 16.0, 16.0, 32, 32)
    pose = torch.eye(4, device=device)
    pose[2, 3] = 0.45
    pose[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], device=device))
    occupancy = OccupancyGrid(field.box_min, field.box_max, (6, 7, 6)).to(device)
    code = torch.zeros(32, device=device)
    latent = field.mean_latent()
    background = torch.full((32, 32, 3), 0.5, device=device)
    return camera, pose, code, latent, background, occupancy


def test_render_image_names_the_device_of_every_tensor_it_makes(small_field):
    camera, pose, code, latent, background, occupancy = render_inputs(small_field, "cpu")
    recorder = FactoryRecorder()
    with recorder:
        out = render_image(small_field, camera, pose, code, latent, background, RendererConfig(chunk_rays=300),
                           occupancy)
    assert recorder.without_device == []
    assert out.rgb.shape == (32 * 32, 3)


def test_occupancy_update_names_the_device_of_every_tensor_it_makes(small_field):
    occupancy = OccupancyGrid(small_field.box_min, small_field.box_max, (6, 7, 6))
    frames = small_field.prepare(torch.zeros(1, 32), small_field.mean_latent()[None])
    recorder = FactoryRecorder()
    with recorder:
        occupancy.update(lambda p: small_field.density(p, p.new_zeros(p.shape[0], dtype=torch.long), frames), 1.0,
                         generator=torch.Generator().manual_seed(0))
    assert recorder.without_device == []


def test_render_image_on_the_meta_device_never_mixes_devices(small_field):
    meta = HeadField(small_field.config, small_field.geometry, 32, 2, np.zeros((478, 3))).to("meta")
    camera, pose, code, latent, background, occupancy = render_inputs(meta, "meta")
    with pytest.raises((NotImplementedError, RuntimeError)) as failure:
        render_image(meta, camera, pose, code, latent, background, RendererConfig(), occupancy)
    # data-dependent steps (which samples are occupied) cannot run without data; a tensor made on the CPU would
    # have stopped it earlier, with a message naming both devices
    assert "cpu" not in str(failure.value).lower(), str(failure.value)
