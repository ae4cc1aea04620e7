"""Issue 28, video row: frames are indexed by presentation time, so frames lost in a damaged
chunk are counted Skips at their own positions and every later frame keeps its index."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from experiments.inference.sources import Frame, Skip, VideoSource


def _clip(path: Path, frames: int, lost: set[int]) -> Path:
    """An MJPEG Matroska clip of ``frames`` frames (frame k a flat grey k x 20) whose packets
    ``lost`` are left out, as a damaged chunk would lose them (the rest keep their times)."""
    whole = path.with_suffix(".whole.mkv")
    with av.open(str(whole), "w") as container:
        stream = container.add_stream("mjpeg", rate=Fraction(10))
        stream.height, stream.width, stream.pix_fmt = 16, 16, "yuvj420p"
        for k in range(frames):
            pixels = np.full((16, 16, 3), 20 * k, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with av.open(str(whole)) as source, av.open(str(path), "w") as target:
        inp = source.streams.video[0]
        out = target.add_stream_from_template(inp)
        for k, packet in enumerate(p for p in source.demux(inp) if p.size):
            if k not in lost:
                packet.stream = out
                target.mux(packet)
    return path


def test_frames_lost_in_a_damaged_chunk_are_counted_and_later_frames_keep_their_index(tmp_path):
    items = list(VideoSource(_clip(tmp_path / "clip.mkv", 8, lost={3, 4})).frames())
    frames = {i.index: i for i in items if isinstance(i, Frame)}
    skips = [i for i in items if isinstance(i, Skip)]
    assert sorted(frames) == [0, 1, 2, 5, 6, 7]
    assert [s.index for s in skips] == [3, 4] and "lost" in skips[0].error
    for index, frame in frames.items():   # frame 5 is the frame encoded 5th (grey 100), not the 4th
        assert abs(frame.image.mean().item() * 255 - 20 * index) < 3, index
        assert abs(frame.timestamp_s - frames[0].timestamp_s - index / 10) < 1e-6
