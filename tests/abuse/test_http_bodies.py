"""Enrolment photos and HTTP bodies, wrong, hostile and huge: refused by size and pixel count
before anything is decoded (a 389 KB PNG of 20000 x 20000 made ``cv2.imdecode`` peak at 8.5 GB,
finding 6), and a body that breaks the rules is a 4xx, never a 500.

The face service here has no models (an empty manifest): every photo below is refused before
the face pipeline would load one.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given

from edge.clock import VirtualClock
from edge.face_access.app import FaceAccessApp
from edge.face_access.photos import (
    MAX_PHOTO_BYTES,
    MAX_PHOTO_PIXELS,
    BadPhoto,
    decode_photo,
    read_header,
)
from edge.face_access.service import EnrollmentError, FaceService
from edge.face_access.web import MAX_FIELD_BYTES, MAX_PARTS
from edge.vision.manifest import MANIFEST_JSON
from tests.abuse.fuzz import FUZZ, fuzz_input
from tests.edge import contexts
from tests.edge.face_access.harness import config

TOKEN = "an-admin-token-long-enough-for-any-rule-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A PNG of ``width`` x ``height`` black pixels, compressed row by row (never held whole);
    ``rows`` cuts the pixel data short (a header that promises more than follows)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)  # filter byte 0, then RGB
    idat = b"".join(z.compress(row) for _ in range(height if rows is None else rows))
    idat += z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def jpeg(width: int = 64, height: int = 48) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return bytes(buf)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims another size."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """5000 x 5000 (25 megapixels, 75 MB of pixels) in some 80 KB."""
    return png_bomb(5000, 5000)


# (name, photo, words in the refusal): none of these is decoded
REFUSED = [
    ("PNG 20000 x 20000 header", png_bomb(20000, 20000, rows=10), "20000 x 20000 pixels; at most 16 megapixels"),
    ("JPEG claiming 30000 x 30000", jpeg_claiming(30000, 30000), "30000 x 30000 pixels"),
    ("JPEG height from a DNL marker", jpeg_claiming(640, 0), "height only after the image data"),
    ("PNG 0 x 0", png_bomb(0, 0, rows=0), "header says 0 x 0"),
    ("too many bytes", jpeg() + b"\x00" * MAX_PHOTO_BYTES, f"at most {MAX_PHOTO_BYTES} are accepted"),
    ("GIF", b"GIF89a" + b"\x00" * 100, "not an image in JPEG or PNG format"),
    ("BMP", b"BM" + b"\x00" * 100, "not an image in JPEG or PNG format"),
    ("WebP", b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 100, "not an image in JPEG or PNG format"),
    ("TIFF", b"II*\x00" + b"\x00" * 100, "not an image in JPEG or PNG format"),
    ("empty", b"", "not an image"),
    ("PNG without IHDR", b"\x89PNG\r\n\x1a\n" + _chunk(b"IDAT", b"x"), "no IHDR"),
    ("JPEG scan before frame", b"\xff\xd8\xff\xda\x00\x02", "no frame header"),
    ("JPEG cut in the header", jpeg()[:10], "no frame header"),
    ("JPEG bad segment length", b"\xff\xd8\xff\xe0\x00\x01", "segment length 1"),
    ("JPEG no marker", b"\xff\xd8\x00\x00\x00\x00", "no marker at byte 2"),
]  # fmt: skip


@pytest.mark.parametrize(("photo", "words"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_photos_are_refused_before_decoding(photo: bytes, words: str) -> None:
    with pytest.raises(BadPhoto, match=words):
        decode_photo(photo)


@pytest.mark.parametrize(
    ("photo", "kind", "size"),
    [
        (jpeg(640, 480), "jpeg", (640, 480)),
        (png_bomb(320, 200), "png", (320, 200)),
        (b"\xff\xd8\xff\xff\xff" + jpeg()[2:], "jpeg", (64, 48)),  # fill bytes before a marker
    ],
    ids=["jpeg", "png", "jpeg fill bytes"],
)
def test_headers_of_good_photos_are_read(photo: bytes, kind: str, size: tuple[int, int]) -> None:
    header = read_header(photo)
    assert (header.kind, (header.width, header.height)) == (kind, size)
    assert decode_photo(photo).shape[:2] == (size[1], size[0])


def service(tmp_path: Path) -> FaceService:
    models = tmp_path / "models"
    models.mkdir()
    (models / MANIFEST_JSON).write_text(
        json.dumps({"schema_version": 1, "packages": {}, "models": []}), encoding="utf-8"
    )
    cfg = config(tmp_path, models_dir=str(models), admin_token=TOKEN)
    return FaceService(cfg, "s", "g", tmp_path)


def test_enrolment_refuses_a_decompression_bomb_by_its_header(tmp_path: Path, bomb: bytes) -> None:
    """Before: imdecode made 75 MB of pixels of it (8.5 GB at 20000 x 20000), then the
    pipeline ran on them."""
    svc = service(tmp_path)
    with pytest.raises(EnrollmentError, match="5000 x 5000 pixels") as caught:
        svc.enroll("p-1", "Bomb", bomb, 0.0)
    assert caught.value.code == "CE421" and "scale the photo down" in (caught.value.hint or "")
    assert svc.people() == []
    svc.close()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The real enrolment routes of a face_access app (not running: no frames, no models)."""
    ctx = contexts.app("gate", clock=VirtualClock(), base_dir=tmp_path).ctx
    svc = service(tmp_path)
    svc.close()
    app = FaceAccessApp(svc.config, ctx)
    web_app = web.Application()
    web_app.router.add_routes(app.routes)
    async with TestClient(TestServer(web_app)) as c:
        yield c
    app.service.close()
    app.executor.shutdown()


