"""``avatar4d batch`` as a user runs it: a batch killed while training resumes on the rerun without preparing again
and finishes; bad input (a folder that is not a batch's, two videos for one folder, a bad shard) exits non-zero
with the message on stderr and writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from files import KNOWN

from avatar4d.cli import main

pytestmark = pytest.mark.slow

TINY_OPTIONS = ["--iters", "3", "--image-size", "32", "--size", "128", "--max-seconds", "1.5", "--no-lpips"]


def run(capsys, *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def wait_for_stage(status: Path, stage: str, process: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if status.exists() and json.loads(status.read_text()).get("stage") == stage:
            return
        assert process.poll() is None, f"the batch ended (exit {process.returncode}) before reaching {stage}"
        time.sleep(0.05)
    raise AssertionError(f"the batch did not reach {stage} within {timeout_s:g} s")


def test_a_killed_batch_resumes_and_skips_what_is_done(tmp_path: Path, face_video: Path, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{face_video}\n")
    out = tmp_path / "runs"
    argv = ["batch", listing, "--out", out, *TINY_OPTIONS, "--workers", "1", "--threads", "1"]
    process = subprocess.Popen([sys.executable, "-m", "avatar4d", *map(str, argv)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status_path = out / face_video.stem / "status.json"
    try:
        wait_for_stage(status_path, "train", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    killed = json.loads(status_path.read_text())
    assert (killed["state"], killed["stage"]) == ("running", "train")
    manifest = out / face_video.stem / "dataset" / "manifest.json"
    prepared_at = manifest.stat().st_mtime_ns
    assert not (out / face_video.stem / "avatar").exists()

    code, err = run(capsys, *argv)
    assert code == 0, err
    assert "1 video; 0 finished already, 0 failed before" in err and "1 video: 1 done" in err
    finished = json.loads(status_path.read_text())
    assert finished["state"] == "done" and list(finished["seconds"]) == ["prepare", "train", "evaluate"]
    assert manifest.stat().st_mtime_ns == prepared_at
    assert f"| {face_video.stem} | done | 36 |" in (out / "summary.md").read_text()

    code, err = run(capsys, *argv)
    assert code == 0 and "1 finished already" in err and "0 to run" in err


def test_an_output_folder_that_is_not_a_batch_is_refused_untouched(tmp_path: Path, face_video: Path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_bytes(KNOWN)
    code, err = run(capsys, "batch", face_video.parent, "--out", out)
    assert code == 4 and "is not a batch folder" in err and "nothing in it was changed" in err
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"] and (out / "chapter1.tex").read_bytes() == KNOWN


def test_two_videos_for_one_folder_are_refused_before_anything_is_written(tmp_path: Path, face_video: Path, capsys):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{face_video}\n{face_video}\n")
    code, err = run(capsys, "batch", listing, "--out", tmp_path / "runs")
    assert code == 2 and "two videos would write the same folder 'single_face'" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("shard, message", [("3/2", "--shard 3/2"), ("half", "--shard takes i/n")])
def test_a_bad_shard_is_refused(tmp_path: Path, face_video: Path, capsys, shard: str, message: str):
    code, err = run(capsys, "batch", face_video.parent, "--out", tmp_path / "runs", "--shard", shard)
    assert code == 2 and message in err and not (tmp_path / "runs").exists()
