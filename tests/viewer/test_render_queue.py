"""The render queue: latest request only, preview then full resolution after a rest, newer requests abandon a full
render, a failing render does not stop the thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from avatar4d.viewer.render_queue import Rendered, RenderQueue


class Recorder:
    """A fake renderer (sleeps, checks ``cancelled`` every few ms) and a record of what was rendered and delivered."""

    def __init__(self, seconds_per_render: float = 0.02, fail_on: object = None) -> None:
        self.seconds = seconds_per_render
        self.fail_on = fail_on
        self.started: list[tuple[object, int]] = []
        self.cancelled: list[tuple[object, int]] = []
        self.delivered: list[tuple[object, Rendered]] = []
        self.errors: list[tuple[object, Exception]] = []
        self.full_started = threading.Event()
        self._cond = threading.Condition()

    def render(self, request, size, cancelled):
        self.started.append((request, size))
        if request == self.fail_on:
            raise RuntimeError("boom")
        if size >= 16:
            self.full_started.set()
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if cancelled():
                self.cancelled.append((request, size))
                return None
            time.sleep(0.002)
        return np.full((size, size, 3), hash(request) % 256, dtype=np.uint8)

    def deliver(self, key, result: Rendered):
        with self._cond:
            self.delivered.append((key, result))
            self._cond.notify_all()

    def on_error(self, key, error):
        self.errors.append((key, error))

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


@pytest.fixture
def recorder():
    return Recorder()


def make_queue(recorder: Recorder, rest_s: float = 0.1) -> RenderQueue:
    return RenderQueue(recorder.render, recorder.deliver, rest_s=rest_s, on_error=recorder.on_error)


def test_a_burst_of_requests_renders_only_the_latest(recorder):
    release = threading.Event()
    render = recorder.render

    def held_render(request, size, cancelled):
        release.wait(10)  # the first picture is still rendering while the burst arrives
        return render(request, size, cancelled)

    recorder.render = held_render
    queue = make_queue(recorder)
    try:
        for i in range(50):
            queue.submit("page", i, full_size=16, preview_size=8)
        release.set()
        assert recorder.wait_for(lambda: any(r.full and r.request == 49 for _, r in recorder.delivered))
        time.sleep(0.3)
    finally:
        queue.stop()
    # requests 1..48 were replaced while they waited: no backlog, the latest state only
    assert recorder.started in ([(0, 8), (49, 8), (49, 16)], [(49, 8), (49, 16)])
    assert [(r.request, r.full) for _, r in recorder.delivered][-2:] == [(49, False), (49, True)]
    versions = [r.version for _, r in recorder.delivered]
    assert versions == sorted(versions)


def test_preview_comes_at_once_and_full_resolution_after_the_rest(recorder):
    queue = make_queue(recorder, rest_s=0.3)
    try:
        start = time.monotonic()
        queue.submit("page", "a", full_size=16, preview_size=8)
        assert recorder.wait_for(lambda: len(recorder.delivered) >= 1)
        preview_at = time.monotonic() - start
        time.sleep(0.15)
        queue.submit("page", "b", full_size=16, preview_size=8)  # still moving: "a" never gets its full render
        moved = time.monotonic()
        assert recorder.wait_for(lambda: any(r.full for _, r in recorder.delivered))
        full_at = time.monotonic() - moved
    finally:
        queue.stop()
    kinds = [(r.request, r.size) for _, r in recorder.delivered]
    assert kinds == [("a", 8), ("b", 8), ("b", 16)]
    assert preview_at < 0.25
    assert full_at >= 0.3


def test_a_newer_request_abandons_a_full_render_in_progress():
    recorder = Recorder(seconds_per_render=5.0)
    queue = make_queue(recorder, rest_s=0.0)
    try:
        queue.submit("page", "slow", full_size=16)
        assert recorder.full_started.wait(5)
        recorder.seconds = 0.01
        asked = time.monotonic()
        queue.submit("page", "next", full_size=16)
        assert recorder.wait_for(lambda: any(r.request == "next" for _, r in recorder.delivered))
        assert time.monotonic() - asked < 2.0
    finally:
        queue.stop()
    assert ("slow", 16) in recorder.cancelled
    assert [r.request for _, r in recorder.delivered] == ["next"]


def test_every_page_is_served(recorder):
    queue = make_queue(recorder, rest_s=0.0)
    try:
        queue.submit("one", "x", full_size=16, preview_size=8)
        queue.submit("two", "y", full_size=16, preview_size=8)
        assert recorder.wait_for(lambda: {k for k, r in recorder.delivered if r.full} == {"one", "two"})
    finally:
        queue.stop()


def test_a_failing_render_is_reported_and_the_thread_goes_on():
    recorder = Recorder(fail_on="bad")
    queue = make_queue(recorder, rest_s=0.0)
    try:
        queue.submit("page", "bad", full_size=16)
        deadline = time.monotonic() + 5
        while not recorder.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        queue.submit("page", "good", full_size=16)
        assert recorder.wait_for(lambda: any(r.request == "good" for _, r in recorder.delivered))
    finally:
        queue.stop()
    assert recorder.errors and str(recorder.errors[0][1]) == "boom"


def test_a_forgotten_page_gets_nothing(recorder):
    queue = make_queue(recorder, rest_s=0.2)
    try:
        queue.submit("page", "a", full_size=16, preview_size=8)
        assert recorder.wait_for(lambda: len(recorder.delivered) == 1)
        queue.forget("page")
        time.sleep(0.4)
    finally:
        queue.stop()
    assert [(r.request, r.size) for _, r in recorder.delivered] == [("a", 8)]