def form(image: bytes | None = None, **fields: str | io.BytesIO) -> FormData:
    f = FormData()
    for name, value in {"id": "p-1", "name": "X", **fields}.items():
        f.add_field(name, value)
    if image is not None:
        f.add_field("image", image, filename="p.jpg", content_type="image/jpeg")
    return f


async def test_http_bomb_is_a_400_naming_the_pixels(
    client: TestClient[web.Request, web.Application], bomb: bytes
) -> None:
    r = await client.post("/faces/gate/api/people", data=form(bomb), headers=AUTH)
    body = await r.json()
    assert r.status == 400 and "5000 x 5000 pixels" in body["error"] and body["code"] == "CE421"


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda: form(b"\xff" * (MAX_PHOTO_BYTES + 1)), 413, "larger than"),
        (lambda: form(jpeg(), name="n" * (MAX_FIELD_BYTES + 1)), 413, "larger than"),
        (lambda: form(jpeg(), name=io.BytesIO(b"caf\xe9")), 400, "not UTF-8"),
        (
            lambda: form(jpeg(), **{f"f{i}": "x" for i in range(MAX_PARTS)}),
            400,
            "more than 16 parts",
        ),
        (lambda: form(jpeg(), keep_image_days="9" * 1000), 400, "whole number"),
        (lambda: form(jpeg(), keep_image_days="-1"), 400, "whole number"),
        (lambda: form(jpeg(), keep_image_days="\u0663"), 400, "whole number"),  # an Arabic 3
    ],
    ids=[
        "image too large",
        "field too large",
        "field not UTF-8",
        "too many parts",
        "huge number",
        "negative",
        "non-ASCII digit",
    ],
)
async def test_bodies_beyond_the_limits_are_refused(
    client: TestClient[web.Request, web.Application], make: object, status: int, words: str
) -> None:
    r = await client.post("/faces/gate/api/people", data=make(), headers=AUTH)  # type: ignore[operator]
    assert r.status == status and words in (await r.json())["error"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),  # no boundary parameter
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\n" + b"H: v\r\n" * 10_000),
        ("multipart/mixed; boundary=x", b"--x\r\n\r\nabc\r\n--x--\r\n"),
    ],
    ids=["no boundary", "garbage", "cut part", "endless headers", "mixed"],
)
async def test_malformed_bodies_are_a_4xx_not_a_500(
    client: TestClient[web.Request, web.Application], content_type: str, body: bytes
) -> None:
    headers = {**AUTH, "Content-Type": content_type}
    r = await client.post("/faces/gate/api/people", data=body, headers=headers)
    assert 400 <= r.status < 500, await r.text()


@FUZZ
@given(
    fuzz_input([jpeg(), png_bomb(16, 16), jpeg_claiming(5000, 5000)], extra=[b"\xff\xc0", b"IHDR"])
)
def test_fuzz_any_photo_bytes_give_pixels_or_bad_photo(data: bytes) -> None:
    try:
        pixels = decode_photo(data)
    except BadPhoto:
        return
    assert pixels.ndim == 3 and pixels.shape[0] * pixels.shape[1] <= MAX_PHOTO_PIXELS
