"""Photos from outside (enrolment over HTTP or the CLI), checked before OpenCV decodes them.

A compressed image says how large it is only in its header: a 389 KB PNG of 20000 x 20000
pixels made ``cv2.imdecode`` allocate gigabytes (8.5 GB at the peak of enrolment). So the
header is read first, with a small parser of our own, and the photo is refused by its byte size
(:data:`MAX_PHOTO_BYTES`) and its pixel count (:data:`MAX_PHOTO_PIXELS`) before any pixel is
decoded. Only JPEG and PNG are accepted (what cameras and phones write; every other format
OpenCV can read is code an attacker could reach):

- PNG (ISO/IEC 15948, 5.2-5.3, 11.2.2): the 8-byte signature, then the ``IHDR`` chunk first,
  width and height as 4-byte big-endian numbers;
- JPEG (ITU-T T.81, B.1.1, B.2.2): ``FFD8``, then marker segments until the first frame header
  (SOF0-SOF15 except DHT C4, JPG C8 and DAC CC) that gives height and width as 2-byte numbers;
  a height of 0 (given later by a DNL marker) is refused.

OpenCV could cap pixels itself (``OPENCV_IO_MAX_IMAGE_PIXELS``, read once at import, 2^30 by
default): an environment variable someone else sets is not a check this code can show.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from edge.errors import PermanentError

#: Largest photo accepted, in bytes (a 12-megapixel phone JPEG is 3-6 MB).
MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024
#: Largest photo accepted, in pixels: 16 megapixels, e.g. 4618 x 3464 (decoding and the face
#: pipeline need some 20 bytes a pixel at their peak: about 350 MB here).
MAX_PHOTO_PIXELS: Final = 16_000_000

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_HINT: Final = "use a JPEG or PNG photo of at most 16 megapixels (e.g. 4000 x 3000) and 10 MB"
# frame headers: C0-CF except C4 (DHT), C8 (JPG extension) and CC (DAC)
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length: TEM, RST0-RST7, SOI, EOI
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})


class BadPhoto(PermanentError):
    """A photo refused before or while decoding; ``hint`` says what to send instead."""

    code = "CE421"

    def __init__(self, message: str, hint: str = _HINT) -> None:
        super().__init__(message, hint=hint)


@dataclass(frozen=True, slots=True)
class PhotoHeader:
    kind: str  # "jpeg" | "png"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> PhotoHeader:
    """Format and size from the header alone; :class:`BadPhoto` for anything else."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadPhoto("the PNG file has no IHDR header where it must be (it is damaged)")
        width, height = struct.unpack(">II", data[16:24])
        return PhotoHeader("png", width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    raise BadPhoto("the file is not an image in JPEG or PNG format")


def _jpeg_header(data: bytes) -> PhotoHeader:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise BadPhoto(f"the JPEG file is damaged (no marker at byte {at})")
        marker = data[at + 1]
        if marker == 0xFF:  # fill bytes before a marker (B.1.1.2)
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if length < 2:
            raise BadPhoto(f"the JPEG file is damaged (segment length {length} at byte {at})")
        if marker in _SOF:
            if at + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            if height == 0:
                raise BadPhoto("the JPEG file gives its height only after the image data")
            return PhotoHeader("jpeg", width, height)
        if marker == 0xDA:  # start of scan before any frame header
            break
        at += 2 + length
    raise BadPhoto("the JPEG file has no frame header (it is damaged or cut short)")


def decode_photo(
    data: bytes, *, max_bytes: int = MAX_PHOTO_BYTES, max_pixels: int = MAX_PHOTO_PIXELS
) -> np.ndarray:
    """BGR pixels of a JPEG or PNG photo, refused by size and pixel count before decoding;
    raises :class:`BadPhoto` (and nothing else) for any bytes."""
    if len(data) > max_bytes:
        raise BadPhoto(f"the file is {len(data)} bytes; at most {max_bytes} are accepted")
    header = read_header(data)
    if header.width == 0 or header.height == 0:
        raise BadPhoto(f"the {header.kind.upper()} header says {header.width} x {header.height}")
    if header.pixels > max_pixels:
        raise BadPhoto(
            f"the photo is {header.width} x {header.height} pixels; at most "
            f"{max_pixels / 1e6:g} megapixels are accepted",
            hint="scale the photo down (a face of 100-300 pixels is plenty) and send it again",
        )
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # most damage gives None; some decoders raise
        pixels = None
    if pixels is None:
        raise BadPhoto(f"the {header.kind.upper()} file is damaged: OpenCV cannot read it")
    if pixels.shape[0] * pixels.shape[1] > max_pixels:  # a header that lied
        raise BadPhoto(f"the photo decodes to {pixels.shape[1]} x {pixels.shape[0]} pixels")
    return pixels
