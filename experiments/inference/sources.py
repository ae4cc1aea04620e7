"""What ``source=`` names -> a sequence of frames float [3, H, W] RGB in [0, 1].

``source`` is one of

- an image file (any suffix of ``experiments.data.images.IMAGE_SUFFIXES``);
- a folder: every image below it, recursively, sorted by path;
- a glob (``*``, ``?`` or ``[`` in it; ``**`` recurses): the images it matches, sorted;
- a video file (``VIDEO_SUFFIXES``), decoded with PyAV.

Images decode through ``experiments.data.images.load_image``, the datasets' own loader, so a
file gives the detector exactly the tensor its dataset would (grayscale, palette, RGBA and
16-bit images converted the same way). Video frames are decoded to RGB24 and scaled by 1/255.

Bad input: a missing source, an empty folder or a glob matching no image, and a video PyAV
cannot open are errors naming the path. A corrupt image in a folder, and a video position with
no good frame (lost in a damaged chunk, a packet the decoder rejects, a frame the decoder flags
corrupt) is a counted skip (a ``Skip`` in the frame stream): the rest go on, at their own
positions.

``every_nth_frame`` keeps positions 0, n, 2n, ... of the sequence (frames or images, skipped
ones included in the count) and ``max_frames`` (0: all) stops after that many kept frames.
"""
from __future__ import annotations

import glob
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from experiments.data.images import IMAGE_SUFFIXES, ImageFileError, load_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ts")


class SourceError(ValueError):
    """A source that cannot be read at all: missing, empty, not an image or video, unopenable."""


@dataclass
class Frame:
    """One decoded frame or image.

    index:       position in the source (image order, or the video frame's position by its
                 presentation time: round((time - stream start) x fps)).
    image:       float32 [3, H, W] RGB in [0, 1], on the CPU.
    name:        the image's path relative to the source folder (video: "").
    timestamp_s: the video frame's presentation time in seconds (images: None).
    decode_s:    seconds spent reading and decoding it (in the decoding thread).
    """

    index: int
    image: Tensor
    name: str
    timestamp_s: float | None
    decode_s: float


@dataclass
class Skip:
    """A frame or image that could not be decoded; counted in predict_stats.json."""

    index: int
    name: str
    error: str


def _kept(index: int, kept: int, every_nth_frame: int, max_frames: int) -> tuple[bool, bool]:
    """(keep this position?, stop before it?)"""
    if max_frames and kept >= max_frames:
        return False, True
    return index % every_nth_frame == 0, False


class ImageSource:
    """Image files, in a fixed order; ``root`` is what ``name`` is relative to."""

    kind = "images"

    def __init__(self, files: list[Path], root: Path, description: str):
        if not files:
            raise SourceError(f"source: {description} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        self.files, self.root, self.description = files, root, description

    def __len__(self) -> int:
        return len(self.files)

    def expected_frames(self, every_nth_frame: int, max_frames: int) -> int:
        n = -(-len(self.files) // every_nth_frame)
        return min(n, max_frames) if max_frames else n

    def frames(self, every_nth_frame: int = 1, max_frames: int = 0) -> Iterator[Frame | Skip]:
        kept = 0
        for index, path in enumerate(self.files):
            keep, stop = _kept(index, kept, every_nth_frame, max_frames)
            if stop:
                return
            if not keep:
                continue
            kept += 1
            name = path.relative_to(self.root).as_posix() if self.root in path.parents else path.name
            start = time.perf_counter()
            try:
                image = load_image(path)
            except (ImageFileError, FileNotFoundError) as error:
                yield Skip(index, name, str(error))
                continue
            yield Frame(index, image, name, None, time.perf_counter() - start)


class VideoSource:
    """A video file's first video stream, decoded with PyAV. ``fps`` is the stream's average
    rate (a Fraction), ``size`` (H, W), ``frame_count`` the container's count (0 if unknown)."""

    kind = "video"

    def __init__(self, path: Path):
        import av

        self.path = path
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise SourceError(f"source: {path} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                self.fps = Fraction(rate) if rate else Fraction(25)
                self.size = (int(stream.codec_context.height), int(stream.codec_context.width))
                self.frame_count = int(stream.frames or 0)
        except av.error.FFmpegError as error:
            raise SourceError(f"source: video {path} cannot be opened: {error}") from error
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise SourceError(f"source: video {path} reports a frame size of {self.size}")

    def expected_frames(self, every_nth_frame: int, max_frames: int) -> int | None:
        if not self.frame_count:
            return max_frames or None
        n = -(-self.frame_count // every_nth_frame)
        return min(n, max_frames) if max_frames else n

    def frames(self, every_nth_frame: int = 1, max_frames: int = 0) -> Iterator[Frame | Skip]:
        """Frames indexed by presentation time (index = round((pts time - stream start) x fps)),
        never by decode order, so a damaged chunk cannot shift the frames after it. Each
        position with no good frame is a Skip: lost (no frame has its time; a packet the
        decoder rejected, named when there was one) or flagged corrupt by the decoder (drawn from
        damaged data). Positions past the last frame up to the container's frame count too."""
        import av

        state = {"next": 0, "kept": 0, "error": None}

        def gaps(upto: int) -> Iterator[Skip | None]:
            """Skips for the positions state["next"] .. upto - 1; None: stop."""
            while state["next"] < upto:
                index = state["next"]
                keep, stop = _kept(index, state["kept"], every_nth_frame, max_frames)
                if stop:
                    yield None
                    return
                state["next"] += 1
                if keep:
                    state["kept"] += 1
                    why = state["error"] or "no frame has this presentation time (lost in a damaged chunk)"
                    yield Skip(index, f"{self.path.name} frame {index}", why)

        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
            start = time.perf_counter()
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as error:
                    if packet.size:   # the empty packet is the end-of-stream flush
                        state["error"] = f"the decoder rejected a packet: {type(error).__name__}: {error}"
                    continue
                for frame in decoded:
                    if t0 is None:
                        t0 = float(frame.time) if frame.time is not None else 0.0
                    index = state["next"] if frame.time is None else round((float(frame.time) - t0) * self.fps)
                    index = max(index, state["next"])   # a repeated time keeps its decode order
                    for skip in gaps(index):
                        if skip is None:
                            return
                        yield skip
                    state["error"] = None
                    keep, stop = _kept(index, state["kept"], every_nth_frame, max_frames)
                    if stop:
                        return
                    state["next"] = index + 1
                    if not keep:
                        continue
                    state["kept"] += 1
                    if frame.is_corrupt:
                        yield Skip(index, f"{self.path.name} frame {index}",
                                   "the decoder flagged the frame corrupt (decoded from damaged data)")
                        continue
                    image = torch.from_numpy(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
                    image = image.permute(2, 0, 1).float().div_(255.0)
                    timestamp = float(frame.time) if frame.time is not None else float(index / self.fps)
                    yield Frame(index, image, "", timestamp, time.perf_counter() - start)
                    start = time.perf_counter()
            for skip in gaps(self.frame_count):
                if skip is None:
                    return
                yield skip


def open_source(source: str | Path) -> ImageSource | VideoSource:
    """The source ``source`` names (module docstring); errors name the path."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        return ImageSource(files, Path(_glob_root(text)), f"the glob '{text}'")
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"source: {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return ImageSource(files, path, f"the folder {path}")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path)
    if suffix in IMAGE_SUFFIXES:
        return ImageSource([path], path.parent, f"{path}")
    raise SourceError(f"source: {path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                      f"({', '.join(VIDEO_SUFFIXES)})")


def _glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard ("data/**/*.png" -> "data")."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."
