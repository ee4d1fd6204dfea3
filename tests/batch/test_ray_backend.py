"""The Ray backend: without Ray, or with a cluster that does not answer, a batch stops with a clear error before
writing anything; on a local Ray instance (2 CPUs) it runs two real short clips end to end as Ray tasks, with the
same statuses and summary as the local backend, and a rerun skips them."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from avatar4d.batch.pipeline import PipelineConfig
from avatar4d.batch.ray_backend import INSTALL_HINT, gpus_per_video
from avatar4d.batch.run import BatchConfig, run_batch
from avatar4d.errors import BackendError

TINY = PipelineConfig(iterations=3, image_size=32, size=128, max_seconds=1.5, lpips=False)


@pytest.fixture
def two_clips(tmp_path: Path, face_video: Path) -> Path:
    """The sample clip under two names: two videos, two folders."""
    listing = tmp_path / "videos.csv"
    listing.write_text(f"video,name\n{face_video},anna\n{face_video},bert\n")
    return listing


def test_without_ray_the_error_names_the_extra(two_clips: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(BackendError) as caught:
        run_batch(two_clips, tmp_path / "runs", BatchConfig(pipeline=TINY, backend="ray"))
    assert 'pip install -e ".[cluster]"' in str(caught.value) and INSTALL_HINT in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_a_cluster_that_does_not_answer_is_a_clear_error(two_clips: Path, tmp_path: Path):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    config = BatchConfig(pipeline=TINY, backend="ray", address=f"127.0.0.1:{closed_port}")
    with pytest.raises(BackendError, match=f"cannot reach a Ray cluster at --address 127.0.0.1:{closed_port}"):
        run_batch(two_clips, tmp_path / "runs", config)
    assert not (tmp_path / "runs").exists()


def test_the_quality_preset_asks_each_task_for_a_gpu():
    assert gpus_per_video(PipelineConfig(preset="quality")) == 1 and gpus_per_video(TINY) == 0


@pytest.mark.slow
def test_a_local_ray_instance_runs_two_real_clips(two_clips: Path, tmp_path: Path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "runs"
        result = run_batch(two_clips, out, BatchConfig(pipeline=TINY, backend="ray"))
        assert ray.is_initialized(), "a batch must leave a Ray instance it did not start running"
        assert sorted((status.name, status.state) for status in result.ran) == [("anna", "done"), ("bert", "done")]
        assert [(row.video, row.status) for row in result.check().rows] == [("anna", "done"), ("bert", "done")]
        for row in result.rows:
            assert row.figures["frames"] == 36 and row.figures["steps"] == 3 and row.figures["psnr"] > 0
            log = (out / row.video / "log.txt").read_text()
            assert "1 torch threads" in log and f"pid {os.getpid()})" not in log
        assert "2 videos: 2 done" in (out / "summary.md").read_text()
        again = run_batch(two_clips, out, BatchConfig(pipeline=TINY, backend="ray"))
        assert again.ran == [] and [row.status for row in again.rows] == ["done", "done"]
        with pytest.raises(BackendError, match="asks each video for a GPU and the Ray cluster has none"):
            run_batch(two_clips, tmp_path / "quality", BatchConfig(pipeline=PipelineConfig(preset="quality"),
                                                                   backend="ray"))
    finally:
        ray.shutdown()
