"""Decoding and encoding of image files: bytes in, ``uint8`` arrays of shape (H, W, 3) out.

Every image in the pipeline is handled as RGB ``uint8`` (grayscale sources are repeated over three
channels, alpha is dropped); the number of channels of the file is reported separately so that
manifests keep it. Errors name the file and the problem.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageDecodeError(ValueError):
    """A file that cannot be used as an image; the message names the file and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """An image as RGB ``uint8`` pixels plus what the file itself said."""

    pixels: np.ndarray  # (H, W, 3) uint8
    channels: int  # channels stored in the file (1 gray, 3 RGB, 4 RGBA ...)
    format: str  # PIL format name, e.g. "PNG", "JPEG"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any inspection camera here


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image ``data`` read from ``name`` (used in error messages only).

    The size the header declares is checked against ``max_pixels`` before any pixel is
    decoded (a 20000 x 20000 header of a few hundred bytes would otherwise ask for gigabytes).
    16-bit greyscale is scaled to 8 bits (v / 257, so 65535 -> 255) instead of being clipped;
    palette images are expanded before their channels are counted. ``channels`` is the number
    of channels of the decoded content (1 grey, 3 RGB, 4 RGBA).

    Raises:
        ImageDecodeError: empty data, not an image, too many pixels, an unsupported pixel type,
        truncated or otherwise undecodable content.
    """
    if len(data) == 0:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or "unknown"
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        name,
                        f"header declares {width}x{height} px, more than the limit of "
                        f"{max_pixels} pixels (not decoded)",
                    )
                img.load()  # forces full decoding: truncated files fail here, not later
                pixels, channels = _to_rgb(img, name)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"too many pixels to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, f"undecodable or truncated image ({exc})") from None
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageDecodeError(name, f"image has an unusable shape {pixels.shape}")
    return DecodedImage(pixels=np.ascontiguousarray(pixels), channels=channels, format=fmt)


def _to_rgb(img: Image.Image, name: str) -> tuple[np.ndarray, int]:
    """(H, W, 3) ``uint8`` pixels and the decoded channel count of an opened image."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(img, dtype=np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ImageDecodeError(name, f"unsupported {img.mode} pixels outside 0..65535")
        grey = np.round(values / 257.0).astype(np.uint8)  # 16 -> 8 bits, full range kept
        return np.repeat(grey[:, :, None], 3, axis=2), 1
    if img.mode == "F":
        raise ImageDecodeError(name, "unsupported floating-point pixels (mode F)")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    channels = len(img.getbands())
    return np.asarray(img.convert("RGB"), dtype=np.uint8), channels


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode an (H, W), (H, W, 1) or (H, W, 3) ``uint8`` array as lossless PNG bytes."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8 pixels, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def resize_image(pixels: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) ``uint8`` image to ``size`` pixels (square int, or (height, width)).

    Area-averaging (PIL ``BOX``) when shrinking keeps thin structures such as traces visible;
    bicubic when enlarging. Returns the input unchanged when it already has that size.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if pixels.shape[0] == height and pixels.shape[1] == width:
        return pixels
    shrinking = height < pixels.shape[0] or width < pixels.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(pixels).resize((width, height), resample), dtype=np.uint8)


BINARY_LEVEL = 127  # DeepPCB's binarised scans: a pixel above this grey level is copper


def binarize(pixels: np.ndarray, level: int = BINARY_LEVEL) -> np.ndarray:
    """An (H, W, 3) ``uint8`` image thresholded back to binary: 255 where the grey level (the
    mean of the channels) is above ``level``, else 0, on all three channels.

    For sources that are binary images stored lossily (DeepPCB's scans are binarised upstream,
    then saved as JPEG at different qualities for templates and tested images): re-binarising
    removes the compression noise, which would otherwise tell the classes apart by itself.
    """
    grey = np.asarray(pixels, dtype=np.uint16).sum(axis=2)
    binary = np.where(grey > 3 * level, 255, 0).astype(np.uint8)
    return np.repeat(binary[:, :, None], 3, axis=2)
