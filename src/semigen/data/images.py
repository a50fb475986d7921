"""Reading image files with OpenCV and normalising channels and size: the one place where that
happens, for every source."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm",
                  ".ppm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr", ".sr", ".ras"}
MAX_AUTO_SIDE = 64  # semigen's networks are for small images; larger ones are scaled down

# Bad files are listed in the data report with their reason; OpenCV's own warnings would only
# repeat them without the path.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)



def read_image(path: Path, keep_side: int) -> tuple[np.ndarray | None, str]:
    """Decode one file to uint8 HxWx{1,3} RGB/gray, or return (None, why it was skipped).

    Images larger than `keep_side` are scaled down on read (aspect kept), so that memory stays
    bounded whatever the originals' size; the final resize happens in `normalise`."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    if raw.size == 0:
        return None, "empty file"
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return None, "unreadable (corrupt or truncated image)"
        return None, "not an image"
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)  # alpha is dropped
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = _to_uint8(image)
    if _is_gray_in_rgb(image):
        image = image[:, :, 0]
    h, w = image.shape[:2]
    if max(h, w) > keep_side:
        scale = keep_side / max(h, w)
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    return (image[:, :, None] if image.ndim == 2 else image), ""


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
                 channels: str) -> tuple[int, int, int]:
    """(H, W, C) every image becomes: the forced size, else the most common size scaled so its
    longest side is at most MAX_AUTO_SIDE; gray or RGB as the majority is, unless forced."""
    if image_size is not None:
        h = w = image_size
    else:
        (h, w), _ = Counter((s[0], s[1]) for s in shapes).most_common(1)[0]
        if max(h, w) > MAX_AUTO_SIDE:
            scale = MAX_AUTO_SIDE / max(h, w)
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
