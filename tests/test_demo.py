"""``avatar4d demo`` (demo.py) with tiny settings: every stage runs on the real sample clips, every result it names
exists, and the summary points at each one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from avatar4d.demo import run_demo, summary
from avatar4d.training import presets
from avatar4d.video import probe_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def small_preset(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The preview preset at 64 px with coarse grids (as ``short_train_config``). The real preview preset at 40
    steps took 72 s to train on this shared machine (0.5 steps/s at 128 px) and its field stays empty, so the mesh
    stage finds no surface; cut down like this the whole demo takes about a minute. Records the calls."""
    original = presets.get
    calls: list[tuple] = []

    def small(name: str, *, iterations: int | None = None, image_size: int | None = None, seed: int | None = None,
              device: str | None = None):
        calls.append((name, iterations))
        config = original(name, iterations=iterations, image_size=64, seed=seed, device=device)
        field = dataclasses.replace(
            config.field, canonical=dataclasses.replace(config.field.canonical, voxel_size_m=0.01),
            expression=dataclasses.replace(config.field.expression, voxel_size_m=0.016))
        return dataclasses.replace(config, field=field, renderer=dataclasses.replace(config.renderer,
                                                                                      samples_per_ray=24),
                                   loss=dataclasses.replace(config.loss, tv_samples=2048), rays_per_frame=512,
                                   evaluations=1)

    monkeypatch.setattr(presets, "get", small)
    return calls


def test_the_demo_runs_every_stage_and_its_summary_names_every_result(small_preset, tmp_path: Path, face_video,
                                                                       driver_video, capsys):
    result = run_demo(tmp_path / "demo", iterations=60)
    assert small_preset == [("preview", 60)], "a CPU-only machine trains the preview preset"
    printed = capsys.readouterr().out
    paths = {"dataset": result.dataset, "avatar": result.avatar, "orbit": result.orbit,
             "reenactment": result.reenactment, "mesh": result.mesh}
    for name, path in paths.items():
        assert path.exists(), name
        assert path.is_relative_to(tmp_path / "demo"), name
    assert (result.dataset / "overlay.mp4").exists() and (result.avatar / "training_curve.png").exists()
    assert (result.avatar / "evaluation").is_dir() and (result.avatar / "metrics.json").exists()
    assert result.orbit.suffix == ".mp4" and probe_video(result.orbit).frame_count == 60
    reenactment = probe_video(result.reenactment)
    assert reenactment.frame_count == 150 and reenactment.has_audio and reenactment.width == 2 * reenactment.height
    assert result.mesh.suffix == ".ply" and result.mesh.with_name("head_preview.png").exists()

    mean = result.metrics["mean"]
    assert mean["psnr"] > result.metrics["baselines"]["background_plate"]["psnr"], mean
    assert set(result.seconds) == {"prepare", "train", "evaluate", "orbit", "reenact", "mesh"}
    text = summary(result)
    assert text in printed
    for name, path in paths.items():
        assert str(path) in text, name
    assert f"PSNR {mean['psnr']:.2f} dB" in text
