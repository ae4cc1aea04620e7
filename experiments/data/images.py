"""Image files -> float32 [3, H, W] RGB tensors in [0, 1], with clear errors for bad files.

Every file-backed dataset decodes through :func:`load_image`, so every loader handles the same
cases the same way:

- grayscale (L, 1), palette (P), RGBA/LA, CMYK, YCbCr: converted to RGB by Pillow (alpha is
  dropped, not composited: the colour under a transparent pixel is kept);
- 16-bit and 32-bit integer images (I;16, I) and float images (F): scaled by the full range of
  their bit depth (65535 for 16-bit), then repeated to three channels;
- missing file: ``FileNotFoundError`` naming the file;
- corrupt or truncated file: :class:`ImageFileError` naming the file and what Pillow said.

EXIF orientation: images are read in their stored pixel frame (EXIF orientation NOT applied),
the convention of pycocotools, torchvision's ``decode_image`` and the VOC devkit, in which
COCO, VOC and most exported sets are annotated (Roboflow's exports are re-encoded upright).
An annotation tool that shows the image rotated by its EXIF tag (and so records the rotated
size) is recognised per image: when the file's EXIF orientation is 5..8 (a quarter turn) and
the annotation's size is the stored size transposed, ``AnnotatedImages`` decodes it with
``exif=True`` (``PIL.ImageOps.exif_transpose``), so boxes and pixels agree in both cases.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Full-scale value of Pillow's integer / float modes (Pillow opens 16-bit PNG as I;16 or I).
_FULL_SCALE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0,
               "I": 65535.0, "F": 1.0}


class ImageFileError(ValueError):
    """An image file that exists but cannot be decoded (corrupt, truncated, not an image)."""


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only (no decoding)."""
    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageFileError(f"image file {path} cannot be read: {err}") from err
    return h, w


def pil_to_tensor01(im: Image.Image) -> Tensor:
    """A Pillow image of any mode -> float32 [3, H, W] RGB in [0, 1]."""
    if im.mode in _FULL_SCALE:
        a = np.asarray(im, dtype=np.float32)  # [H, W]
        # Pillow's "I" mode also holds 8-bit data promoted to int32; scale by what the data needs.
        scale = _FULL_SCALE[im.mode]
        if im.mode == "I" and a.size and a.max() <= 255:
            scale = 255.0
        a = np.clip(np.nan_to_num(a / scale, nan=0.0), 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0).expand(3, -1, -1).contiguous()
    if im.mode != "RGB":
        im = im.convert("RGB")
    a = np.asarray(im, dtype=np.uint8)  # [H, W, 3]
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag of an image file (1 = upright; 1 when absent or unreadable)."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1


def load_image(path: str | Path, repair: bool = False, exif: bool = False) -> Tensor:
    """Decode ``path`` to float32 [3, H, W] RGB in [0, 1] (see the module docstring).

    repair: decode a truncated file as far as it goes (Pillow's ``LOAD_TRUNCATED_IMAGES``;
    the missing rows are grey for JPEG, black for PNG) instead of raising.
    exif: apply the EXIF orientation (``PIL.ImageOps.exif_transpose``) after decoding.
    """
    path = Path(path)
    _check_exists(path)
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = repair
        with Image.open(path) as im:
            im.load()  # decodes everything now: a truncated file raises here, not later
            return pil_to_tensor01(ImageOps.exif_transpose(im) if exif else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageFileError(f"image file {path} is corrupt or truncated: {err}") from err
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def save_image(image: Tensor, path: str | Path) -> None:
    """Write float [3, H, W] in [0, 1] as an 8-bit RGB file (format from the suffix; PNG is
    lossless, so a PNG written here loads back within 1/255)."""
    a = (image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
