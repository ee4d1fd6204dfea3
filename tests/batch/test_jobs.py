"""A batch's list of videos: a folder or a text/CSV list becomes named jobs with their options; unreadable entries,
duplicate folder names and bad options are refused with errors that name the line; shards split a list into
disjoint shares that cover it; long videos get a subsampling step."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar4d.batch.jobs import VideoJob, choose_every, parse_shard, read_jobs, shard_of
from avatar4d.errors import BatchInputError
from avatar4d.video.read import VideoInfo, probe_video


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_folder_gives_its_video_files_sorted_by_name(tmp_path: Path):
    for name in ("b clip.MP4", "a.mov", "notes.txt", ".hidden.mp4", "c.webm"):
        write(tmp_path / "videos" / name, "x")
    jobs = read_jobs(tmp_path / "videos")
    assert [job.name for job in jobs] == ["a", "b_clip", "c"]
    assert [job.video.name for job in jobs] == ["a.mov", "b clip.MP4", "c.webm"]
    assert all(job.video.is_absolute() and job.fov_deg is None and job.every is None for job in jobs)


def test_a_plain_list_has_one_video_per_line_relative_to_the_list(tmp_path: Path):
    listing = write(tmp_path / "lists" / "videos.txt", "# my clips\n\nclips/one.mp4\n/abs/two.mov\n  \n")
    jobs = read_jobs(listing)
    assert [(job.name, job.video) for job in jobs] == [("one", tmp_path / "lists" / "clips" / "one.mp4"),
                                                       ("two", Path("/abs/two.mov"))]
    assert jobs[0].origin == "videos.txt, line 3"


def test_a_csv_list_with_a_header_gives_per_video_options(tmp_path: Path):
    listing = write(tmp_path / "list.csv", "video,fov,every,name\n"
                                           "a.mp4,60,,\n"
                                           "\"b, the second.mp4\",,3,bee\n")
    jobs = read_jobs(listing)
    assert jobs == [VideoJob(name="a", video=tmp_path / "a.mp4", fov_deg=60.0, every=None, origin="list.csv, line 2"),
                    VideoJob(name="bee", video=tmp_path / "b, the second.mp4", fov_deg=None, every=3,
                             origin="list.csv, line 3")]


@pytest.mark.parametrize("text, message", [
    ("video,fov,colour\na.mp4,60,red\n", "unknown column(s) 'colour'"),
    ("video,fov\na.mp4,wide\n", "line 2: fov must be a number, got 'wide'"),
    ("video,every\na.mp4,1.5\n", "line 2: every must be a whole number, got '1.5'"),
    ("video,every\na.mp4,0\n", "line 2: every must be 1 or more"),
    ("video,fov\na.mp4,200\n", "fov must be between 0 and 180"),
    ("a.mp4\nb.mp4,60\n", "line 2 has several columns; a list with per-video options starts with a header row"),
    ("video,name\n,x\n", "line 2: the video column is empty"),
    ("video,name\na.mp4,x,extra\n", "line 2 has 3 columns, the header 2"),
    ("# nothing but a comment\n", "names no video"),
    ("video,name\nsummary.mp4,summary.csv\n", "'summary.csv' cannot be a video's folder name"),
])
def test_unreadable_entries_are_refused_naming_the_line(tmp_path: Path, text: str, message: str):
    with pytest.raises(BatchInputError) as caught:
        read_jobs(write(tmp_path / "list.csv", text))
    assert message in str(caught.value)


def test_a_list_that_is_not_text_is_refused(tmp_path: Path, face_video: Path):
    with pytest.raises(BatchInputError, match="not UTF-8 text"):
        read_jobs(face_video)


def test_a_missing_input_is_refused(tmp_path: Path):
    with pytest.raises(BatchInputError, match="no such folder of videos or list of videos"):
        read_jobs(tmp_path / "nowhere")


def test_two_videos_for_one_folder_are_refused_naming_both(tmp_path: Path):
    listing = write(tmp_path / "list.txt", "day1/talk.mp4\nday2/Talk.mov\n")
    with pytest.raises(BatchInputError) as caught:
        read_jobs(listing)
    assert "same folder 'Talk'" in str(caught.value)
    assert "list.txt, line 1" in str(caught.value) and "list.txt, line 2" in str(caught.value)
    renamed = write(tmp_path / "renamed.csv", "video,name\nday1/talk.mp4,talk1\nday2/Talk.mov,talk2\n")
    assert [job.name for job in read_jobs(renamed)] == ["talk1", "talk2"]


def test_shards_are_disjoint_cover_the_list_and_do_not_depend_on_its_order():
    jobs = [VideoJob(name=f"v{i}", video=Path(f"/v{i}.mp4")) for i in (5, 3, 0, 6, 1, 4, 2)]
    for count in (1, 2, 3, 7, 9):
        shares = [shard_of(jobs, index, count) for index in range(count)]
        names = [job.name for share in shares for job in share]
        assert sorted(names) == sorted(job.name for job in jobs) and len(set(names)) == len(jobs)
        assert shares == [shard_of(list(reversed(jobs)), index, count) for index in range(count)]
    assert [job.name for job in shard_of(jobs, 1, 3)] == ["v1", "v4"]


@pytest.mark.parametrize("text", ["2", "1/0", "a/b", "1/2/3"])
def test_a_shard_that_is_not_i_of_n_is_refused(text: str):
    with pytest.raises(BatchInputError, match="--shard"):
        index, count = parse_shard(text)
        shard_of([], index, count)


def test_shard_index_beyond_the_count_is_refused():
    assert parse_shard(" 2 / 3 ") == (2, 3)
    with pytest.raises(BatchInputError, match="from 0 to 2 of 3"):
        shard_of([], 3, 3)


def info(frames: int, fps: float) -> VideoInfo:
    return VideoInfo(path="x.mp4", width=640, height=360, rotation_deg=0, fps=fps, frame_count=frames,
                     duration_s=frames / fps, codec="h264", has_audio=False)


@pytest.mark.parametrize("frames, fps, max_seconds, every", [
    (1800, 30.0, 60.0, 1),   # exactly the limit
    (1801, 30.0, 60.0, 2),
    (3600, 60.0, 30.0, 2),
    (9000, 25.0, 60.0, 6),
    (9001, 25.0, 60.0, 7),
    (9000, 30.0, 0.0, 1),    # 0: never
])
def test_every_keeps_at_most_max_seconds_of_frames(frames: int, fps: float, max_seconds: float, every: int):
    chosen = choose_every(info(frames, fps), max_seconds)
    assert chosen == every
    if max_seconds:
        assert frames / chosen <= max_seconds * fps + 1e-9 or chosen == 1
        assert chosen == 1 or frames / (chosen - 1) > max_seconds * fps


def test_every_of_the_real_sample_clip(face_video: Path):
    real = probe_video(face_video)
    assert choose_every(real, 60.0) == 1
    assert choose_every(real, real.frame_count / real.fps / 2.5) == 3
