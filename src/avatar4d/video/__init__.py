"""Video in and out: decoding with display rotation honoured, and atomic H.264 mp4 writing (PyAV, FFmpeg inside)."""

from avatar4d.video.read import VideoFrame, VideoInfo, iter_frames, probe_video
from avatar4d.video.write import Mp4Writer

__all__ = ["Mp4Writer", "VideoFrame", "VideoInfo", "iter_frames", "probe_video"]
