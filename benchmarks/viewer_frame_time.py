"""The viewer's frame time as a person sees it: a headless Chromium (Debian's, through Playwright) drags the jaw_open
slider back and forth with the mouse, then orbits the head with the mouse, each for ``--seconds``, and the server
records every picture it sends to that page.

    python benchmarks/viewer_frame_time.py AVATAR_DIR [AVATAR_DIR ...] [--seconds 10]

The viewer runs in this process (``start_viewer``), so the page's input events, the requests that reach the server
and the pictures it sends are all on one clock. Per avatar and pass: pictures sent per second while dragging, the
interval between them (median, 90th percentile), their render time, the latency from a request reaching the server
to the first picture sent that includes it (the first of the same or a newer version), and their size (an avatar with
an upsampler must be shown at its native size while the slider moves, with no preview). Screenshots of the page at
rest, at the end of the drag (mouse still down) and after it settled are compared (the page's canvas must change);
the last two go to ``results/viewer-frame-time/``. Writes ``results/<stamp>-viewer-frame-time.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import math
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from stages import save_table

from avatar4d.viewer.browser import CHROMIUM, CHROMIUM_ARGS, open_page, slider_selector
from avatar4d.viewer.render_queue import Rendered
from avatar4d.viewer.server import start_viewer
from avatar4d.viewer.view_state import ViewState

INPUT_HZ = 60.0
"""Mouse moves per second while dragging (a display's refresh rate)."""
SWEEP_S = 2.0
"""Seconds of one sweep there and back."""


@dataclass(frozen=True)
class Sent:
    """A picture handed to the page."""

    at: float
    """time.monotonic() when it left."""
    version: int
    size: int
    render_ms: float
    full: bool


@dataclass
class DeliveryLog:
    """A session listener that keeps the time of every request and picture (for :meth:`ViewerSession.listen`)."""

    requests: list[tuple[float, int]] = field(default_factory=list)
    """(time.monotonic(), version) of each request."""
    pictures: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requested(self, version: int, state: ViewState) -> None:
        with self.lock:
            self.requests.append((time.monotonic(), version))

    def sent(self, result: Rendered) -> None:
        with self.lock:
            self.pictures.append(Sent(time.monotonic(), result.version, result.size, 1000 * result.seconds,
                                      result.full))

    def between(self, start: float, end: float) -> tuple[list[tuple[float, int]], list[Sent]]:
        """The requests made and the pictures sent in [start, end]."""
        with self.lock:
            return ([r for r in self.requests if start <= r[0] <= end],
                    [p for p in self.pictures if start <= p.at <= end])


def triangle(t: float) -> float:
    """0 -> 1 -> 0 over one sweep of ``SWEEP_S`` seconds, then again."""
    phase = (t / SWEEP_S) % 1.0
    return 2 * phase if phase < 0.5 else 2 - 2 * phase


def drag(page, path: Callable[[float], tuple[float, float]], seconds: float, end_xy: tuple[float, float],
         before_release: Callable[[], None]) -> tuple[float, float, int]:
    """Press at ``path(0)``, move to ``path(t)`` ``INPUT_HZ`` times a second for ``seconds``, then to ``end_xy``
    (a view that differs from the rest view), call ``before_release()``, release. Returns the start and end of the
    moves on time.monotonic() and how many moves were made."""
    page.mouse.move(*path(0.0))
    page.mouse.down()
    start = time.monotonic()
    moves = 0
    while (now := time.monotonic()) < start + seconds:
        page.mouse.move(*path(now - start))
        moves += 1  # each move returns once the page has taken it: a busy page makes fewer than INPUT_HZ
        time.sleep(max(0.0, start + moves / INPUT_HZ - time.monotonic()))
    page.mouse.move(*end_xy)
    end = time.monotonic()
    before_release()
    page.mouse.up()
    return start, end, moves + 1


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latencies_ms(requests: list[tuple[float, int]], pictures: list[Sent]) -> list[float]:
    """For each request, ms from its arrival to the first picture sent afterwards whose version is the same or
    newer (the first picture that includes it); requests no picture included yet are left out."""
    out = []
    for at, version in requests:
        first = next((p for p in pictures if p.version >= version and p.at >= at), None)
        if first is not None:
            out.append(1000 * (first.at - at))
    return out


def summarize(log: DeliveryLog, start: float, end: float, moves: int) -> dict:
    """The figures of one drag from ``start`` to ``end`` (latencies count pictures sent after the drag too)."""
    requests, pictures = log.between(start, end)
    _, later = log.between(start, math.inf)
    times = [p.at for p in pictures]
    intervals = [1000 * (b - a) for a, b in zip(times, times[1:])]
    latency = latencies_ms(requests, later)
    return {"seconds": end - start, "mouse_moves": moves, "requests": len(requests), "pictures": len(pictures),
            "pictures_per_s": len(pictures) / (end - start), "requests_per_s": len(requests) / (end - start),
            "interval_median_ms": percentile(intervals, 50), "interval_p90_ms": percentile(intervals, 90),
            "render_median_ms": percentile([p.render_ms for p in pictures], 50),
            "latency_median_ms": percentile(latency, 50), "latency_p90_ms": percentile(latency, 90),
            "sizes": sorted({p.size for p in pictures}), "previews": sum(not p.full for p in pictures),
            "pictures_sent": [asdict(p) | {"at": p.at - start} for p in pictures],
            "requests_made": [(at - start, version) for at, version in requests]}


def decoded(png: bytes) -> np.ndarray:
    """(H, W, 3) uint8 BGR of a PNG screenshot."""
    import cv2

    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def changed_fraction(first: np.ndarray, second: np.ndarray, box: dict[str, float]) -> float:
    """Fraction of the pixels inside ``box`` (the 3D canvas, CSS pixels at scale 1) of two (H, W, 3) uint8 screenshots
    that differ by more than 8 levels in some channel."""
    rows = slice(int(box["y"]), int(box["y"] + box["height"]))
    columns = slice(int(box["x"]), int(box["x"] + box["width"]))
    return float((np.abs(first[rows, columns].astype(int) - second[rows, columns].astype(int)).max(-1) > 8).mean())


def run_pass(page, session, log: DeliveryLog, name: str, seconds: float, shots: Path) -> dict:
    """One drag (``name``: "jaw_open" or "orbit"). Screenshots at rest, at the end of the drag and once it settled
    are compared; the last two are saved as ``<shots>-<name>-{drag,settled}.jpg``."""
    import cv2

    page.wait_for_timeout(1500)  # the page fades in
    canvas = page.locator("canvas").first.bounding_box()
    rest = decoded(page.screenshot())
    if name == "jaw_open":  # along the slider's track, from nine tenths (mouth open) to a tenth of it and back
        box = page.locator(slider_selector(session.control_sliders[0])).bounding_box()
        y = box["y"] + box["height"] / 2
        x_at = lambda fraction: box["x"] + box["width"] * (0.1 + 0.8 * fraction)
        path, end_xy = (lambda t: (x_at(triangle(t + SWEEP_S / 2)), y)), (x_at(1.0), y)
    else:  # across the head, as the tests turn it: up to 120 px to the right
        path, end_xy = (lambda t: (300.0 + 120.0 * triangle(t), 400.0)), (420.0, 400.0)
    screenshots = {"rest": rest}
    start, end, moves = drag(page, path, seconds, end_xy,
                             lambda: screenshots.update(drag=decoded(page.screenshot())))
    if not session.wait_for_render(lambda s: s.current_full_render() is not None, 60):
        raise TimeoutError(f"{name}: no full picture of the last state within 60 s")
    page.wait_for_timeout(500)
    screenshots["settled"] = decoded(page.screenshot())
    saved = []
    for moment in ("drag", "settled"):
        path_out = shots.with_name(f"{shots.name}-{name}-{moment}.jpg")
        cv2.imwrite(str(path_out), screenshots[moment], [cv2.IMWRITE_JPEG_QUALITY, 90])
        saved.append(path_out.name)
    return {"pass": name, **summarize(log, start, end, moves),
            "page_changed_during_drag": changed_fraction(rest, screenshots["drag"], canvas),
            "page_changed_after": changed_fraction(rest, screenshots["settled"], canvas), "screenshots": saved}


def measure(root: Path, browser, seconds: float, shots: Path) -> list[dict]:
    """Both passes on one avatar, each in a new page."""
    rows = []
    with start_viewer(root, port=0) as viewer:
        for name in ("jaw_open", "orbit"):
            page, session = open_page(browser, viewer)
            log = DeliveryLog()
            session.listen(log)
            try:
                row = run_pass(page, session, log, name, seconds, shots.with_name(f"{shots.name}-{root.name}"))
            finally:
                page.context.close()
            rows.append({"avatar": str(root), "name": root.name, "native_size": viewer.avatar.native_size,
                         "full_size": viewer.full_size, "preview_size": viewer.preview_size,
                         "upsampler": viewer.avatar.upsampler is not None, **row})
    return rows


def cell(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = ["| avatar | pass | picture px | pictures/s | interval ms median / p90 | render ms median | "
             "latency ms median / p90 | mouse moves/s | requests/s | previews | page changed while dragging |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['pass']} | {', '.join(map(str, r['sizes'])) or '—'} "
                     f"(native {r['native_size']}) | {r['pictures_per_s']:.2f} | {cell(r['interval_median_ms'])} / "
                     f"{cell(r['interval_p90_ms'])} | {cell(r['render_median_ms'])} | {cell(r['latency_median_ms'])}"
                     f" / {cell(r['latency_p90_ms'])} | {r['mouse_moves'] / r['seconds']:.1f} | "
                     f"{r['requests_per_s']:.1f} | {r['previews']} | {100 * r['page_changed_during_drag']:.1f}% of pixels |")
    lines.append("")
    lines += [f"- {r['name']}, {r['pass']}: {problem}" for r in rows for problem in problems(r)] or [
        "- Every picture sent while dragging was at the avatar's native size, none a preview, and the page changed."]
    return "\n".join(lines)


def problems(row: dict) -> list[str]:
    """What a pass shows against the viewer's promise: native size while a control moves, and a page that changes."""
    out = []
    if row["sizes"] != [row["native_size"]]:
        out.append(f"pictures at {row['sizes']} px while dragging, not only the native {row['native_size']} px")
    if row["upsampler"] and row["previews"]:
        out.append(f"{row['previews']} preview(s) for an avatar with an upsampler")
    if row["page_changed_during_drag"] == 0:
        out.append("the page's canvas did not change during the drag")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("avatars", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of each drag")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    options = parser.parse_args()

    import torch
    from playwright.sync_api import sync_playwright

    from avatar4d.environment import machine_description

    if not CHROMIUM.exists():
        raise SystemExit(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    shots = options.out / "viewer-frame-time" / stamp
    shots.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            rows = [row for root in options.avatars for row in measure(root, browser, options.seconds, shots)]
        finally:
            browser.close()
    machine = machine_description()
    preamble = (f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
                f"({torch.get_num_threads()} threads), Python {platform.python_version()}; the server, Playwright and "
                f"Chromium ({CHROMIUM}, headless, software rendering) on the same machine. Each pass: the mouse "
                f"held down and moved up to {INPUT_HZ:.0f} times a second for {options.seconds:g} s (Playwright waits "
                "for the page to take each move: mouse moves/s is what it took), back and forth "
                f"({SWEEP_S:g} s a sweep) along the jaw_open slider, then (a new page) across the head to orbit "
                "it. Pictures/s, intervals, render times: the pictures the server sent to that page during the "
                "drag. Latency: from a request (a slider or camera message) reaching the server to the first "
                "picture sent of the same or a newer version; the page's own input-to-message and "
                "websocket-to-screen time are not in it (viser's page sends a slider's value at most every 50 ms). "
                "Page changed: pixels of the 3D canvas in a screenshot at the end of the drag (mouse still down) "
                "that differ by more than 8 levels from one at rest.")
    text = save_table(options.out, "viewer-frame-time", "Viewer frame time in Chromium", preamble, table(rows),
                      {"machine": machine, "seconds": options.seconds, "input_hz": INPUT_HZ, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
