"""The Ray backend (the optional ``cluster`` extra): each video a Ray task with its resource request, on a local Ray
instance or an existing cluster (``--address auto`` on one of its nodes, or ``HOST:PORT``).

Every node runs the same :func:`~avatar4d.batch.pipeline.run_video_task` as the local backend, so the nodes need
the same avatar4d installed, and the input videos and the batch folder must be on a file system they all share
under the same path. Results and failures are gathered as the tasks end, like the local backend's.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from types import ModuleType

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.local import MEMORY_PER_VIDEO_GIB
from avatar4d.batch.pipeline import PipelineConfig, run_video_task
from avatar4d.batch.status import VideoStatus
from avatar4d.batch.workers import run_jobs
from avatar4d.errors import BackendError

INSTALL_HINT = 'pip install -e ".[cluster]" (Ray 2.60.0)'
CONNECT_TIMEOUT_S = 5.0
"""How long to wait for a cluster's address to answer before saying it cannot be reached."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`BackendError` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise BackendError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from error
    return ray


def gpus_per_video(config: PipelineConfig) -> int:
    """The GPUs a video's task asks for: one for the quality preset (made for a GPU), none for preview."""
    return 1 if config.preset == "quality" else 0


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[ModuleType]:
    """The ``ray`` module, connected: to the Ray instance this process already has, or to the cluster at
    ``address``, or to a local instance it starts; it shuts down only what it started.

    Raises:
        BackendError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = import_ray()
    started_here = connect(ray, address)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_ray(ray: ModuleType, jobs: list[VideoJob], batch: BatchLayout, config: PipelineConfig, *,
            threads: int | None, workers: int | None, on_start: Callable[[VideoJob], None],
            on_finish: Callable[[VideoStatus], None]) -> list[VideoStatus]:
    """Run every job as a Ray task asking for ``threads`` CPUs (default 1), a GPU with the quality preset, and
    :data:`MEMORY_PER_VIDEO_GIB`; at most ``workers`` at once (default: as many as the cluster holds).

    Raises:
        BackendError: the cluster lacks what one video asks for.
    """
    cpus = threads or 1
    gpus = gpus_per_video(config)
    limit = workers or _capacity(ray, cpus, gpus)
    task = ray.remote(run_video_task).options(num_cpus=cpus, num_gpus=gpus, memory=int(MEMORY_PER_VIDEO_GIB * 2**30),
                                              max_retries=0)
    return run_jobs(jobs, RayTasks(ray, task, batch, config, cpus), limit, batch, on_start=on_start,
                    on_finish=on_finish)


class RayTasks:
    """:class:`~avatar4d.batch.workers.Workers` as Ray tasks."""

    def __init__(self, ray: ModuleType, task, batch: BatchLayout, config: PipelineConfig, cpus: int) -> None:
        self.ray = ray
        self.task = task
        self.batch = batch
        self.config = config
        self.cpus = cpus

    def start(self, job: VideoJob):
        return self.task.remote(job, str(self.batch.root), self.config, self.cpus)

    def wait(self, handles: list) -> list:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def problem(self, handle) -> str:
        try:
            self.ray.get(handle)
        except self.ray.exceptions.RayError as error:
            return f"its Ray task failed: {type(error).__name__}: {str(error).splitlines()[0]}"
        return "its Ray task ended before it recorded a result; --retry-failed retries it"

    def stop(self, handles: list) -> None:
        for handle in handles:
            self.ray.cancel(handle, force=True)


def connect(ray: ModuleType, address: str | None) -> bool:
    """Join a cluster (``address``) or start a local Ray instance, unless this process has one already.

    Returns:
        Whether this call started or joined it (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as error:
        raise BackendError(f"cannot reach a Ray cluster at --address {address}: {error}. Start one with "
                           "`ray start --head` on its head node (and `ray start --address HEAD:6379` on the "
                           "others), or leave --address out to run a local Ray instance") from error
    return True


def _check_reachable(address: str) -> None:
    """Fail fast on an address that does not answer (``ray.init`` would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"--address {address!r} is not HOST:PORT (or auto, to join the cluster of this node)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise BackendError(f"cannot reach a Ray cluster at --address {address}: {error}. Is `ray start --head` "
                           "running there, and is its port open to this machine?") from error


def _capacity(ray: ModuleType, cpus: int, gpus: int) -> int:
    """Videos the cluster can run at once, given what each asks for."""
    resources = ray.cluster_resources()
    by_cpu = int(resources.get("CPU", 0) // cpus)
    if by_cpu < 1:
        raise BackendError(f"each video asks for {cpus} CPUs and the Ray cluster has {resources.get('CPU', 0):g}")
    if gpus:
        by_gpu = int(resources.get("GPU", 0) // gpus)
        if by_gpu < 1:
            raise BackendError("the quality preset asks each video for a GPU and the Ray cluster has none; use "
                               "--preset preview on CPUs")
        return min(by_cpu, by_gpu)
    return by_cpu
