"""The ``avatar4d`` command end to end through ``avatar4d.cli.main``: render (orbit, expression and pose edits, a
viewer state), reenact (a still), mesh; each exits 0 and writes what the library would; bad values exit non-zero
with the message on stderr and write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from files import KNOWN, read_png

from avatar4d.cli import main
from avatar4d.errors import AvatarError, ControlError, OutputError
from avatar4d.geometry.angles import HeadRotation
from avatar4d.novel_views import render_edit
from avatar4d.tracking.controls import CONTROL_NAMES
from avatar4d.video import iter_frames, probe_video

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

def run(capsys, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_render_orbit(trained_avatar: Path, tmp_path: Path, capsys):
    out = tmp_path / "orbit.mp4"
    code, stdout, _ = run(capsys, "render", trained_avatar, "--orbit", "--frames", 6, "--size", 32, "--yaw", 20,
                          "--out", out)
    assert code == 0 and stdout.strip() == str(out)
    info = probe_video(out)
    assert (info.width, info.height, info.codec) == (32, 32, "h264")
    assert len(list(iter_frames(out))) == 6


def test_render_expression_and_pose_is_what_the_library_renders(trained_avatar: Path, tmp_path: Path, capsys):
    out = tmp_path / "edit.png"
    code, stdout, _ = run(capsys, "render", trained_avatar, "--expr", "jaw_open=0.8,e2=-1", "--yaw", 15, "--pitch",
                          -8, "--out", out)
    assert code == 0 and stdout.strip() == str(out)
    reference = render_edit(trained_avatar, tmp_path / "reference.png", expression="jaw_open=0.8,e2=-1",
                            rotation=HeadRotation(yaw=15.0, pitch=-8.0))
    np.testing.assert_array_equal(read_png(out), read_png(reference))


def test_render_a_clip_with_a_roll(trained_avatar: Path, tmp_path: Path, capsys):
    out = tmp_path / "clip.mp4"
    code, _, _ = run(capsys, "render", trained_avatar, "--expr", "smile=0.9", "--roll", 10, "--frames", 5, "--out",
                     out)
    assert code == 0 and len(list(iter_frames(out))) == 5


def test_render_without_out_writes_into_the_avatars_renders_folder(trained_avatar: Path, tmp_path: Path, capsys):
    avatar = tmp_path / "avatar"
    shutil.copytree(trained_avatar, avatar)
    code, stdout, _ = run(capsys, "render", avatar, "--size", 32)
    assert code == 0 and stdout.strip() == str(avatar / "renders" / "edit.png")
    assert read_png(avatar / "renders" / "edit.png").shape == (32, 32, 3)


def test_render_a_saved_state_and_flags_override_its_values(trained_avatar: Path, tmp_path: Path, capsys):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"expression": {"jaw_open": 0.6, "e4": 0.5},
                                 "pose": {"yaw": -12.0, "pitch": 5.0, "roll": 4.0}}))
    out = tmp_path / "state.png"
    assert run(capsys, "render", trained_avatar, "--state", state, "--out", out)[0] == 0
    reference = render_edit(trained_avatar, tmp_path / "reference.png", expression={"jaw_open": 0.6, "e4": 0.5},
                            rotation=HeadRotation(-12.0, 5.0, 4.0))
    np.testing.assert_array_equal(read_png(out), read_png(reference))
    # --yaw, --roll and --expr replace the saved values; the pitch stays the saved one (even a 0 replaces them)
    overridden = tmp_path / "overridden.png"
    assert run(capsys, "render", trained_avatar, "--state", state, "--yaw", 0, "--roll", 0, "--expr", "smile=0.3",
               "--out", overridden)[0] == 0
    reference = render_edit(trained_avatar, tmp_path / "reference2.png", expression="smile=0.3",
                            rotation=HeadRotation(0.0, 5.0, 0.0))
    np.testing.assert_array_equal(read_png(overridden), read_png(reference))


def test_reenact_one_frame(trained_avatar: Path, driver_video: Path, tmp_path: Path, capsys):
    out = tmp_path / "still.png"
    code, _, err = run(capsys, "reenact", trained_avatar, driver_video, "--out", out, "--frame", 4, "--max-frames",
                       12, "--size", 40)
    assert code == 0 and "reenactment written" in err
    assert read_png(out).shape == (40, 80, 3)


def test_mesh(trained_avatar: Path, tmp_path: Path, capsys):
    out = tmp_path / "head.ply"
    code, stdout, _ = run(capsys, "mesh", trained_avatar, "--out", out, "--resolution", 48)
    assert code == 0 and stdout.strip() == str(out)
    assert out.stat().st_size > 1000 and (tmp_path / "head_preview.png").exists()
    assert (tmp_path / "head_report.json").exists()
    ply = out.read_bytes()
    assert ply.startswith(b"ply") and b"element vertex" in ply


@pytest.mark.parametrize("argv, error, message", [
    (["render", "{avatar}", "--expr", "jaw_open=abc", "--out", "{out}.png"], ControlError,
     "the value of 'jaw_open' is not a number: 'abc'"),
    (["render", "{avatar}", "--expr", "nose_length=1", "--out", "{out}.png"], ControlError,
     "unknown control(s) nose_length; valid names: " + ", ".join(CONTROL_NAMES) + ", and raw components e0..e31"),
    (["render", "{avatar}", "--orbit", "--expr", "nose_length=1", "--out", "{out}.mp4"], ControlError,
     "unknown control(s) nose_length"),
    (["render", "{avatar}", "--expr", "jaw_open=inf", "--out", "{out}.png"], ControlError, "must be finite"),
    (["render", "{avatar}", "--yaw", "nan", "--out", "{out}.png"], ControlError, "--yaw must be a finite number"),
    (["render", "{avatar}", "--size", "-4", "--out", "{out}.png"], ControlError, "--size must be a positive"),
    (["render", "{avatar}", "--frames", "1", "--out", "{out}.mp4"], ControlError, "at least 2 frames"),
    (["render", "{avatar}", "--out", "{out}.gif"], OutputError, "choose a file ending in .png or .mp4"),
    (["render", "{avatar}", "--state", "{out}.json", "--out", "{out}.png"], ControlError,
     "is not a saved expression/pose state"),
    (["render", "{avatar}/nowhere", "--out", "{out}.png"], AvatarError, "is not an avatar folder"),
    (["mesh", "{avatar}", "--expr", "nose_length=1", "--out", "{out}.ply"], ControlError, "unknown control(s)"),
    (["mesh", "{avatar}", "--expr", "jaw_open=abc", "--out", "{out}.ply"], ControlError, "is not a number"),
    (["reenact", "{avatar}", "{driver}", "--out", "{out}.png"], OutputError, "written as .mp4"),
    (["reenact", "{avatar}", "{driver}", "--out", "{out}.png", "--frame", "3", "--size", "0"], ControlError,
     "--size must be a positive"),
])
def test_bad_values_exit_non_zero_with_the_message_and_write_nothing(trained_avatar: Path, driver_video: Path,
                                                                      tmp_path: Path, capsys, argv, error, message):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    existing = {outputs / f"result{suffix}": KNOWN + suffix.encode()
                for suffix in (".png", ".mp4", ".gif", ".ply", ".json")}
    for path, content in existing.items():
        path.write_bytes(content)
    argv = [a.format(avatar=trained_avatar, driver=driver_video, out=outputs / "result") for a in argv]
    code, stdout, err = run(capsys, *argv)
    assert code == error.exit_code != 0
    errors = [line for line in err.splitlines() if line.startswith("avatar4d: error: ")]
    assert len(errors) == 1 and message in errors[0] and err.rstrip().endswith(errors[0]), err
    assert stdout == ""
    for path, content in existing.items():
        assert path.read_bytes() == content
    assert sorted(outputs.iterdir()) == sorted(existing)
    assert not (trained_avatar / "renders").exists()


def test_a_value_that_does_not_parse_is_refused_by_the_parser(trained_avatar: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["render", str(trained_avatar), "--yaw", "left", "--out", str(tmp_path / "edit.png")])
    assert exit_.value.code == 2
    assert "left" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
