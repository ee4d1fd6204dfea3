"""Training on the real sample clip (short runs on one CPU thread): the loss falls and held-out frames beat
do-nothing baselines, a run killed after a checkpoint resumes to exactly the model of an unbroken run, every output
is written, a saved avatar renders the pixels of the field it was saved from, and bad input is refused with errors
that say what is wrong."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from avatar4d.avatar import load_avatar, save_avatar
from avatar4d.configs import to_dict
from avatar4d.dataset.layout import load_dataset
from avatar4d.errors import AvatarError, DatasetError
from avatar4d.evaluation.holdout import heldout_frames
from avatar4d.evaluation.metrics import psnr
from avatar4d.field.head_field import HeadField, field_geometry
from avatar4d.render.marching import OccupancyGrid
from avatar4d.render.renderer import render_image
from avatar4d.render.upsampler import Upsampler, render_upsampled
from avatar4d.training.checkpoint import TrainingState, save_checkpoint
from avatar4d.geometry.triangles import point_mesh_distance
from avatar4d.tracking.triangulation import face_triangles
from avatar4d.training.trainer import CHECKPOINT, _build_run, _step_rays, _train_step, train

pytestmark = pytest.mark.slow


# --- a short run learns ------------------------------------------------------------------------------------------


def test_a_short_run_lowers_the_loss(short_trained_avatar, short_train_config):
    log = json.loads((short_trained_avatar / "training_log.json").read_text())["log"]
    steps = [entry for entry in log if "total" in entry]
    numbers = [entry["step"] for entry in steps]
    assert len(steps) >= 3 and numbers == sorted(set(numbers))
    assert numbers[0] <= 10 and numbers[-1] == short_train_config.schedule.iterations
    assert steps[-1]["total"] < 0.6 * steps[0]["total"]
    assert steps[-1]["rgb"] < 0.6 * steps[0]["rgb"]
    assert steps[-1]["psnr"] > steps[0]["psnr"] + 2.0
    resolutions = list(short_train_config.schedule.resolutions)
    assert steps[0]["resolution"] == resolutions[0] and steps[-1]["resolution"] == resolutions[-1]
    heldout = [entry["heldout_psnr"] for entry in log if "heldout_psnr" in entry]
    assert len(heldout) == short_train_config.evaluations


def test_held_out_frames_beat_a_constant_colour_and_the_backdrop_alone(short_trained_avatar, prepared_dataset):
    avatar = load_avatar(short_trained_avatar)
    dataset = load_dataset(prepared_dataset)
    size = avatar.image_size
    assert size == 64
    training_pixels = np.concatenate([
        cv2.resize(dataset.load_frame(int(i)), (size, size), interpolation=cv2.INTER_AREA).reshape(-1, 3)
        for i in dataset.train_indices])
    mean_colour = torch.from_numpy(training_pixels.astype(np.float64).mean(0) / 255.0).float()
    frames = heldout_frames(dataset, size)
    assert len(frames) == len(dataset.heldout_indices) > 0
    rendered, constant, backdrop = [], [], []
    for frame in frames:
        image = avatar.render(frame.camera_from_head, frame.code, size=size).rgb.reshape(size, size, 3).clamp(0, 1)
        rendered.append(psnr(image, frame.rgb))
        constant.append(psnr(mean_colour.expand(size, size, 3), frame.rgb))
        backdrop.append(psnr(avatar.scene_at(size), frame.rgb))
    assert np.mean(rendered) > np.mean(constant) + 3.0
    assert np.mean(rendered) > np.mean(backdrop) + 3.0
    assert min(r - c for r, c in zip(rendered, constant)) > 1.0  # on every held-out frame


# --- outputs -----------------------------------------------------------------------------------------------------


def test_training_writes_every_output_and_leaves_no_checkpoint(short_trained_avatar, short_train_config):
    root = short_trained_avatar
    for name in ("config.json", "model.safetensors", "face_model.safetensors", "frames.safetensors", "scene.png",
                 "training_log.json", "training_curve.png"):
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    assert not (root / CHECKPOINT).exists()
    assert not any("checkpoint" in path.name for path in root.rglob("*"))
    assert not root.with_name(root.name + ".partial").exists()
    previews = sorted(p.name for p in (root / "previews").iterdir())
    assert len(previews) == short_train_config.evaluations
    assert previews[-1] == f"step_{short_train_config.schedule.iterations:06d}.png"
    preview = cv2.imread(str(root / "previews" / previews[-1]))
    probes = short_train_config.heldout_probe_frames
    assert preview.shape == (probes * 64, 3 * 64, 3)  # one row per probe frame: ground truth | render | error
    curve = cv2.imread(str(root / "training_curve.png"))
    assert curve is not None and curve.shape[1] > 500
    meta = json.loads((root / "config.json").read_text())
    assert meta["train"] == json.loads(json.dumps(to_dict(short_train_config)))
    assert meta["image_size"] == 64
    log = json.loads((root / "training_log.json").read_text())
    assert log["training_seconds"] > 0 and log["machine"]["cores"] >= 1


def test_the_saved_occupancy_grid_is_refined_for_rendering(short_trained_avatar, short_train_config):
    """Training skips space on 1 cm cells; the avatar keeps a grid of ``render_occupancy_cell_m`` cells, occupied
    wherever the field is (a render through it covers the head as the training grid did)."""
    avatar = load_avatar(short_trained_avatar)
    cell_m = min(short_train_config.render_occupancy_cell_m, short_train_config.occupancy_cell_m)
    expected = OccupancyGrid.with_cell_size(avatar.field.box_min, avatar.field.box_max, cell_m)
    assert avatar.occupancy.shape == expected.shape
    assert 0.0 < avatar.occupancy.occupied_fraction < 1.0


def test_the_upsampler_is_trained_on_full_resolution_patches(short_trained_avatar, short_train_config):
    assert short_train_config.upsampler.factor == 4  # the preview preset's
    avatar = load_avatar(short_trained_avatar)
    assert avatar.upsampler is not None and avatar.upsampler.config == short_train_config.upsampler
    assert avatar.upsampler.head.weight.abs().sum() > 0  # it starts at zero: training moved it
    patch = [entry["patch"] for entry in json.loads((short_trained_avatar / "training_log.json").read_text())["log"]
             if "patch" in entry]
    assert len(patch) >= 3 and all(value > 0 for value in patch)
    assert np.mean(patch[-2:]) < np.mean(patch[:2])


# --- face depth loss ---------------------------------------------------------------------------------------------


def with_face_depth(config, weight: float):
    return dataclasses.replace(config, loss=dataclasses.replace(config.loss, face_depth=weight))


def test_without_the_face_depth_weight_no_targets_are_built_and_no_rays_drawn(prepared_dataset, short_train_config):
    assert short_train_config.loss.face_depth > 0.0  # the preview preset's default: on
    short_train_config = with_face_depth(short_train_config, 0.0)
    run = _build_run(load_dataset(prepared_dataset), short_train_config)
    assert run.face_depth is None
    batch = run.sampler.sample(run.images[32], run.generator)
    rays = _step_rays(run, run.images[32], batch)
    assert rays.face_depth_distance is None and rays.face_depth.stop == rays.face_depth.start
    landmarks = short_train_config.frames_per_batch * short_train_config.landmark_rays_per_frame
    assert rays.landmarks == slice(batch.num_rays, batch.num_rays + landmarks)
    assert rays.rays.origins.shape[0] == batch.num_rays + landmarks  # the patch's rays do not train the field here


def test_face_depth_rays_follow_the_landmark_rays_and_end_on_their_frames_face(prepared_dataset, short_train_config):
    config = dataclasses.replace(with_face_depth(short_train_config, 1e-2), face_depth_rays_per_frame=40)
    dataset = load_dataset(prepared_dataset)
    run = _build_run(dataset, config)
    assert run.face_depth is not None and run.face_depth.camera.width == config.face_depth_size
    assert len(run.face_depth.counts) == len(dataset.train_indices) and (run.face_depth.counts > 0).all()
    batch = run.sampler.sample(run.images[32], run.generator)
    rays = _step_rays(run, run.images[32], batch)
    frames = config.frames_per_batch
    start = batch.num_rays + frames * config.landmark_rays_per_frame
    assert rays.face_depth == slice(start, start + frames * 40)
    assert rays.face_depth_distance.shape == (frames * 40,)
    assert (rays.rays.background[rays.face_depth] == 0).all()
    origins, directions = rays.rays.origins[rays.face_depth], rays.rays.directions[rays.face_depth]
    ends = (origins + rays.face_depth_distance[:, None] * directions).double().numpy()
    frame_ids = rays.rays.frame_ids[rays.face_depth].numpy()
    model = dataset.face_model
    triangles = face_triangles(model.template)
    for position, row in enumerate(batch.frame_rows.tolist()):
        index = dataset.train_indices[row]
        head = model.landmarks(dataset.tracking.expression[index][None].astype(np.float64))[0, :468]
        distance, _ = point_mesh_distance(ends[frame_ids == position], head, triangles)
        assert (frame_ids == position).sum() == 40 and distance.max() < 1e-5  # metres


def test_pose_corrections_move_each_frames_rays_and_learn_from_its_pixels(prepared_dataset, short_train_config):
    pose = dataclasses.replace(short_train_config.pose, enabled=True, start=0.0, rotation_lr=1e-3,
                               translation_lr=3e-4)
    run = _build_run(load_dataset(prepared_dataset), dataclasses.replace(short_train_config, pose=pose))
    tracked = _step_rays(dataclasses.replace(run, pose=None), run.images[32], run.sampler.sample(
        run.images[32], torch.Generator().manual_seed(1)))
    for _ in range(12):
        _train_step(run, run.config.loss)
    rotation_deg, translation_mm = run.pose.magnitudes()
    assert rotation_deg > 0.01 and translation_mm > 0.01  # the pixels moved the poses
    torch.testing.assert_close(run.pose.rotation.mean(0), torch.zeros(3), atol=1e-7, rtol=0)  # the mean held at 0
    corrected = _step_rays(run, run.images[32], run.sampler.sample(run.images[32], torch.Generator().manual_seed(1)))
    rays, colour = tracked.rays, tracked.colour  # the batch's rays (the others draw from the run's generator)
    expected, _ = run.pose.apply(rays.origins[colour], rays.directions[colour], rays.frame_ids[colour],
                                 rays.frame_rows)
    torch.testing.assert_close(corrected.rays.origins[colour], expected)
    assert not torch.allclose(corrected.rays.origins[colour], rays.origins[colour])


def test_a_short_run_with_the_face_depth_loss_logs_a_finite_term_in_the_total(tmp_path, prepared_dataset,
                                                                              short_train_config, one_torch_thread):
    config = dataclasses.replace(with_face_depth(short_train_config, 1e-2), evaluations=1, checkpoint_every_steps=0,
                                 schedule=dataclasses.replace(short_train_config.schedule, iterations=30))
    out = train(prepared_dataset, tmp_path / "avatar", config)
    steps = [entry for entry in json.loads((out / "training_log.json").read_text())["log"] if "total" in entry]
    assert len(steps) == 3
    for entry in steps:
        assert math.isfinite(entry["face_depth"]) and entry["face_depth"] > 0
        others = (entry["rgb"] + config.loss.mask * entry["mask"] + entry["tv"] + config.loss.latent * entry["latent"]
                  + config.loss.landmark_depth * entry["depth"] + entry["patch"])
        assert entry["total"] == pytest.approx(others + config.loss.face_depth * entry["face_depth"], rel=1e-5)
    assert json.loads((out / "config.json").read_text())["train"]["loss"]["face_depth"] == 1e-2


def test_a_short_run_with_the_head_prior_logs_its_term_in_the_total(tmp_path, prepared_dataset, short_train_config,
                                                                    one_torch_thread):
    loss = dataclasses.replace(short_train_config.loss, head_prior=0.05, head_prior_points=256)
    config = dataclasses.replace(short_train_config, loss=loss, evaluations=1, checkpoint_every_steps=0,
                                 schedule=dataclasses.replace(short_train_config.schedule, iterations=30))
    out = train(prepared_dataset, tmp_path / "avatar", config)
    steps = [entry for entry in json.loads((out / "training_log.json").read_text())["log"] if "total" in entry]
    assert len(steps) == 3
    for entry in steps:
        assert 0.0 < entry["head_prior"] <= 1.0
        rest = (entry["rgb"] + config.loss.mask * entry["mask"] + entry["tv"] + config.loss.latent * entry["latent"]
                + config.loss.landmark_depth * entry["depth"] + entry["patch"]
                + config.loss.face_depth * entry["face_depth"])
        assert entry["total"] == pytest.approx(rest + config.loss.head_prior * entry["head_prior"], rel=1e-5)


def test_a_run_with_the_presets_face_depth_weight_logs_its_term(short_trained_avatar):
    steps = [entry for entry in json.loads((short_trained_avatar / "training_log.json").read_text())["log"]
             if "total" in entry]
    assert steps and all(entry["face_depth"] >= 0.0 for entry in steps) and any(e["face_depth"] > 0 for e in steps)


# --- resuming ----------------------------------------------------------------------------------------------------

TRAIN_IN_A_CHILD = """
import json, sys
import torch
torch.set_num_threads(1)  # as the unbroken run (conftest.torch_threads)
from avatar4d.configs import from_dict
from avatar4d.training.config import TrainConfig; from avatar4d.training.trainer import train
train(sys.argv[1], sys.argv[2], from_dict(TrainConfig, json.loads(sys.argv[3])))
"""


def start_and_kill_after_first_checkpoint(dataset: Path, out: Path, config, log_path: Path) -> None:
    """Train in a real child process and SIGKILL it as soon as its first checkpoint is on disk."""
    checkpoint = out.with_name(out.name + ".partial") / CHECKPOINT
    with open(log_path, "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", TRAIN_IN_A_CHILD, str(dataset), str(out),
                                  json.dumps(to_dict(config))], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not checkpoint.exists():
                if child.poll() is not None:
                    pytest.fail(f"training ended (exit {child.returncode}) before its first checkpoint:\n"
                                + log_path.read_text()[-3000:])
                if time.monotonic() > deadline:
                    pytest.fail("no checkpoint within 10 minutes:\n" + log_path.read_text()[-3000:])
                time.sleep(0.02)
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()


def test_training_stops_when_the_held_out_probe_plateaus(tmp_path, prepared_dataset, short_train_config):
    """With probes every half second and a gain no run can make, training stops at the first probe that has an
    earlier one at the final resolution behind it, logs why, and still writes the avatar."""
    config = dataclasses.replace(short_train_config, probe_every_s=0.5, plateau_s=1.0, plateau_gain_db=100.0,
                                 checkpoint_every_steps=0)
    out = tmp_path / "avatar"
    train(prepared_dataset, out, config)
    log = json.loads((out / "training_log.json").read_text())["log"]
    stops = [entry for entry in log if "stopped" in entry]
    assert len(stops) == 1 and "plateaued" in stops[0]["stopped"]
    final_step = round(config.schedule.resolution_starts[-1] * config.schedule.iterations)
    assert final_step <= stops[0]["step"] < config.schedule.iterations
    probes = [entry for entry in log if "heldout_psnr" in entry and entry["step"] >= final_step]
    assert len(probes) >= 2 and (out / "config.json").exists()


def test_an_unknown_training_only_option_does_not_stop_rendering(tmp_path, short_trained_avatar):
    """The avatar reads the field's and the renderer's configuration; an option of training alone (from a newer
    version, say) is kept in config.json and changes no pixel."""
    avatar = copy_of(short_trained_avatar, tmp_path)
    meta = json.loads((avatar / "config.json").read_text())
    meta["train"]["bogus_option"] = 3
    (avatar / "config.json").write_text(json.dumps(meta))
    assert load_avatar(avatar).config == load_avatar(short_trained_avatar).config


def test_a_killed_run_resumes_to_exactly_the_unbroken_runs_model(tmp_path, prepared_dataset, short_train_config,
                                                                 short_trained_avatar, one_torch_thread):
    out = tmp_path / "avatar"
    start_and_kill_after_first_checkpoint(prepared_dataset, out, short_train_config, tmp_path / "child.log")
    partial = out.with_name("avatar.partial")
    assert not out.exists() and (partial / CHECKPOINT).exists()
    from safetensors import safe_open

    with safe_open(str(partial / CHECKPOINT), framework="pt") as handle:
        killed_at = int(handle.metadata()["step"])
    assert 0 < killed_at < short_train_config.schedule.iterations
    train(prepared_dataset, out, short_train_config, resume=True)
    assert not partial.exists() and not (out / CHECKPOINT).exists()
    resumed = load_file(str(out / "model.safetensors"))
    unbroken = load_file(str(short_trained_avatar / "model.safetensors"))
    assert resumed.keys() == unbroken.keys()
    different = [key for key in resumed if not torch.equal(resumed[key], unbroken[key])]
    assert different == [], f"resumed from step {killed_at}: {different} differ"
    # and the logged losses of every step are the same numbers
    def losses(root):
        return [(e["step"], e["total"], e["psnr"]) for e in json.loads((root / "training_log.json").read_text())["log"]
                if "total" in e]
    assert losses(out) == losses(short_trained_avatar)


def write_checkpoint(out: Path, config) -> Path:
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True)
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(module.parameters())
    path = partial / CHECKPOINT
    save_checkpoint(path, {"field": module}, optimizer, TrainingState(5, torch.Generator().get_state(), [], 1.0),
                    to_dict(config))
    return path


@pytest.mark.parametrize("change, named", [
    (lambda c: dataclasses.replace(c, rays_per_frame=256), "rays_per_frame: 512 -> 256"),
    (lambda c: dataclasses.replace(c, schedule=dataclasses.replace(c.schedule, iterations=61)),
     "schedule.iterations: 60 -> 61"),
    (lambda c: dataclasses.replace(c, field=dataclasses.replace(c.field, use_spatial_prior=False)),
     "field.use_spatial_prior: True -> False"),
])
def test_resume_with_another_configuration_names_the_changed_key(tmp_path, prepared_dataset, short_train_config,
                                                                 change, named):
    out = tmp_path / "avatar"
    checkpoint = write_checkpoint(out, short_train_config)
    with pytest.raises(AvatarError, match="another configuration") as error:
        train(prepared_dataset, out, change(short_train_config), resume=True)
    assert named in str(error.value)
    assert checkpoint.exists() and not out.exists()  # nothing was thrown away


def test_resume_from_a_damaged_checkpoint_is_refused(tmp_path, prepared_dataset, short_train_config):
    out = tmp_path / "avatar"
    partial = out.with_name("avatar.partial")
    partial.mkdir()
    (partial / CHECKPOINT).write_bytes(b"\x00" * 100)
    with pytest.raises(AvatarError, match="start without --resume"):
        train(prepared_dataset, out, short_train_config, resume=True)


# --- save / load round trip --------------------------------------------------------------------------------------


def test_a_saved_avatar_renders_the_pixels_of_the_in_memory_field(tmp_path, prepared_dataset, short_train_config):
    dataset = load_dataset(prepared_dataset)
    config = short_train_config
    model = dataset.face_model
    field = HeadField(config.field, field_geometry(model.template, config.field), model.num_components,
                      len(dataset.train_indices), model.template, torch.Generator().manual_seed(0),
                      model.basis.stddev, model.basis.scaled)
    assert field.warp is not None  # the preset's face warp goes through the round trip too
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a field that is not at its initial values, with every part mattering
        field.expression.tables.normal_(generator=gen)
        field.latents.normal_(generator=gen)
        field.decoder.density.bias.fill_(2.0)
    occupancy = OccupancyGrid(field.box_min, field.box_max, (12, 17, 11))
    occupancy.occupied.copy_(torch.rand(occupancy.occupied.shape, generator=gen) < 0.7)
    upsampler = Upsampler(config.upsampler, config.field.decoder.feature_channels)
    with torch.no_grad():  # its last layer starts at zero: make every layer matter
        for parameter in upsampler.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=gen) * 0.05)
    scene = dataset.load_background()
    root = tmp_path / "avatar"
    root.mkdir()
    save_avatar(root, config=config, geometry=field.geometry, field=field, occupancy=occupancy, upsampler=upsampler,
                dataset=dataset, scene=scene, image_size=64)
    avatar = load_avatar(root)
    for key, value in field.state_dict().items():
        assert torch.equal(avatar.field.state_dict()[key], value), key
    for key, value in upsampler.state_dict().items():
        assert torch.equal(avatar.upsampler.state_dict()[key], value), key
    assert torch.equal(avatar.occupancy.occupied, occupancy.occupied)
    np.testing.assert_array_equal(avatar.scene, scene)
    np.testing.assert_array_equal(avatar.frames.codes, dataset.tracking.expression)
    np.testing.assert_array_equal(avatar.frames.camera_from_head, dataset.tracking.camera_from_head)
    index = int(dataset.heldout_indices[0])
    pose, code = dataset.tracking.camera_from_head[index], dataset.tracking.expression[index]
    backdrop = torch.from_numpy(cv2.resize(scene.astype(np.float32) / 255.0, (64, 64), interpolation=cv2.INTER_AREA))
    arguments = (dataset.camera.resized(64, 64), torch.from_numpy(pose).float(), torch.from_numpy(code).float(),
                 field.mean_latent().detach(), backdrop, config.renderer, occupancy)
    expected = render_image(field, *arguments)
    loaded = avatar.render(pose, code, size=64, direct=True)
    assert torch.equal(loaded.rgb, expected.rgb)
    assert torch.equal(loaded.opacity, expected.opacity)
    assert 0.05 < float(expected.opacity.mean()) < 0.95  # the head is in the picture, not filling it
    upsampled = render_upsampled(field, upsampler.eval(), arguments[0], *arguments[1:])
    assert torch.equal(avatar.render(pose, code, size=64).rgb, upsampled.rgb)
    assert avatar.native_size == dataset.size  # an avatar with an upsampler renders at the video's resolution


# --- bad input ---------------------------------------------------------------------------------------------------


def copy_of(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    return copy


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_a_dataset_without_tracking_is_refused(tmp_path, prepared_dataset, short_train_config):
    dataset = copy_of(prepared_dataset, tmp_path)
    (dataset / "tracking.safetensors").unlink()
    with pytest.raises(DatasetError, match="incomplete: missing tracking.safetensors"):
        train(dataset, tmp_path / "avatar", short_train_config)
    assert_nothing_written(tmp_path / "avatar")


def test_a_dataset_of_another_version_is_refused(tmp_path, prepared_dataset, short_train_config):
    dataset = copy_of(prepared_dataset, tmp_path)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["version"] = 99
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="is a version 99 dataset; this avatar4d reads version 1"):
        train(dataset, tmp_path / "avatar", short_train_config)
    assert_nothing_written(tmp_path / "avatar")


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path, short_train_config):
    folder = tmp_path / "holiday_photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="incomplete: missing manifest.json"):
        train(folder, tmp_path / "avatar", short_train_config)
    with pytest.raises(DatasetError, match="is not a dataset folder"):
        train(folder / "notes.txt", tmp_path / "avatar", short_train_config)
    with pytest.raises(DatasetError, match="is not a dataset folder"):
        train(tmp_path / "nowhere", tmp_path / "avatar", short_train_config)
    assert_nothing_written(tmp_path / "avatar")


def test_an_avatar_without_its_weights_is_refused(tmp_path, short_trained_avatar):
    avatar = copy_of(short_trained_avatar, tmp_path)
    (avatar / "model.safetensors").unlink()
    with pytest.raises(AvatarError, match="incomplete: missing model.safetensors"):
        load_avatar(avatar)


def test_an_avatar_with_damaged_weights_is_refused(tmp_path, short_trained_avatar):
    avatar = copy_of(short_trained_avatar, tmp_path)
    (avatar / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(AvatarError, match="the weights cannot be loaded"):
        load_avatar(avatar)


@pytest.mark.parametrize("path, named", [(("renderer", "bogus_option"), "renderer.bogus_option"),
                                         (("field", "decoder", "width"), "field.decoder.width")])
def test_an_avatar_config_with_an_unknown_key_names_it(tmp_path, short_trained_avatar, path, named):
    avatar = copy_of(short_trained_avatar, tmp_path)
    meta = json.loads((avatar / "config.json").read_text())
    where = meta["train"]
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = 3
    (avatar / "config.json").write_text(json.dumps(meta))
    with pytest.raises(AvatarError, match="unknown configuration keys") as error:
        load_avatar(avatar)
    assert named in str(error.value)


def test_an_avatar_of_another_version_is_refused(tmp_path, short_trained_avatar):
    avatar = copy_of(short_trained_avatar, tmp_path)
    meta = json.loads((avatar / "config.json").read_text())
    meta["version"] = 99
    (avatar / "config.json").write_text(json.dumps(meta))
    with pytest.raises(AvatarError, match="is a version 99 avatar"):
        load_avatar(avatar)


def test_an_avatar_still_training_is_named_as_such(tmp_path):
    (tmp_path / "avatar.partial").mkdir()
    with pytest.raises(AvatarError, match="training may still be running"):
        load_avatar(tmp_path / "avatar")


# --- the command line --------------------------------------------------------------------------------------------


def test_cli_train_on_a_bad_dataset_fails_with_a_message(tmp_path, prepared_dataset, capsys):
    from avatar4d.cli import main

    code = main(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "avatar"), "--iters", "5"])
    assert code == DatasetError.exit_code != 0
    err = capsys.readouterr().err
    assert "avatar4d: error:" in err and "is not a dataset folder" in err
    dataset = copy_of(prepared_dataset, tmp_path)
    (dataset / "tracking.safetensors").write_bytes(b"garbage")
    code = main(["train", str(dataset), "--out", str(tmp_path / "avatar"), "--iters", "5", "--image-size", "32"])
    assert code == DatasetError.exit_code
    err = capsys.readouterr().err
    assert "avatar4d: error:" in err and "cannot read the tracking" in err
    assert_nothing_written(tmp_path / "avatar")
