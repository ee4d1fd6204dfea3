"""Checkpoints: saving then loading restores modules, optimizer moments and the random generator bit for bit (so a
resumed run continues exactly); anything that is not a checkpoint of this version and model is an AvatarError."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from avatar4d.errors import AvatarError
from avatar4d.render.marching import OccupancyGrid
from avatar4d.training.checkpoint import TrainingState, load_checkpoint, read_checkpoint_config, save_checkpoint

CONFIG = {"seed": 3, "schedule": {"iterations": 10, "resolutions": [32, 64]}, "field": {"latent_dim": 32}}


def make_run(seed: int, hidden: int = 5):
    """Small stand-ins for the trainer's modules: parameters in two Adam groups, float and bool buffers."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))
    occupancy = OccupancyGrid(torch.zeros(3), torch.ones(3), (3, 4, 2))
    optimizer = torch.optim.Adam([{"name": "first", "params": list(model[0].parameters()), "lr": 0.05},
                                  {"name": "second", "params": list(model[2].parameters()), "lr": 3e-3}],
                                 betas=(0.9, 0.99), eps=1e-15)
    return model, occupancy, optimizer


def train_steps(model, optimizer, generator, steps):
    for _ in range(steps):
        x = torch.randn(8, 4, generator=generator)
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.fixture
def saved(tmp_path):
    model, occupancy, optimizer = make_run(0)
    generator = torch.Generator().manual_seed(7)
    train_steps(model, optimizer, generator, 3)
    occupancy.update(lambda p: p[:, 0] * 10, threshold=4.0, generator=generator)
    optimizer.param_groups[1]["lr"] = 1.234e-3  # decayed by the schedule
    state = TrainingState(step=3, generator_state=generator.get_state(), log=[{"step": 3, "psnr": 12.5}],
                          elapsed_s=1.25)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"field": model, "occupancy": occupancy}, optimizer, state, CONFIG)
    return path, model, occupancy, optimizer, generator


def test_save_then_load_restores_everything_bit_exactly(saved):
    path, model, occupancy, optimizer, generator = saved
    model2, occupancy2, optimizer2 = make_run(1)
    state = load_checkpoint(path, {"field": model2, "occupancy": occupancy2}, optimizer2)
    for key, value in {**model.state_dict(), **{f"occ.{k}": v for k, v in occupancy.state_dict().items()}}.items():
        other = model2.state_dict()[key] if not key.startswith("occ.") else occupancy2.state_dict()[key[4:]]
        assert other.dtype == value.dtype and torch.equal(other, value), key
    for p, p2 in zip(model.parameters(), model2.parameters()):
        moments, moments2 = optimizer.state[p], optimizer2.state[p2]
        assert set(moments) == set(moments2) == {"step", "exp_avg", "exp_avg_sq"}
        for name in moments:
            assert torch.equal(moments[name], moments2[name]), name
    assert [g["lr"] for g in optimizer2.param_groups] == [0.05, 1.234e-3]
    assert [g["name"] for g in optimizer2.param_groups] == ["first", "second"]
    assert torch.equal(state.generator_state, generator.get_state())
    assert state.step == 3 and state.log == [{"step": 3, "psnr": 12.5}] and state.elapsed_s == 1.25
    assert read_checkpoint_config(path) == CONFIG


def test_a_loaded_run_continues_exactly_like_the_original(saved):
    path, model, occupancy, optimizer, generator = saved
    model2, occupancy2, optimizer2 = make_run(1)
    state = load_checkpoint(path, {"field": model2, "occupancy": occupancy2}, optimizer2)
    generator2 = torch.Generator().set_state(state.generator_state)
    train_steps(model, optimizer, generator, 4)
    train_steps(model2, optimizer2, generator2, 4)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_a_file_of_another_format_is_refused(tmp_path):
    model, occupancy, optimizer = make_run(0)
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "avatar4d.avatar", "version": "1"})
    with pytest.raises(AvatarError, match="not an avatar4d checkpoint"):
        load_checkpoint(path, {"field": model}, optimizer)


def test_a_checkpoint_of_another_version_is_refused(saved, tmp_path):
    path = saved[0]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    metadata["version"] = "99"
    other = tmp_path / "v99.safetensors"
    save_file(tensors, str(other), metadata=metadata)
    model, occupancy, optimizer = make_run(0)
    with pytest.raises(AvatarError, match="not an avatar4d checkpoint of this version"):
        load_checkpoint(other, {"field": model, "occupancy": occupancy}, optimizer)


def test_a_safetensors_file_without_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    model, occupancy, optimizer = make_run(0)
    with pytest.raises(AvatarError):
        load_checkpoint(path, {"field": model}, optimizer)
    with pytest.raises(AvatarError):
        read_checkpoint_config(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 20, b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_a_damaged_file_is_refused(tmp_path, content):
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(content)
    model, occupancy, optimizer = make_run(0)
    with pytest.raises(AvatarError, match="checkpoint"):
        load_checkpoint(path, {"field": model}, optimizer)
    with pytest.raises(AvatarError, match="checkpoint"):
        read_checkpoint_config(path)


def test_a_missing_file_is_refused(tmp_path):
    model, occupancy, optimizer = make_run(0)
    with pytest.raises(AvatarError, match="cannot read the checkpoint"):
        load_checkpoint(tmp_path / "none.safetensors", {"field": model}, optimizer)


def test_a_checkpoint_of_another_model_is_refused(saved):
    path = saved[0]
    model, occupancy, optimizer = make_run(0, hidden=6)
    with pytest.raises(AvatarError, match="does not match this model"):
        load_checkpoint(path, {"field": model, "occupancy": occupancy}, optimizer)
    other_grid = OccupancyGrid(torch.zeros(3), torch.ones(3), (2, 2, 2))
    model, _, optimizer = make_run(0)
    with pytest.raises(AvatarError, match="does not match this model"):
        load_checkpoint(path, {"field": model, "occupancy": other_grid}, optimizer)


def test_checkpoint_metadata_is_plain_json(saved):
    from safetensors import safe_open

    with safe_open(str(saved[0]), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "avatar4d.checkpoint" and metadata["version"] == "1"
    assert json.loads(metadata["config"]) == CONFIG
    assert json.loads(metadata["log"]) == [{"step": 3, "psnr": 12.5}]
