"""Progress of long steps: count, rate, time left, and a few live numbers (loss, PSNR).

One small class over tqdm so every stage reports the same way. It writes to stderr, draws a bar on a terminal and
prints a plain line every ``log_every_s`` seconds otherwise (CI logs, notebooks), so progress is never silent.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from tqdm import tqdm


class Progress:
    """Report ``done / total`` with rate and time left, plus named values set by :meth:`set`."""

    def __init__(self, description: str, total: int | None, unit: str = "it", *, log_every_s: float = 10.0) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._values: dict[str, str] = {}
        self._start = time.perf_counter()
        self._last_log = self._start
        self._log_every_s = log_every_s
        self._interactive = sys.stderr.isatty()
        self._bar = tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, leave=True, file=sys.stderr,
                         disable=not self._interactive)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._start

    @property
    def rate(self) -> float:
        """Units per second since the start."""
        return self.done / max(self.elapsed_s, 1e-9)

    def set(self, **values: float | int | str) -> None:
        """Show named values (``loss=0.01, psnr=23.5``) next to the count."""
        self._values = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()}
        self._bar.set_postfix(self._values, refresh=False)

    def update(self, count: int = 1) -> None:
        self.done += count
        self._bar.update(count)
        now = time.perf_counter()
        if not self._interactive and now - self._last_log >= self._log_every_s:
            self._last_log = now
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        """One plain-text status line: ``train: 120/600 it, 4.1 it/s, 1m57s left, loss=0.01``."""
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        left = ""
        if self.total and self.done:
            left = f", {_format_seconds((self.total - self.done) / max(self.rate, 1e-9))} left"
        values = "".join(f", {k}={v}" for k, v in self._values.items())
        return f"{self.description}: {count} {self.unit}, {self.rate:.1f} {self.unit}/s{left}{values}"

    def close(self) -> None:
        self._bar.close()
        if not self._interactive:
            print(self.line() + f" (done in {_format_seconds(self.elapsed_s)})", file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def note(message: str) -> None:
    """A message for the person running the command (warnings, where results are), on stderr."""
    print(f"avatar4d: {message}", file=sys.stderr, flush=True)
