"""The local backend: a pool of worker processes on this machine, one fresh process per video.

Processes are started with ``spawn`` (forking a process that has loaded torch is unsafe) and each handles one
video, so its memory is given back when the video is done. The cores are split between them: each worker runs
``cores // workers`` torch threads (at least one). A worker that dies without recording a result (killed, out of
memory, a crash in native code) becomes that video's failure; the other videos go on.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.pipeline import PipelineConfig, run_video_task
from avatar4d.batch.status import VideoStatus
from avatar4d.batch.workers import run_jobs
from avatar4d.environment import machine_description, pick_device

MEMORY_PER_VIDEO_GIB = 2.0
"""Memory set aside per worker: the preview preset's peak while training is 1.1-1.4 GiB on the shared videos, and
prepare's about 0.55 GiB whatever the length."""


@dataclass(frozen=True)
class WorkerPlan:
    """How the machine is split between videos."""

    workers: int
    """Videos processed at once."""
    threads: int
    """Torch threads per worker."""
    cores: int
    memory_gib: float | None

    def describe(self) -> str:
        memory = f", {self.memory_gib:g} GiB" if self.memory_gib else ""
        return (f"{self.workers} worker process{'es' if self.workers > 1 else ''} x {self.threads} torch "
                f"thread{'s' if self.threads > 1 else ''} ({self.cores} cores{memory})")


def plan_workers(videos: int, config: PipelineConfig, workers: int | None = None,
                 threads: int | None = None) -> WorkerPlan:
    """Workers and threads for ``videos`` videos: by default as many workers as there are cores, as the memory
    holds (:data:`MEMORY_PER_VIDEO_GIB` each) and as there are videos, one when training runs on a GPU; then
    ``cores // workers`` torch threads each."""
    machine = machine_description()
    cores = int(machine["cores"] or 1)
    memory = machine["memory_gib"]
    if workers is None:
        by_memory = int(memory // MEMORY_PER_VIDEO_GIB) if memory else cores
        on_gpu = pick_device(config.device or "auto").type == "cuda"
        workers = 1 if on_gpu else max(1, min(cores, by_memory, videos))
    return WorkerPlan(workers=workers, threads=threads or max(1, cores // workers), cores=cores, memory_gib=memory)


def run_local(jobs: list[VideoJob], batch: BatchLayout, config: PipelineConfig, plan: WorkerPlan, *,
              on_start: Callable[[VideoJob], None], on_finish: Callable[[VideoStatus], None]) -> list[VideoStatus]:
    """Run every job in its own worker process, ``plan.workers`` at a time (see :func:`run_jobs`)."""
    return run_jobs(jobs, LocalProcesses(batch, config, plan.threads), plan.workers, batch, on_start=on_start,
                    on_finish=on_finish)


class LocalProcesses:
    """:class:`Workers` as spawned processes of this machine, one per video."""

    def __init__(self, batch: BatchLayout, config: PipelineConfig, threads: int) -> None:
        self.batch = batch
        self.config = config
        self.threads = threads
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[int, BaseProcess] = {}

    def start(self, job: VideoJob) -> int:
        process = self.context.Process(target=run_video_task, args=(job, str(self.batch.root), self.config,
                                                                    self.threads), name=f"avatar4d-batch {job.name}")
        process.start()
        self.processes[process.sentinel] = process
        return process.sentinel

    def wait(self, handles: list[int]) -> list[int]:
        ended = multiprocessing.connection.wait(handles)
        for sentinel in ended:
            self.processes[sentinel].join()
        return ended

    def problem(self, handle: int) -> str:
        return _death(self.processes.pop(handle).exitcode)

    def stop(self, handles: list[int]) -> None:
        for sentinel in handles:
            self.processes[sentinel].terminate()
        for sentinel in handles:
            self.processes.pop(sentinel).join()


def _death(exit_code: int | None) -> str:
    """Why a worker that recorded no result ended, from its exit code."""
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name if -exit_code in signal.valid_signals() else f"signal {-exit_code}"
        cause = " (out of memory?)" if name == "SIGKILL" else ""
        return f"its worker process was killed by {name}{cause} before it recorded a result; --retry-failed retries it"
    return f"its worker process ended (exit code {exit_code}) before it recorded a result; --retry-failed retries it"
