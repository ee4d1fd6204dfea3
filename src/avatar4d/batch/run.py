"""``avatar4d batch``: many videos, each prepared, trained and evaluated (and orbited) into its own folder, with a
summary that is kept current, on this machine's cores or on a Ray cluster.

Idempotent: a finished video is skipped, an unfinished one resumes, a failed one is left as it is unless
``retry_failed``; one video's failure never stops the others.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

from avatar4d.batch.jobs import VideoJob, read_jobs, shard_of
from avatar4d.batch.layout import BatchLayout, open_batch_folder
from avatar4d.batch.local import plan_workers, run_local
from avatar4d.batch.pipeline import PipelineConfig, is_finished
from avatar4d.batch.ray_backend import ray_session, run_ray
from avatar4d.batch.status import VideoStatus, read_status
from avatar4d.batch.summary import SummaryRow, collect_rows, counts, write_summary
from avatar4d.errors import BatchFailuresError, BatchInputError
from avatar4d.progress import Progress, note


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs (what each video goes through is ``pipeline``)."""

    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    workers: int | None = None
    """Videos processed at once (default: locally, as many as the cores and memory allow; on Ray, as many as the
    cluster's CPUs allow)."""
    threads: int | None = None
    """Torch threads per video, and CPUs each Ray task asks for (default: cores // workers locally, 1 on Ray)."""
    shard: tuple[int, int] = (0, 1)
    """(i, n): this machine takes the i-th of n shares of the list sorted by name (from 0)."""
    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray only: the cluster to join (auto: the one this node belongs to; HOST:PORT); default: a local instance."""
    retry_failed: bool = False
    """Run again the videos that failed before (by default they are left as failed)."""

    def __post_init__(self) -> None:
        index, count = self.shard
        checks = [(self.workers is None or self.workers >= 1, f"--workers must be 1 or more, got {self.workers}"),
                  (self.threads is None or self.threads >= 1, f"--threads must be 1 or more, got {self.threads}"),
                  (count >= 1 and 0 <= index < count, f"--shard {index}/{count}: the share i of n must be from 0 "
                                                      f"to n - 1"),
                  (self.backend in ("local", "ray"), f"--backend must be local or ray, got {self.backend!r}"),
                  (self.address is None or self.backend == "ray", "--address is for --backend ray")]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise BatchInputError("; ".join(problems))


@dataclass(frozen=True)
class BatchResult:
    """What a batch run left: the summary of the whole list, and what this run did."""

    folder: Path
    rows: list[SummaryRow]
    """Every video of the list (all shards), as the summary shows it."""
    ran: list[VideoStatus]
    """The videos this run processed, in the order they finished."""

    @property
    def summary_csv(self) -> Path:
        return BatchLayout(self.folder).summary_csv

    @property
    def summary_md(self) -> Path:
        return BatchLayout(self.folder).summary_md

    def check(self) -> BatchResult:
        """Raise :class:`BatchFailuresError` when a video of the list has failed."""
        failed = [row.video for row in self.rows if row.status == "failed"]
        if failed:
            raise BatchFailuresError(f"{len(failed)} of {len(self.rows)} videos failed ({', '.join(failed)}); their "
                                     f"errors are in {self.summary_md}; --retry-failed tries them again")
        return self


def run_batch(source: Path, out: Path, config: BatchConfig = BatchConfig()) -> BatchResult:
    """Prepare, train and evaluate (and orbit) every video of ``source`` into ``out/NAME/``; see ``avatar4d batch``.

    Args:
        source: a folder of videos, or a text/CSV list of them (see :mod:`avatar4d.batch.jobs`).
        out: the batch folder: new, empty, or one made by an earlier run with the same settings.

    Raises:
        BatchInputError: the list cannot be read, two videos would write one folder, an option is invalid, or
            ``out`` was made with other settings. OutputError: ``out`` holds something else (left untouched).
        BackendError: the Ray backend cannot run (not installed, cluster unreachable).
    """
    jobs = read_jobs(source)
    session = ray_session(config.address) if config.backend == "ray" else contextlib.nullcontext()
    with session as ray:
        layout = open_batch_folder(out, config.pipeline.settings())
        todo = _to_run(jobs, layout, config)
        with BatchDisplay(layout, jobs, len(todo)) as display:
            ran = _dispatch(todo, layout, config, display, ray) if todo else []
    rows = display.write()
    note(f"batch: {counts(rows)}; summary: {layout.summary_md}")
    return BatchResult(folder=layout.root, rows=rows, ran=ran)


def _dispatch(todo: list[VideoJob], layout: BatchLayout, config: BatchConfig, display: BatchDisplay,
              ray: ModuleType | None) -> list[VideoStatus]:
    if ray is not None:
        return run_ray(ray, todo, layout, config.pipeline, threads=config.threads, workers=config.workers,
                       on_start=display.started, on_finish=display.finished)
    plan = plan_workers(len(todo), config.pipeline, config.workers, config.threads)
    note(f"batch: {plan.describe()}")
    return run_local(todo, layout, config.pipeline, plan, on_start=display.started, on_finish=display.finished)


def _to_run(jobs: list[VideoJob], layout: BatchLayout, config: BatchConfig) -> list[VideoJob]:
    """This shard's videos that need work: not finished, and not failed unless retrying; says what it skips."""
    mine = shard_of(jobs, *config.shard)
    finished = {job.name for job in mine if is_finished(layout.video(job.name), config.pipeline)}
    failed = {job.name for job in mine if job.name not in finished
              and getattr(read_status(layout.video(job.name)), "state", None) == "failed"}
    todo = [job for job in mine if job.name not in finished and (config.retry_failed or job.name not in failed)]
    share = f" (shard {config.shard[0]}/{config.shard[1]}: {len(mine)} of them)" if config.shard[1] > 1 else ""
    retry = "retrying them" if config.retry_failed else "left as failed; --retry-failed tries them again"
    note(f"batch: {len(jobs)} video{'s' if len(jobs) != 1 else ''}{share}; {len(finished)} finished already, "
         f"{len(failed)} failed before ({retry}); {len(todo)} to run")
    return todo


class BatchDisplay:
    """One progress display for the whole batch (videos done / failed / running, time left), and the summary
    rewritten as each video finishes."""

    def __init__(self, layout: BatchLayout, jobs: list[VideoJob], total: int) -> None:
        self.layout = layout
        self.jobs = jobs
        self.tally: Counter[str] = Counter()
        self.progress = Progress("batch", total, "videos", log_every_s=0.0)

    def started(self, job: VideoJob) -> None:
        self.tally["running"] += 1
        self._show()

    def finished(self, status: VideoStatus) -> None:
        self.tally["running"] -= 1
        self.tally[status.state] += 1
        if status.state == "failed":
            note(f"batch: {status.name} failed ({status.stage}): {status.error}")
        self.write()
        self._show()
        self.progress.update()

    def write(self) -> list[SummaryRow]:
        """Rewrite the summary from the status files; returns its rows."""
        rows = collect_rows(self.layout, self.jobs)
        write_summary(self.layout, rows)
        return rows

    def _show(self) -> None:
        self.progress.set(done=self.tally["done"], failed=self.tally["failed"], running=self.tally["running"])

    def __enter__(self) -> BatchDisplay:
        self.write()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.close()
