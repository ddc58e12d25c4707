"""Reading images of any colour mode as RGB, and telling usable files from bad ones."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16/32-bit greyscale


@dataclasses.dataclass(frozen=True)
class Check:
    """Outcome of inspecting one file."""

    ok: bool
    width: int = 0
    height: int = 0
    mode: str = ""  # original PIL mode, e.g. 'L', 'RGBA', 'CMYK', 'I;16'
    reason: str = ""  # why it is unusable: zero_byte, not_an_image, corrupt


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit greyscale is rescaled, not clipped)."""
    if img.mode == "RGB":
        return img
    if img.mode in HIGH_BIT_MODES:
        values = np.asarray(img, dtype=np.float64)  # (H, W)
        scale = 65535.0 if img.mode != "F" else max(float(values.max()), 1e-12)
        grey = np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Open and fully decode an image as RGB."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


def load_resized(path: Path | str, size: tuple[int, int]) -> np.ndarray:
    """Decode and bilinearly resize to size (W, H) as RGB: (H, W, 3) uint8, possibly a read-only view.

    8-bit greyscale is resized on its one band and then repeated: the same bytes as resizing its
    RGB conversion (PIL resamples every band alike), for a third of the work.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode == "L":
            grey = np.asarray(img.resize(size, resample=Image.BILINEAR))  # (H, W)
            return np.broadcast_to(grey[..., None], (*grey.shape, 3))
        return np.asarray(to_rgb(img).resize(size, resample=Image.BILINEAR))


def inspect(path: Path) -> Check:
    """Fully decode a file to find out whether it is a usable image."""
    try:
        if path.stat().st_size == 0:
            return Check(False, reason="zero_byte")
        with Image.open(path) as img:
            mode = img.mode
            img.load()  # raises on truncated or corrupt data
            rgb = to_rgb(img)
            width, height = rgb.size
    except UnidentifiedImageError:
        return Check(False, reason="not_an_image")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return Check(False, reason="corrupt")
    if width == 0 or height == 0:
        return Check(False, reason="corrupt")
    return Check(True, width, height, mode)


MAX_SIDE = 4  # the longer input side is at most MAX_SIDE * sqrt(area), a multiple of 32


def _aspect_kept(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """Aspect ratio kept, width * height ~ area, both sides multiples of `multiple` (at least one)."""
    scale = math.sqrt(area / (width * height))
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def side_cap(area: int, multiple: int = 32) -> int:
    """The longest side an input may have: MAX_SIDE * sqrt(area), down to a multiple of `multiple`."""
    return max(multiple, int(MAX_SIDE * math.sqrt(area)) // multiple * multiple)


def interactive_size(width: int, height: int, area: int, multiple: int = 32) -> tuple[int, int]:
    """InterActive's resize: aspect kept, area ~ `area`, sides multiples of 32 -> (W, H).

    A very elongated image would keep its short side at 32 and stretch the long one without
    bound (100000 x 10 px at area 160^2 -> 16000 x 32, 20x the target area), so the long side is
    capped at side_cap(area); such an image is squashed instead (see `capped`).
    """
    cap = side_cap(area, multiple)
    w, h = _aspect_kept(width, height, area, multiple)
    return min(w, cap), min(h, cap)


def capped(width: int, height: int, area: int, multiple: int = 32) -> bool:
    """Whether interactive_size had to cap this image's long side (its aspect is not kept)."""
    return max(_aspect_kept(width, height, area, multiple)) > side_cap(area, multiple)
