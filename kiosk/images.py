"""Reading image files safely: the one place face-kiosk decodes a photo or a frame from disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".jp2"}
"""File name endings treated as images everywhere (embedding, enrolment, datasets, folder cameras)."""


def image_files(root: str | Path) -> list[Path]:
    """Files under ``root`` that look like images, recursively, in sorted order."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


MAX_IMAGE_PIXELS = 64_000_000
"""Largest image read (a 48 MP phone photo fits): a bigger one, or a small file that
decompresses to gigabytes (a "decompression bomb"), is refused before decoding."""


def _refuse_enormous(path: Path, data: np.ndarray) -> None:
    """Raise :class:`ImageError` if the header declares more than ``MAX_IMAGE_PIXELS``.

    Pillow reads only the header here; formats it does not know are left to
    OpenCV, whose own limit (2^30 pixels) still applies.
    """
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        width, height = MAX_IMAGE_PIXELS + 1, 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{path} is too large to read safely ({width}x{height} pixels; the limit is "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels): scale it down first"
        )


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as 8-bit BGR, or raise :class:`ImageError` naming the file.

    Grayscale, 16-bit, alpha and CMYK JPEGs are converted; anything OpenCV
    cannot decode (corrupt, truncated, empty, not an image) is an error.
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"cannot read {path}: {error.strerror or error}") from error
    if data.size == 0:
        raise ImageError(f"{path} is empty (0 bytes)")
    _refuse_enormous(path, data)
    image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ImageError(f"{path} is not an image OpenCV can decode (corrupt, truncated or another format)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image
