"""The viewer served for real: a headless Chromium moves the jaw slider and the mouth changes, the mouse orbits the
head, the save buttons write files; a hand-made websocket client sends values no page would and the server clamps or
refuses them and keeps serving; two pages at once; no path traversal; 127.0.0.1 only; Ctrl-C stops it cleanly."""

from __future__ import annotations

import http.client
import math
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from avatar4d.viewer.browser import open_page, session_ids, slider_selector, wait_for_new_session
from avatar4d.viewer.render_queue import Rendered
from avatar4d.viewer.server import AvatarViewer, ViewerConfig, start_viewer
from avatar4d.viewer.view_state import Orbit, ViewState

pytestmark = pytest.mark.slow

PREVIEW = 32


@pytest.fixture(scope="module")
def viewer(viewer_avatar: Path):
    """The viewer on a free port: 32 px previews, the avatar's native resolution (the dataset's, through its
    upsampler) at rest."""
    with start_viewer(viewer_avatar, port=0, config=ViewerConfig(preview_size=PREVIEW)) as running:
        yield running


def wait_until(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(0.05)


def slider_root(page, handle):
    return page.locator(slider_selector(handle))


def click_slider_at(page, handle, fraction: float) -> None:
    box = slider_root(page, handle).bounding_box()
    assert box is not None, f"slider {handle.label} is not on the page"
    page.mouse.click(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)


def projected_box(avatar, state, landmarks, size: int, margin: float) -> tuple[slice, slice]:
    """Pixel rows/columns around some template landmarks, projected with the state's pose."""
    from avatar4d.viewer.view_state import state_pose

    pose = state_pose(avatar, state)
    points = avatar.face_model.template[list(landmarks)]
    camera_points = points @ pose[:3, :3].T + pose[:3, 3]
    pixels = avatar.camera_at(size).project(camera_points)
    (x0, y0), (x1, y1) = pixels.min(0), pixels.max(0)
    pad = margin * size
    clip = lambda v: int(np.clip(round(v), 0, size))
    return slice(clip(y0 - pad), clip(y1 + pad)), slice(clip(x0 - pad), clip(x1 + pad))


def test_moving_the_jaw_slider_in_a_browser_changes_the_face(chromium, viewer, tmp_path):
    """A click on the jaw slider's track: a preview, then the full picture of exactly the new state; the face
    changes (mouth included) and nothing outside it does (expression acts only in the face region)."""
    from avatar4d.images import to_uint8
    from avatar4d.tracking import landmarks as lm
    from avatar4d.viewer.view_state import resolve_state, state_pose

    page, session = open_page(chromium, viewer)
    try:
        before = session.current_full_render()
        jaw = session.control_sliders[0]
        assert jaw.label == "jaw_open"
        click_slider_at(page, jaw, 0.98)
        high = float(viewer.avatar.face_model.controls.range_max[0])
        low = float(viewer.avatar.face_model.controls.range_min[0])
        wait_until(lambda: session.state.controls[0] > low + 0.9 * (high - low), 30, "the jaw slider's new value")
        assert session.wait_for_render(lambda s: s.current_full_render() is not None, 60)
        after = session.current_full_render()
        page.wait_for_timeout(500)
        shot = tmp_path / "viewer.png"
        page.screenshot(path=str(shot))
    finally:
        page.context.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert after.version > before.version and PREVIEW in session.render_ms, "a preview came first"
    assert "ms" in session.status.content
    assert after.request.orbit.close_to(before.request.orbit), "clicking a slider must not turn the head"
    avatar, state, size = viewer.avatar, after.request, after.size
    expected = to_uint8(avatar.render_image(state_pose(avatar, state), resolve_state(avatar, state).code, size))
    np.testing.assert_array_equal(after.image, expected)
    change = np.abs(after.image.astype(float) - before.image.astype(float)).mean(-1)
    mouth = projected_box(avatar, state, lm.LIPS_OUTER, size, 0.03)
    # the motion grids reach 3 cm beyond the rest-pose landmarks and an open jaw lowers the chin by 1-2 cm more:
    # a fifth of the picture around the face oval holds all of that
    face = projected_box(avatar, state, lm.FACE_OVAL, size, 0.2)
    outside = change.copy()
    outside[face] = 0
    assert change[mouth].mean() > 0.2, change[mouth].mean()
    assert outside.max() == 0, "background, hair and torso do not change with the expression"


def test_the_jaw_slider_moves_the_mouth_more_than_the_forehead(viewer):
    from avatar4d.tracking import landmarks as lm
    from avatar4d.viewer.view_state import rest_state

    avatar = viewer.avatar
    closed = rest_state(avatar).with_control(0, float(avatar.face_model.controls.range_min[0]))
    opened = closed.with_control(0, float(avatar.face_model.controls.range_max[0]))
    size = viewer.full_size
    images = [viewer.render_now(state, size).astype(float) for state in (closed, opened)]
    change = np.abs(images[1] - images[0]).mean(-1)
    mouth = projected_box(avatar, opened, lm.LIPS_OUTER, size, 0.03)
    forehead = projected_box(avatar, opened, (lm.FOREHEAD, *lm.RIGHT_BROW, *lm.LEFT_BROW), size, 0.0)
    assert change[mouth].mean() > 2 * change[forehead].mean(), (change[mouth].mean(), change[forehead].mean())


def test_the_mouse_orbits_and_zooms_and_reset_returns(chromium, viewer):
    page, session = open_page(chromium, viewer)
    try:
        page.mouse.move(300, 400)
        page.mouse.down()
        page.mouse.move(420, 400, steps=8)
        page.mouse.up()
        wait_until(lambda: session.state.orbit.yaw > 5, 20, "a drag to the right to turn the head (yaw > 0)")
        assert abs(session.state.orbit.pitch) < 5
        page.mouse.move(300, 400)
        page.mouse.wheel(0, 400)
        wait_until(lambda: session.state.orbit.distance > 1.02, 20, "the wheel to move the head away")
        page.get_by_role("button", name="Reset").click()
        wait_until(lambda: session.state.orbit.close_to(Orbit()), 20, "the camera's reset")
        assert session.wait_for_render(lambda s: s.current_full_render() is not None, 60)
    finally:
        page.context.close()


def test_save_buttons_write_a_png_and_a_state_for_avatar4d_render(chromium, viewer):
    import cv2

    from avatar4d.novel_views import load_edit_state
    from avatar4d.viewer.view_state import state_rotation

    folder = viewer.avatar.root / "viewer"
    existing = set(folder.glob("*")) if folder.exists() else set()
    page, session = open_page(chromium, viewer)
    try:
        page.get_by_role("button", name="Save PNG").click()
        page.get_by_role("button", name="Save state (JSON)").click()
        wait_until(lambda: len(set(folder.glob("*")) - existing) >= 2, 30, "the saved files")
        page.wait_for_selector("a[download]", timeout=10_000)
        offered = page.eval_on_selector_all("a[download]", "links => links.map(a => a.download)")
    finally:
        page.context.close()
    new = set(folder.glob("*")) - existing
    png = next(p for p in new if p.suffix == ".png")
    state_file = next(p for p in new if p.suffix == ".json")
    image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(image, session.current_full_render().image)
    expression, rotation = load_edit_state(state_file)
    assert set(expression) >= {"jaw_open", "smile"} and rotation == state_rotation(viewer.avatar, session.state)
    assert any(name in (png.name, state_file.name) for name in offered), offered


class RawClient:
    """A websocket client that speaks viser's protocol by hand (msgpack dicts), to send what no page would."""

    def __init__(self, viewer: AvatarViewer) -> None:
        import msgspec
        import viser
        from websockets.sync.client import connect

        self._encode = msgspec.msgpack.encode
        before = session_ids(viewer)
        self.ws = connect(f"ws://127.0.0.1:{viewer.port}", subprotocols=[f"viser-v{viser.__version__}"],
                          max_size=None)
        self.closed = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        self.camera(position=(0.0, -1.0, 0.0))
        self.session = wait_for_new_session(viewer, before)

    def _drain(self) -> None:
        try:
            while True:
                self.ws.recv()
        except Exception:  # noqa: BLE001 (closed, one way or another)
            self.closed.set()

    def send(self, message_type: str, **fields) -> None:
        self.ws.send(self._encode({"type": message_type, **fields}))

    def camera(self, position, look_at=(0.0, 0.0, 0.0), width=800, height=600) -> None:
        self.send("ViewerCameraMessage", wxyz=(math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0), position=position,
                  fov=1.0, near=0.01, far=100.0, image_height=height, image_width=width, look_at=look_at,
                  up_direction=(0.0, 0.0, 1.0))

    def update(self, handle, value) -> None:
        self.send("GuiUpdateMessage", uuid=handle._impl.uuid, updates={"value": value})

    def close(self) -> None:
        self.ws.close()


def page_is_served(viewer: AvatarViewer) -> bool:
    with urllib.request.urlopen(viewer.url, timeout=10) as response:
        return response.status == 200 and b"<html" in response.read().lower()


def test_bad_values_are_clamped_or_refused_and_the_server_keeps_serving(viewer):
    controls = viewer.avatar.face_model.controls
    high = float(controls.range_max[0])
    client = RawClient(viewer)
    session = client.session
    jaw = session.control_sliders[0]
    try:
        client.update(jaw, 1e9)  # out of range: clamped, and the slider is moved back into range
        wait_until(lambda: session.state.controls[0] == pytest.approx(high), 10, "the clamped jaw value")
        wait_until(lambda: jaw.value == pytest.approx(high), 10, "the slider moved back")
        for bad in (float("nan"), float("-inf"), "abc", None, [1, 2], {"x": 1}):
            client.update(jaw, bad)
        time.sleep(1.0)
        assert session.state.controls[0] == pytest.approx(high), "values that are not numbers are refused"
        assert math.isfinite(jaw.value)
        client.update(session.frame_slider, 10**9)
        last = len(viewer.avatar.frames.codes) - 1
        wait_until(lambda: session.state.frame == last, 10, "the frame clamped to the last one")
        client.update(session.resolution, "99999")
        client.update(session.pose_sliders["yaw"], -1e12)
        wait_until(lambda: session.state.rotation.yaw == -60.0, 10, "the clamped yaw")
        assert session.full_size == viewer.full_size, "a resolution that is not offered is refused"
        orbit = session.state.orbit
        client.camera(position=(float("nan"), 0.0, 0.0))
        client.camera(position=(0.0, 0.0, 0.0))  # on the look-at point
        time.sleep(0.5)
        assert session.state.orbit == orbit
        client.ws.send(b"\x00not msgpack\xff")  # the server drops this connection, nothing else
        assert client.closed.wait(10)
    finally:
        client.close()
    assert page_is_served(viewer)
    assert viewer.queue._thread.is_alive()
    fresh = RawClient(viewer)  # a new page still gets its controls and pictures
    try:
        assert fresh.session.current_full_render() is not None
    finally:
        fresh.close()


class Recorder:
    """A session listener that keeps what it hears, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.states: dict[int, ViewState] = {}
        self.pictures: list[Rendered] = []

    def requested(self, version: int, state: ViewState) -> None:
        self.events.append(("requested", version))
        self.states[version] = state

    def sent(self, result: Rendered) -> None:
        self.events.append(("sent", result.version))
        self.pictures.append(result)


def test_a_listener_hears_the_request_of_a_moved_slider_then_its_preview_and_full_picture(viewer):
    controls = viewer.avatar.face_model.controls
    value = float(controls.range_min[0] + 0.8 * (controls.range_max[0] - controls.range_min[0]))
    client = RawClient(viewer)
    recorder = Recorder()
    try:
        session = client.session
        session.listen(recorder)
        client.update(session.control_sliders[0], value)
        wait_until(lambda: session.state.controls[0] == pytest.approx(value), 10, "the jaw value")
        assert session.wait_for_render(lambda s: s.current_full_render() is not None, 60)
        full = session.current_full_render()
    finally:
        client.close()
    assert recorder.events == [("requested", full.version), ("sent", full.version), ("sent", full.version)]
    assert recorder.states[full.version] == full.request == session.state
    assert [p.size for p in recorder.pictures] == [PREVIEW, viewer.full_size]
    assert recorder.pictures[-1] is full


def test_two_browsers_at_once_each_have_their_own_view(chromium, viewer):
    page_a, session_a = open_page(chromium, viewer)
    page_b = None
    try:
        page_b, session_b = open_page(chromium, viewer)
        assert session_a is not session_b
        smile_a = session_a.control_sliders[1]
        state_b = session_b.state
        click_slider_at(page_a, smile_a, 0.95)
        wait_until(lambda: session_a.state.controls[1] > state_b.controls[1] + 0.1, 30, "page A's smile")
        assert session_a.wait_for_render(lambda s: s.current_full_render() is not None, 60)
        click_slider_at(page_b, session_b.pose_sliders["yaw"], 0.9)
        wait_until(lambda: session_b.state.rotation.yaw > 20, 30, "page B's yaw")
        assert session_b.wait_for_render(lambda s: s.current_full_render() is not None, 60)
        assert session_b.state.controls == state_b.controls, "page A's slider did not move page B's face"
        assert session_a.state.rotation.yaw == 0.0, "page B's slider did not turn page A's head"
    finally:
        for page in (page_a, page_b):
            if page is not None:
                page.context.close()


def test_a_replayed_frame_shows_its_photo_or_says_why_not(viewer, avatar_without_dataset):
    from avatar4d.viewer.view_state import frame_state

    client = RawClient(viewer)
    try:
        session = client.session
        index = viewer.avatar.frames.heldout[0]
        client.update(session.frame_slider, index)
        wait_until(lambda: session.state == frame_state(viewer.avatar, index), 10, "the replayed frame")
        assert session.wait_for_render(lambda s: s.current_full_render() is not None and s.picture is not None
                                       and s._shown.request.frame == index, 60)
        height, width = session.picture.shape[:2]
        assert width / height == pytest.approx(800 / 600, rel=0.02)
        assert f"Replaying frame {index} (held-out)" in session.frame_text.content
        assert "photo is shown" in session.frame_text.content
    finally:
        client.close()
    with start_viewer(avatar_without_dataset, port=0, config=ViewerConfig(preview_size=0)) as bare:
        client = RawClient(bare)
        try:
            assert "Ground truth not shown" in client.session.frame_text.content
            assert "gone" in client.session.frame_text.content
        finally:
            client.close()


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
                                  "/assets/../../../../etc/passwd", "/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
                                  "//etc/passwd", "/..", "/assets/"])
def test_no_file_outside_the_web_client_is_served(viewer, path):
    connection = http.client.HTTPConnection("127.0.0.1", viewer.port, timeout=10)
    connection.request("GET", path)  # sent as written: http.client does not normalise the path
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 404, (path, response.status)
    assert b"root:" not in body


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 9))  # UDP connect sends nothing; it picks the outgoing interface
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_listens_on_loopback_only(viewer):
    assert viewer.host == "127.0.0.1" and page_is_served(viewer)
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        socket.create_connection((address, viewer.port), timeout=3).close()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started_ignoring_sigint", [False, True], ids=["terminal", "background-of-a-script"])
def test_ctrl_c_stops_the_view_command_cleanly(viewer_avatar, started_ignoring_sigint):
    """Also when started as a script's background command, which inherits SIGINT ignored (Python then installs no
    KeyboardInterrupt handler of its own: the view command must)."""
    process = subprocess.Popen([sys.executable, "-m", "avatar4d", "view", str(viewer_avatar), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_ignore_sigint if started_ignoring_sigint else None)
    lines: queue.Queue[str] = queue.Queue()
    stderr: list[str] = []

    def read() -> None:
        for line in process.stderr:
            stderr.append(line)
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and process.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0]
        assert url is not None, "".join(stderr)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert code in (0, 130), "".join(stderr)
    assert took < 10
    assert "viewer stopped" in "".join(stderr)


def test_an_avatar_with_an_upsampler_is_shown_at_full_resolution_with_no_preview(viewer_avatar):
    with start_viewer(viewer_avatar, port=0) as running:
        assert running.avatar.upsampler is not None
        assert running.preview_size == 0 and running.full_size == running.avatar.native_size
        assert running.full_size == running.avatar.dataset_size
