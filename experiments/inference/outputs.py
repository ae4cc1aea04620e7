"""What ``detbench-predict`` writes: the annotated video (PyAV), annotated images, and the
COCO-results records of predictions.json.

The annotated video has the source's frame size and frame rate (``every_nth_frame=n`` divides
the rate by n, so that the video keeps the source's duration); frame k of the source is shown
at time k / fps, so a frame the decoder rejected leaves the previous one on screen for its
duration. Codec: H.264 (libx264) by default; frames with an odd width or height, which 4:2:0
chroma cannot hold, are encoded 4:4:4 instead of being cropped.
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

from PIL import Image
from torch import Tensor

from detectors.base import Detection


class VideoWriter:
    """Encode uint8 [3, H, W] RGB frames into ``path`` with PyAV; opened on the first frame."""

    def __init__(self, path: Path, fps: Fraction, codec: str = "libx264"):
        self.path, self.fps, self.codec = Path(path), Fraction(fps), codec
        self.time_base = 1 / self.fps  # frames' pts count frames: position k is shown at k / fps
        self.container = self.stream = None
        self.frames = 0

    def _open(self, height: int, width: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), "w")
        self.stream = self.container.add_stream(self.codec, rate=self.fps)
        self.stream.width, self.stream.height = width, height
        odd = width % 2 or height % 2
        self.stream.pix_fmt = "yuv444p" if odd and self.codec == "libx264" else "yuv420p"
        self.stream.time_base = self.time_base  # a request: the muxer may pick a finer one (mp4: 1/12800)

    def write(self, image: Tensor, position: int) -> None:
        """Add ``image`` (uint8 [3, H, W]) shown from ``position`` / fps seconds on."""
        import av

        if self.container is None:
            self._open(int(image.shape[1]), int(image.shape[2]))
        frame = av.VideoFrame.from_ndarray(image.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
        frame.pts = position
        frame.time_base = self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (safe to call twice, and after no frame)."""
        if self.container is None:
            return
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


def save_annotated_image(image: Tensor, path: Path) -> None:
    """Write uint8 [3, H, W] to ``path`` (format from its suffix; JPEG at quality 95)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    pil.save(path, **options)


def coco_records(detection: Detection, label_to_category_id: dict[int, int], image_id: int,
                 **extra) -> list[dict]:
    """One COCO result per box: image_id, category_id, bbox [x, y, w, h] (pixels), score, and
    ``extra`` (file_name for images; frame_index and timestamp_s for video)."""
    records = []
    for (x1, y1, x2, y2), score, label in zip(detection["boxes"].tolist(), detection["scores"].tolist(),
                                               detection["labels"].tolist()):
        records.append({"image_id": image_id, "category_id": label_to_category_id[label],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score, **extra})
    return records


def write_json(path: Path, value) -> None:
    """Write ``value`` as JSON atomically (temporary file, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
