"""Reading image files with OpenCV and normalising channels and size: the one place where that
happens, for every source."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm",
                  ".ppm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr", ".sr", ".ras"}
# Decoding limits that bound memory whatever the files (see `read_image`): about 400 MB for the
# largest image (RGBA, 16-bit at worst), plus 7 more threads each on an image of <= 4 M pixels.
MAX_PIXELS = 50_000_000  # e.g. 8660x5773; larger images are skipped (JPEGs decode reduced)
LARGE_PIXELS = 4_000_000  # images above this decode one at a time
MAX_FILE_BYTES = 1 << 30  # no image within MAX_PIXELS needs more bytes than this
MAX_UNKNOWN_BYTES = 64 << 20  # formats whose header Pillow cannot read (EXR, HDR, ...)
_LARGE_DECODE = threading.Lock()
# libjpeg's reduced decoding; EXIF orientation ignored, as IMREAD_UNCHANGED does for the rest
_REDUCED_COLOR = {f: flag | cv2.IMREAD_IGNORE_ORIENTATION for f, flag in (
    (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
    (8, cv2.IMREAD_REDUCED_COLOR_8))}

# Bad files are listed in the data report with their reason; OpenCV's own messages (its
# "[ERROR:...] imdecode_" lines too) would only repeat them without the path.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
# Pillow only reads headers here, and semigen checks the declared size itself (MAX_PIXELS).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def read_image(path: Path, keep_side: int) -> tuple[np.ndarray | None, str]:
    """Decode one file to uint8 HxWx{1,3} RGB/gray, or return (None, why it was skipped); on
    success the second item is the size found in the file, "HxW" (before any scaling).

    Memory stays bounded whatever the file: the header's size is read first (Pillow reads the
    header alone), and an image is decoded only if it has at most MAX_PIXELS (larger JPEGs are
    decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself), at most one image of over LARGE_PIXELS
    at a time. A file whose header Pillow cannot read is decoded only if it has an image suffix
    and at most MAX_UNKNOWN_BYTES. Images larger than `keep_side` are scaled down right after
    decoding (aspect kept); the final resize is `normalise`'s."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    if size == 0:
        return None, "empty file"
    flags, pixels, why = _decode_plan(path, size, keep_side)
    if why:
        return None, why
    found = ""
    with _LARGE_DECODE if pixels > LARGE_PIXELS else contextlib.nullcontext():
        try:
            image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
        except OSError as e:
            return None, f"unreadable ({e.strerror or e})"
        except cv2.error:  # e.g. beyond OpenCV's own pixel limit
            image = None
        if image is None or image.size == 0:
            return None, "unreadable (corrupt or truncated image)"
        h, w = image.shape[:2]
        reduced = next((f for f in (2, 4, 8) if flags == _REDUCED_COLOR[f]), 1)
        found = f"{h * reduced}x{w * reduced}"  # libjpeg's reduced decoding: about the file's
        if max(h, w) > keep_side:  # first, so that the conversions below work on a small copy
            scale = keep_side / max(h, w)
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)  # alpha is dropped
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = _to_uint8(image)
    if _is_gray_in_rgb(image):
        image = image[:, :, 0]
    return (image[:, :, None] if image.ndim == 2 else image), found


def _decode_plan(path: Path, size: int, keep_side: int) -> tuple[int, int, str]:
    """(OpenCV flags, pixels that decoding will hold, "") from the file's header alone, or a
    reason not to decode it at all."""
    too_large = (f"too large to decode (over {MAX_PIXELS / 1e6:.0f} M pixels, the most semigen "
                 "decodes)")
    try:
        with Image.open(path) as image:
            (w, h), jpeg = image.size, image.format == "JPEG"
    except Image.DecompressionBombError:  # beyond Pillow's own limit (179 M pixels)
        if not _is_jpeg(path):
            return 0, 0, too_large
        return _REDUCED_COLOR[8], MAX_PIXELS, ""  # libjpeg at 1/8; OpenCV's limit still holds
    except Exception:  # noqa: BLE001 - a format (or a file) Pillow cannot parse
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            return 0, 0, "not an image"
        if size > MAX_UNKNOWN_BYTES:
            return 0, 0, (f"unreadable (its header gives no size, and at {size / 2**20:.0f} MiB "
                          f"it is over the {MAX_UNKNOWN_BYTES >> 20} MiB read blind)")
        return cv2.IMREAD_UNCHANGED, MAX_PIXELS, ""
    if size > MAX_FILE_BYTES:
        return 0, 0, f"too large ({size / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES >> 20} MiB)"
    factor = 1
    while jpeg and factor < 8 and (max(w, h) // (2 * factor) >= keep_side
                                   or w * h // factor**2 > MAX_PIXELS):
        factor *= 2  # libjpeg decodes at 1/2, 1/4, 1/8 scale without the full image in memory
    if w * h // factor**2 > MAX_PIXELS:
        return 0, 0, too_large.replace("(over", f"({w}x{h} pixels; over")
    return (_REDUCED_COLOR[factor] if factor > 1 else cv2.IMREAD_UNCHANGED,
            w * h // factor**2, "")


def _is_jpeg(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def _is_gray_in_rgb(image: np.ndarray) -> bool:
    """A JPEG saved as RGB with three equal channels is a grayscale image."""
    return image.ndim == 3 and bool((image[:, :, 0] == image[:, :, 1]).all()
                                    and (image[:, :, 1] == image[:, :, 2]).all())


def target_shape(shapes: list[tuple[int, int, int]], image_size: int | None,
                 channels: str, max_side: int) -> tuple[int, int, int]:
    """(H, W, C) every image becomes: the forced size, else the most common size scaled so its
    longest side is at most `max_side`; gray or RGB as the majority is, unless forced."""
    if image_size is not None:
        h = w = image_size
    else:
        (h, w), _ = Counter((s[0], s[1]) for s in shapes).most_common(1)[0]
        if max(h, w) > max_side:
            scale = max_side / max(h, w)
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
    if channels == "auto":
        gray = sum(s[2] == 1 for s in shapes)
        c = 1 if gray * 2 > len(shapes) else 3
    else:
        c = 1 if channels == "gray" else 3
    return h, w, c


def normalise(image: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """One HxWxC uint8 image to the dataset's (H, W, C)."""
    h, w, c = shape
    if image.shape[:2] != (h, w):
        shrinking = image.shape[0] >= h and image.shape[1] >= w
        image = cv2.resize(image, (w, h),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[:, :, None]
    if image.shape[2] != c:
        code = cv2.COLOR_GRAY2RGB if c == 3 else cv2.COLOR_RGB2GRAY
        image = cv2.cvtColor(image, code)
        if image.ndim == 2:
            image = image[:, :, None]
    return np.ascontiguousarray(image)


def png_bytes(pixels) -> bytes:
    """An RGB or grey uint8 H x W (x C) array as the bytes of a PNG file."""
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"could not encode an image of shape {pixels.shape} as PNG")
    return encoded.tobytes()
