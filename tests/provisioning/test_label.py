"""QR labels: the ISO/IEC 18004 quiet zone of 4 modules, a stated print size in millimetres,
and a payload a phone camera shows (plain text, or the site's https:// address), read back by a
QR decoder (OpenCV's)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from provisioning import label
from provisioning.errors import ProvisionInputError


def decode(png: Path) -> str:
    import cv2

    img = cv2.imread(str(png))
    assert img is not None, png
    text, _points, _ = cv2.QRCodeDetector().detectAndDecode(img)
    return str(text)


def quiet_zone_modules(png: Path, scale: int) -> int:
    """White modules between the image edge and the first dark pixel (top-left corner)."""
    import cv2

    gray = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, png
    dark = np.argwhere(gray < 128)
    top, left = dark.min(axis=0)
    assert top == left
    return int(top) // scale


def test_plain_text_label_with_its_quiet_zone_and_print_size(tmp_path: Path) -> None:
    lab = label.write_label(tmp_path, "riverside", "bin-17", "aabbccddeeff", "bin-fill", "1.0.0")
    assert lab.payload == "cityedge bin-fill bin-17\nsite riverside\nhw aabbccddeeff"
    assert decode(lab.png) == lab.payload  # what a phone shows
    assert quiet_zone_modules(lab.png, 8) == 4
    assert lab.qr_mm == (lab.modules + 8) * 0.5
    svg = lab.svg.read_text()
    m = re.search(r'<svg [^>]*width="([\d.]+)mm" height="([\d.]+)mm"', svg)
    assert m and (float(m[1]), float(m[2])) == (62.0, lab.height_mm)
    assert f"QR {lab.qr_mm:g} mm, 0.5 mm/module" in svg and "print at 100 %" in svg
    assert "cityedge:" not in svg


def test_a_site_url_template(tmp_path: Path) -> None:
    lab = label.write_label(
        tmp_path,
        "river side",
        "bin-17",
        "aabbccddeeff",
        "bin-fill",
        "1.0.0",
        "https://assets.example.org/{site}/{name}?hw={hwid}",
    )
    assert lab.payload == "https://assets.example.org/river%20side/bin-17?hw=aabbccddeeff"
    assert decode(lab.png) == lab.payload


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("cityedge:device?name={name}", "https://"),
        ("http://assets.example.org/{name}", "https://"),
        ("https://assets.example.org/{serial}", "unknown field {serial}"),
        ("https://assets.example.org/{name", "--label-url"),
    ],
)
def test_bad_url_templates_are_refused(template: str, words: str) -> None:
    with pytest.raises(ProvisionInputError) as info:
        label.check_url_template(template)
    assert words in info.value.message + (info.value.hint or "")
