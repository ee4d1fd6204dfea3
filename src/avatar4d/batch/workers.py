"""The loop both backends share: keep a number of videos in flight, settle each as its worker ends (with the status
it wrote, or a failure saying why it wrote none), and stop the rest when interrupted."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from avatar4d.batch.jobs import VideoJob
from avatar4d.batch.layout import BatchLayout
from avatar4d.batch.status import VideoStatus, settle


class Workers(Protocol):
    """What a backend provides: run one video somewhere, and say when and how it ended."""

    def start(self, job: VideoJob) -> Hashable:
        """Start the video's worker; returns a handle to it."""

    def wait(self, handles: list[Hashable]) -> list[Hashable]:
        """Block until at least one worker has ended; returns the handles of those that have."""

    def problem(self, handle: Hashable) -> str:
        """What to record for an ended worker if it wrote no result (used only then)."""

    def stop(self, handles: list[Hashable]) -> None:
        """End the workers still running (their videos stay unfinished, and a rerun resumes them)."""


def run_jobs(jobs: list[VideoJob], workers: Workers, limit: int, batch: BatchLayout, *,
             on_start: Callable[[VideoJob], None], on_finish: Callable[[VideoStatus], None]) -> list[VideoStatus]:
    """Run ``jobs``, at most ``limit`` at once; ``on_finish`` sees each video's final status as it ends.

    Returns:
        The final statuses, in the order the videos finished.
    """
    waiting = list(jobs)
    running: dict[Hashable, VideoJob] = {}
    results: list[VideoStatus] = []
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop(0)
                running[workers.start(job)] = job
                on_start(job)
            for handle in workers.wait(list(running)):
                job = running.pop(handle)
                problem = workers.problem(handle)
                status = settle(job, batch.video(job.name), problem)
                results.append(status)
                on_finish(status)
    finally:
        if running:
            workers.stop(list(running))
    return results
